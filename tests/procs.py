"""Process helpers for tests, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """State, ppid, ... of ``pid``, or None if it no longer exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children_of(parent: int | None = None, *, zombies: bool = False) -> set[int]:
    """Pids whose parent is ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields and int(fields[1]) == parent and (zombies or fields[0] != "Z"):
            found.add(int(entry))
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def gone(pid: int) -> bool:
    """True once ``pid`` is reaped (a zombie still has its /proc entry)."""
    return not Path(f"/proc/{pid}").exists()

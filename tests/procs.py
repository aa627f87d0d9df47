"""Process helpers for tests, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group (a nanny takes its worker along), then SIGKILL."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

"""Is the process that recorded a run still alive? (crashed-run detection)

A run is identified with its process by ``(host, pid, proc_start)``. ``proc_start`` is the
process's start time as the OS reports it, so a pid reused by a later, unrelated process is
told apart from the original. Only Linux exposes it cheaply (``/proc/<pid>/stat``); on other
POSIX systems only the pid is checked, and on Windows nothing is (the answer is "unknown").

Invariant: these functions never signal or alter a process (``os.kill(pid, 0)`` only probes,
and is not used on Windows, where it would terminate the process).
"""

from __future__ import annotations

import enum
import os
import socket
import sys
from pathlib import Path

__all__ = ["Liveness", "is_alive", "process_start_time", "this_host"]

_STARTTIME_FIELD = 19
"""Index of ``starttime`` (field 22 of proc(5)) among the fields after ``comm``'s ``)``."""


class Liveness(enum.StrEnum):
    """What :func:`is_alive` can tell about a recorded process."""

    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def this_host() -> str:
    """This machine's name, as runs record it."""
    return socket.gethostname()


def _linux_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or ``None`` if no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields if len(fields) > _STARTTIME_FIELD else None


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    fields = _linux_stat(pid)
    return None if fields is None else int(fields[_STARTTIME_FIELD])


def is_alive(pid: int, proc_start: int | None) -> Liveness:
    """Whether the process ``pid`` that started at ``proc_start`` still runs on this host.

    A zombie counts as dead; a live pid whose start time differs from ``proc_start`` is a
    reused pid, so the recorded process is dead.

    Returns:
        ``ALIVE``, ``DEAD``, or ``UNKNOWN`` where the platform cannot tell.
    """
    if pid <= 0:
        return Liveness.UNKNOWN
    if sys.platform.startswith("linux"):
        return _linux_alive(pid, proc_start)
    if sys.platform == "win32":
        return Liveness.UNKNOWN
    return _posix_alive(pid)


def _linux_alive(pid: int, proc_start: int | None) -> Liveness:
    fields = _linux_stat(pid)
    if fields is None or fields[0] == "Z":
        return Liveness.DEAD
    if proc_start is not None and int(fields[_STARTTIME_FIELD]) != proc_start:
        return Liveness.DEAD
    return Liveness.ALIVE


def _posix_alive(pid: int) -> Liveness:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return Liveness.DEAD
    except PermissionError:
        return Liveness.ALIVE  # it exists, owned by someone else
    except OSError:
        return Liveness.UNKNOWN
    return Liveness.ALIVE

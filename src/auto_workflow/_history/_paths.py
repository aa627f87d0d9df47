"""Where the run history lives, and creating its directory and file privately.

Invariants: nothing here runs at import; a directory this module creates is ``0700`` and a
file it creates is ``0600`` (both owner-only, since parameters and tracebacks may be
sensitive). Existing directories and files keep the permissions they have.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "HISTORY_FILE_NAME",
    "checkpoint_dir",
    "create_private_file",
    "default_history_path",
    "ensure_private_dir",
]

HISTORY_FILE_NAME = "history.sqlite"
_APP_DIR = "auto_workflow"


def default_history_path() -> Path:
    """The per-user history file for this platform.

    Linux and other Unix: ``$XDG_DATA_HOME/auto_workflow/history.sqlite`` (when the
    variable holds an absolute path), else ``~/.local/share/auto_workflow/history.sqlite``.
    macOS: ``~/Library/Application Support/auto_workflow/history.sqlite``. Windows:
    ``%LOCALAPPDATA%\\auto_workflow\\history.sqlite``.

    Returns:
        The path; nothing is created or opened.
    """
    return _history_path_for(sys.platform, os.environ, Path.home())


def _history_path_for(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    """:func:`default_history_path` for a given platform, environment and home directory."""
    return _data_dir(platform, environ, home) / _APP_DIR / HISTORY_FILE_NAME


def _data_dir(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    if platform == "win32":
        local = environ.get("LOCALAPPDATA", "")
        return Path(local) if local else home / "AppData" / "Local"
    if platform == "darwin":
        return home / "Library" / "Application Support"
    xdg = environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    return Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"


def checkpoint_dir(history_path: Path) -> Path:
    """The directory for checkpointed task results: ``checkpoints/`` beside the history file.

    Returns:
        The path; nothing is created (use :func:`ensure_private_dir` when writing).
    """
    return history_path.parent / "checkpoints"


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) if missing; the directories created are 0700.

    Raises:
        OSError: The directory cannot be created (or ``path`` is a file).
    """
    if path.is_dir():
        return
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by another process: keep its permissions
        # mkdir's mode passes through the umask, which could strip the owner's own bits.
        os.chmod(directory, 0o700)


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists; if this call creates it (or its directory), owner-only.

    Raises:
        OSError: The file cannot be created (read-only directory, ``path`` is a directory).
    """
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)

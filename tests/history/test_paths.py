"""Where the history lives, and that its directory and file are private."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auto_workflow._history._paths import (
    _history_path_for,
    checkpoint_dir,
    create_private_file,
    ensure_private_dir,
)

HOME = Path("/home/ada")


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {}, HOME / ".local/share/auto_workflow/history.sqlite"),
        ("linux", {"XDG_DATA_HOME": "/data"}, Path("/data/auto_workflow/history.sqlite")),
        ("linux", {"XDG_DATA_HOME": "rel"}, HOME / ".local/share/auto_workflow/history.sqlite"),
        ("darwin", {}, HOME / "Library/Application Support/auto_workflow/history.sqlite"),
        ("win32", {"LOCALAPPDATA": "/appdata"}, Path("/appdata/auto_workflow/history.sqlite")),
        ("win32", {}, HOME / "AppData/Local/auto_workflow/history.sqlite"),
    ],
)
def test_default_history_path_follows_the_platform_convention(
    platform: str, environ: dict[str, str], expected: Path
) -> None:
    assert _history_path_for(platform, environ, HOME) == expected


def test_checkpoints_live_beside_the_history_file(tmp_path: Path) -> None:
    assert checkpoint_dir(tmp_path / "h.sqlite") == tmp_path / "checkpoints"


def test_created_directories_are_0700_and_the_file_0600(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.sqlite"
    old = os.umask(0)  # even a permissive umask must not widen them
    try:
        create_private_file(path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert os.stat(path.parent.parent).st_mode & 0o777 == 0o700


def test_an_existing_directory_keeps_its_permissions(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    ensure_private_dir(shared)
    assert os.stat(shared).st_mode & 0o777 == 0o755


def test_importing_the_history_touches_no_file(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    code = (
        "import auto_workflow._history._store, auto_workflow._history._writer, threading;"
        "from auto_workflow._history._paths import default_history_path;"
        "print(default_history_path()); assert threading.active_count() == 1"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / "xdg" / "auto_workflow" / "history.sqlite")
    assert list(tmp_path.iterdir()) == []

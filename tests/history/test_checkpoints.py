"""The checkpoint log of a durable run: records survive, torn or damaged ones are misses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from auto_workflow._history._checkpoints import RunCheckpoints


def _log(tmp_path: Path) -> RunCheckpoints:
    return RunCheckpoints(tmp_path / "checkpoints", "run-1")


def test_saved_values_load_back_in_a_new_reader(tmp_path: Path) -> None:
    cps = _log(tmp_path)
    assert cps.save("a:0", {"rows": [1, 2, 3]})
    assert cps.save("b:1", b"\x00raw bytes")
    assert cps.save("a:0", "saved again: the last record wins")
    cps.close()
    again = _log(tmp_path)
    assert again.load("a:0") == ("saved again: the last record wins",)
    assert again.load("b:1") == (b"\x00raw bytes",)
    assert again.load("missing:9") is None


def test_the_log_is_private(tmp_path: Path) -> None:
    cps = _log(tmp_path)
    cps.save("a:0", 1)
    assert stat.S_IMODE(os.stat(cps.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cps.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cps.directory.parent).st_mode) == 0o700


def test_a_torn_last_record_is_ignored_and_earlier_ones_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cps = _log(tmp_path)
    cps.save("a:0", "kept")
    cps.save("b:1", "x" * 1000)
    cps.close()
    size = cps.path.stat().st_size
    with open(cps.path, "r+b") as log:
        log.truncate(size - 10)  # as if the process died in the middle of the append
    again = _log(tmp_path)
    assert again.load("a:0") == ("kept",)
    assert again.load("b:1") is None
    assert "torn or corrupt record" in caplog.text


def test_a_damaged_record_fails_its_checksum(tmp_path: Path) -> None:
    cps = _log(tmp_path)
    cps.save("a:0", "value that will be damaged")
    cps.close()
    data = bytearray(cps.path.read_bytes())
    data[-3] ^= 0xFF
    cps.path.write_bytes(bytes(data))
    assert _log(tmp_path).load("a:0") is None


def test_an_unpicklable_result_is_not_checkpointed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    cps = _log(tmp_path)
    assert not cps.save("lock:0", threading.Lock())
    assert "cannot be checkpointed" in caplog.text
    assert cps.load("lock:0") is None

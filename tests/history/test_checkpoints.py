"""The checkpoint log of a durable run: records survive, torn or damaged ones are misses."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

import pytest

from auto_workflow._history._checkpoints import SAMPLED_FROM, RunCheckpoints


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


def test_a_large_record_with_any_block_zeroed_or_stale_is_a_miss(tmp_path: Path) -> None:
    # What a power loss can leave in an unsynced append: whole filesystem blocks of zeros
    # or of older data. Every 4 KiB block of the file that the value touches is covered.
    blob = os.urandom(256 * 1024 + 123)
    cps = _log(tmp_path)
    cps.save("big:0", blob)
    cps.close()
    clean = cps.path.read_bytes()
    start = len(clean) - len(blob)
    for block in range(start // 4096, len(clean) // 4096 + 1):
        begin, end = block * 4096, min(len(clean), block * 4096 + 4096)
        for filler in (bytes(end - begin), os.urandom(end - begin)):
            damaged = bytearray(clean)
            damaged[begin:end] = filler
            cps.path.write_bytes(bytes(damaged))
            assert _log(tmp_path).load("big:0") is None, f"block {block} not covered"


def test_a_large_record_cut_short_is_a_miss(tmp_path: Path) -> None:
    cps = _log(tmp_path)
    cps.save("a:0", "kept")
    cps.save("big:1", os.urandom(SAMPLED_FROM * 4))
    cps.close()
    with open(cps.path, "r+b") as log:
        log.truncate(cps.path.stat().st_size - 4096)
    again = _log(tmp_path)
    assert again.load("a:0") == ("kept",)
    assert again.load("big:1") is None


def test_large_and_small_values_round_trip_at_the_sampling_edge(tmp_path: Path) -> None:
    values = {f"v:{n}": os.urandom(n) for n in (0, 7, SAMPLED_FROM - 1, SAMPLED_FROM, 100_003)}
    cps = _log(tmp_path)
    for key, value in values.items():
        cps.save(key, value)
    cps.close()
    again = _log(tmp_path)
    for key, value in values.items():
        assert again.load(key) == (value,)


def test_a_log_written_with_adler32_is_still_read(tmp_path: Path) -> None:
    # The first release wrote b"AWCK" records with Adler-32 over key and value.
    key, value = b"old:0", b"an older run's result"
    check = zlib.adler32(value, zlib.adler32(key))
    record = struct.pack("<4sBIQI", b"AWCK", 1, len(key), len(value), check) + key + value
    directory = tmp_path / "checkpoints" / "run-1"
    directory.mkdir(parents=True)
    (directory / "checkpoints.log").write_bytes(record)
    assert _log(tmp_path).load("old:0") == (value,)


def test_an_unpicklable_result_is_not_checkpointed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    cps = _log(tmp_path)
    assert not cps.save("lock:0", threading.Lock())
    assert "cannot be checkpointed" in caplog.text
    assert cps.load("lock:0") is None

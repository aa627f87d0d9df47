"""A durable run's checkpoints: an append-only log of finished tasks' results, per run.

Each run has ``<checkpoint dir>/<run id>/checkpoints.log`` (directory 0700, file 0600).
A record is appended with one ``writev`` call::

    b"AWC2" | codec (u8) | key length (u32) | value length (u64) | CRC-32 (u32) | key | value

where the value is the result pickled with cloudpickle (codec 0), or a ``bytes`` result as
it is (codec 1: no copy, no pickling). Reading scans the log once and keeps an index of the
last record per key; values are read and unpickled when asked for. (Logs written before
CRC-32, magic ``b"AWCK"`` with Adler-32 over key and value, are still read.)

Integrity: a record is used only if it is complete and its checksum holds. A process
killed mid-append leaves a torn last record, which is ignored (that task runs again on
resume); earlier records are never touched. Records are not fsynced one by one: they
survive the process being killed (they are in the page cache); after a power loss the
newest ones may be missing or hold zeroed or stale blocks, and those tasks run again.

What the checksum covers: the key and the value's length always. A value under
:data:`SAMPLED_FROM` (64 KiB) is covered whole. A larger one is covered by 8 bytes at every
2 KiB of it and its last 8 bytes, so every 4 KiB block of the file holds a covered window:
what a crash can do to an append (cut it short, or leave whole blocks zeroed or stale, since
a filesystem writes whole blocks) is caught, for a few microseconds per MB. Checksumming a
1 MB value whole costs 0.5-1.2 ms here, more than writing it (the page cache takes it in
about 0.5 ms), which would make a durable run's large results cost twice what writing them
does. What sampling does not catch is a bit flipped inside a block by the disk, which the
disk's and the filesystem's own checks are there for. CRC-32 rather than a cryptographic
hash: this guards against torn records, not tampering (the directory is the user's own,
0700).

Why a log and not one atomic file per checkpoint: creating and renaming a file costs
hundreds of microseconds on an ordinary ext4 disk under load (measured 350-700 us here),
an append a few; and a 1 MB result costs about what writing its bytes costs.

Besides one record per node key, a run keeps ``__call__`` (its arguments, parameters and
options, so ``resume`` can rebuild it) and ``__shape__`` (its graph's shape lines, so a
changed graph can be reported precisely). One process appends to a run's log at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._core._journal import RunSpec
from auto_workflow._history._paths import ensure_private_dir

__all__ = ["CALL_KEY", "LOG_NAME", "SAMPLED_FROM", "SHAPE_KEY", "RunCheckpoints"]

logger = logging.getLogger("auto_workflow.history")

CALL_KEY = "__call__"
SHAPE_KEY = "__shape__"
LOG_NAME = "checkpoints.log"
_MAGIC = b"AWC2"
_MAGIC_ADLER = b"AWCK"  # logs written before CRC-32; still read
SAMPLED_FROM = 64 * 1024
_STRIDE = 2048 // 8  # in 8-byte words: two covered windows in every 4 KiB block
_HEADER = struct.Struct("<4sBIQI")
_PICKLED, _RAW = 0, 1
_OPEN_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


class RunCheckpoints:
    """The checkpoints of one durable run (implements the core's ``Checkpoints``)."""

    __slots__ = ("_failed", "_fd", "_index", "_lock", "directory", "path", "run_id")

    def __init__(self, root: Path, run_id: str) -> None:
        self.run_id = run_id
        self.directory = Path(root) / run_id
        self.path = self.directory / LOG_NAME
        self._fd: int | None = None
        self._index: dict[str, tuple[int, int, int]] | None = None
        self._failed = False
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def load(self, key: str) -> tuple[Any] | None:
        """The checkpointed ``(value,)`` of ``key``, or ``None`` (missing or unreadable)."""
        index = self._index if self._index is not None else self._scan()
        where = index.get(key)
        if where is None:
            return None
        offset, length, codec = where
        try:
            with open(self.path, "rb") as log:
                log.seek(offset)
                data = log.read(length)
            return (data,) if codec == _RAW else (cloudpickle.loads(data),)
        except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary code: a miss
            logger.warning("checkpoint %s of run %s cannot be loaded (%s)", key, self.run_id, exc)
            return None

    def _scan(self) -> dict[str, tuple[int, int, int]]:
        """Index the log: key -> (offset, length, codec) of its last intact record."""
        index: dict[str, tuple[int, int, int]] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            logger.warning("checkpoints of run %s unreadable (%s)", self.run_id, exc)
            data = b""
        offset = 0
        while offset < len(data):
            record = _record_at(data, offset)
            if record is None:
                logger.warning(
                    "checkpoints of run %s: a torn or corrupt record at byte %d of %s is "
                    "ignored (the tasks after it run again)",
                    self.run_id,
                    offset,
                    self.path,
                )
                break
            key, start, length, codec = record
            index[key] = (start, length, codec)
            offset = start + length
        self._index = index
        return index

    # -- writing ---------------------------------------------------------------------------

    def save(self, key: str, value: Any) -> bool:
        """Checkpoint ``value`` under ``key``; False (with one warning) if it cannot be."""
        codec = _RAW if value.__class__ is bytes else _PICKLED
        try:
            payload = value if codec == _RAW else cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001 - any value may refuse to pickle
            logger.warning(
                "run %s: the result of %s cannot be checkpointed (%s: %s); it will run again "
                "if the run is resumed",
                self.run_id,
                key,
                type(exc).__name__,
                exc,
            )
            return False
        try:
            self._append(key.encode("utf-8", "surrogatepass"), payload, codec)
        except OSError as exc:
            self._trouble(exc)
            return False
        return True

    def _append(self, key: bytes, payload: bytes, codec: int) -> None:
        check = _checksum(key, payload)
        header = _HEADER.pack(_MAGIC, codec, len(key), len(payload), check)
        with self._lock:
            fd = self._fd if self._fd is not None else self._open()
            parts = [header, key, payload]
            total = sum(len(p) for p in parts)
            written = os.writev(fd, parts)
            if written != total:  # a short write: finish it (rare; only for huge records)
                rest = b"".join(parts)[written:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        if self._index is not None:
            self._index.pop(key.decode("utf-8", "surrogatepass"), None)

    def _open(self) -> int:
        ensure_private_dir(self.directory.parent)
        ensure_private_dir(self.directory)
        self._fd = os.open(self.path, _OPEN_APPEND, 0o600)
        return self._fd

    def _trouble(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            logger.warning(
                "run %s: checkpoints cannot be written to %s (%s); the run goes on, but a "
                "resume will run its tasks again",
                self.run_id,
                self.path,
                exc,
            )

    def close(self) -> None:
        """Close the log (later saves reopen it)."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- what resume needs -----------------------------------------------------------------

    def save_call(self, spec: RunSpec, shape: list[str]) -> None:
        """Keep what ``resume`` needs to rebuild the run."""
        self.save(CALL_KEY, spec)
        self.save(SHAPE_KEY, shape)

    def call(self) -> RunSpec | None:
        """The recorded call of the run, if it can be read."""
        hit = self.load(CALL_KEY)
        return hit[0] if hit is not None and isinstance(hit[0], RunSpec) else None

    def shape(self) -> list[str] | None:
        """The recorded graph shape lines, if they can be read."""
        hit = self.load(SHAPE_KEY)
        return hit[0] if hit is not None and isinstance(hit[0], list) else None


def _record_at(data: bytes, offset: int) -> tuple[str, int, int, int] | None:
    """``(key, value offset, value length, codec)`` of the intact record at ``offset``."""
    end_of_header = offset + _HEADER.size
    if end_of_header > len(data):
        return None
    magic, codec, key_len, value_len, check = _HEADER.unpack_from(data, offset)
    value_start = end_of_header + key_len
    if magic not in (_MAGIC, _MAGIC_ADLER) or codec not in (_PICKLED, _RAW):
        return None
    if value_start + value_len > len(data):
        return None
    view = memoryview(data)
    key = bytes(view[end_of_header:value_start])
    value = view[value_start : value_start + value_len]
    if magic == _MAGIC_ADLER:
        intact = zlib.adler32(value, zlib.adler32(key)) == check
    else:
        intact = _checksum(key, value) == check
    if not intact:
        return None
    return key.decode("utf-8", "surrogatepass"), value_start, value_len, codec


def _checksum(key: bytes, value: bytes | memoryview) -> int:
    """CRC-32 of the key, the value's length and the value (sampled when it is large)."""
    size = len(value)
    seed = zlib.crc32(size.to_bytes(8, "little"), zlib.crc32(key))
    if size < SAMPLED_FROM:
        return zlib.crc32(value, seed)
    view = memoryview(value)
    words = view[: size - size % 8].cast("Q")
    sample = words[::_STRIDE].tobytes() + view[size - 8 :].tobytes()
    return zlib.crc32(sample, seed)

"""Filesystem result cache and artifact store: one directory, any number of processes.

Layout::

    <cache dir>/<h[:2]>/<h>        h = sha256 of the key (hex); the key itself is stored inside
    <artifact dir>/<key>           key = ArtifactRef.key, re-checked by check_artifact_key
    <artifact dir>/<key>.json      a json artifact: plain UTF-8 JSON, readable by jq & co
    <artifact dir>/<key>.json.sha256   its checksum, in ``sha256sum`` format
    .<name>.<pid>.<random>.tmp     a write in progress, or one abandoned by a killed writer

Every entry file but a json artifact is ``header | key | payload``. The 68-byte
little-endian header holds the magic ``b"AWFS"``, the format version, the entry kind (cache
or artifact), the codec (pickle or json), the stored-at and expires-at times (``inf``:
never), the key and payload lengths, and the sha256 of everything else in the file (header
fields, key and payload). Older json artifacts in this framing are still read.

Invariants:

- A json artifact is two files: the checksum is written first, then the JSON, each
  atomically, so a ``<key>.json`` that exists has its checksum beside it; the reader checks
  it (``sha256sum -c <key>.json.sha256`` does the same by hand).
- A name not starting with ``.`` only ever holds a complete entry. A writer writes a temp
  file in the same directory, flushes and fsyncs it, then ``os.replace``-s it onto the
  name, so a writer killed at any point leaves at most a temp file. Readers never open temp
  files; ``prune`` removes those older than 10 minutes.
- A reader trusts nothing it reads: magic, version, kind, codec, sizes, checksum and key are
  all checked before the payload is decoded. A bad cache entry is a miss with a
  :class:`CorruptEntryWarning` and is removed, but only if its name still holds the very file
  that was read (same device and inode, compared while that file is still open, so the
  inode number cannot have been reused by a newer entry). A bad artifact raises
  :class:`ArtifactNotFoundError` (after the warning) and is kept for inspection.
- No key reaches a path outside the directory: cache file names are hashes; artifact keys are
  re-checked here (an ``ArtifactRef`` can be unpickled without validation) and the final
  path must sit directly in the directory.
- Concurrent writers only race on ``os.replace``: the last one wins and every reader sees
  one complete entry. The only state shared in a process is the prune schedule, under a
  lock. Instances pickle as their configuration only and touch the disk first when used.

Pickle is unsafe on untrusted data: loading a pickle can run arbitrary code. Point the cache
and pickle artifact stores only at directories that no untrusted party can write, or use the
``json`` artifact serializer, which never unpickles (not even files a pickle store wrote).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import re
import secrets
import shutil
import stat
import struct
import threading
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cloudpickle  # type: ignore[import-untyped]  # ships no type information

from auto_workflow._core._model import ArtifactRef, check_artifact_key
from auto_workflow.exceptions import (
    ArtifactNotFoundError,
    CorruptEntryWarning,
    InvalidKeyError,
    SerializationError,
)

__all__ = ["FilesystemArtifactStore", "FilesystemResultCache"]

logger = logging.getLogger(__name__)

_MAGIC = b"AWFS"
_VERSION = 1
_KIND_CACHE = 1
_KIND_ARTIFACT = 2
_CODECS = {"pickle": 1, "json": 2}
# magic, version, kind, codec, stored_at, expires_at, key length, payload length
_PREFIX = struct.Struct("<4sHBBddIQ")
_HEADER_SIZE = _PREFIX.size + hashlib.sha256().digest_size
_TEMP_MAX_AGE = 600.0
_ARTIFACT_PRUNE_INTERVAL = 300.0
_ENTRY_NAME = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(r"[0-9a-f]{2}")
_OPEN_SAFE = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_READ = os.O_RDONLY | _OPEN_SAFE
_OPEN_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_SAFE
_JSON_SUFFIX = ".json"
_SUM_SUFFIX = ".sha256"
_LOCAL_SCHEMES = frozenset({"file", "local"})
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_JSON_ACCEPTS = (
    "the json artifact serializer accepts dict (str keys), list, str, int, float, bool, "
    "None — use serializer='pickle' for other types"
)


class _CorruptError(Exception):
    """An entry file failed validation; the message says how."""


class _UnloadableError(Exception):
    """An intact entry (its checksum holds) whose value cannot be unpickled in this process,
    e.g. because the module defining its type is not importable here."""


class _Header(NamedTuple):
    prefix: bytes
    kind: int
    codec: int
    stored_at: float
    expires_at: float
    key_len: int
    payload_len: int
    digest: bytes


class _Entry(NamedTuple):
    header: _Header
    key: bytes
    payload: bytes


class _Schedule:
    """Says yes at most once per ``interval`` seconds, first on the first ask. Thread-safe."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: float | None = None
        self._lock = threading.Lock()

    def due(self, now: float) -> bool:
        with self._lock:
            if self._next is not None and now < self._next:
                return False
            self._next = now + self._interval
            return True


# -- entry format ------------------------------------------------------------------------


def _digest(prefix: bytes, key: bytes, payload: bytes) -> bytes:
    hasher = hashlib.sha256(prefix)
    hasher.update(key)
    hasher.update(payload)
    return hasher.digest()


def _entry_parts(
    kind: int, codec: int, stored_at: float, expires_at: float, key: bytes, payload: bytes
) -> list[bytes]:
    """The byte strings that, written in order, make one entry file."""
    prefix = _PREFIX.pack(
        _MAGIC, _VERSION, kind, codec, stored_at, expires_at, len(key), len(payload)
    )
    return [prefix, _digest(prefix, key, payload), key, payload]


def _parse_header(raw: bytes, kind: int) -> _Header:
    if len(raw) < _HEADER_SIZE:
        raise _CorruptError(f"truncated: {len(raw)} bytes, shorter than the header")
    fields = _PREFIX.unpack_from(raw)
    magic, version = fields[0], fields[1]
    if magic != _MAGIC:
        raise _CorruptError("bad magic bytes: not an auto_workflow entry")
    if version != _VERSION:
        raise _CorruptError(f"unsupported format version {version}")
    digest = raw[_PREFIX.size : _HEADER_SIZE]
    header = _Header._make((raw[: _PREFIX.size], *fields[2:], digest))
    if header.kind != kind or header.codec not in _CODECS.values():
        raise _CorruptError(f"unexpected entry kind {header.kind} or codec {header.codec}")
    return header


def _read_entry(fd: int, opened: os.stat_result, kind: int) -> _Entry:
    """Read and validate the whole entry file open at ``fd``."""
    if not stat.S_ISREG(opened.st_mode):
        raise _CorruptError("not a regular file")
    with open(fd, "rb", closefd=False) as file:
        header = _parse_header(file.read(_HEADER_SIZE), kind)
        expected = _HEADER_SIZE + header.key_len + header.payload_len
        if opened.st_size != expected:
            raise _CorruptError(f"size is {opened.st_size} bytes, the header says {expected}")
        key = file.read(header.key_len)
        payload = file.read(header.payload_len)
    if len(key) != header.key_len or len(payload) != header.payload_len:
        raise _CorruptError("truncated while being read")
    if _digest(header.prefix, key, payload) != header.digest:
        raise _CorruptError("checksum mismatch")
    return _Entry(header, key, payload)


def entry_from_bytes(raw: bytes, kind: int) -> _Entry:
    """Validate the whole entry ``raw`` (one object's bytes) as :func:`_read_entry` does."""
    header = _parse_header(raw, kind)
    expected = _HEADER_SIZE + header.key_len + header.payload_len
    if len(raw) != expected:
        raise _CorruptError(f"size is {len(raw)} bytes, the header says {expected}")
    view = memoryview(raw)
    key = bytes(view[_HEADER_SIZE : _HEADER_SIZE + header.key_len])
    payload = bytes(view[_HEADER_SIZE + header.key_len :])
    if _digest(header.prefix, key, payload) != header.digest:
        raise _CorruptError("checksum mismatch")
    return _Entry(header, key, payload)


def _unpickle(payload: bytes) -> Any:
    try:
        return cloudpickle.loads(payload)
    except Exception as exc:  # unpickling runs arbitrary code, so anything can fail
        detail = f"{type(exc).__name__}: {exc}"
        raise _UnloadableError(f"its value cannot be unpickled here ({detail})") from exc


def _pickle(value: Any, where: str) -> bytes:
    try:
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickling runs user code (__reduce__), so anything can fail
        raise SerializationError(
            f"cannot store a value of type {_type_name(value)} in the {where}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return data


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _warn_corrupt(message: str, stacklevel: int = 3) -> None:
    # stacklevel 3 points at the caller of the public method that calls this directly.
    warnings.warn(message, CorruptEntryWarning, stacklevel=stacklevel)


# -- files -------------------------------------------------------------------------------


def is_fsspec_url(path: object) -> bool:
    """True if ``path`` is a URL for an fsspec filesystem other than the local one
    (``abfs://container/prefix``, ``memory://x``, ``simplecache::s3://bucket``).

    A plain path, ``file://`` and ``local://`` URLs are local: the classes here serve them.
    """
    if not isinstance(path, str):
        return False
    if "::" in path:  # fsspec's chained URLs
        return True
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() not in _LOCAL_SCHEMES


def _local_path(raw: str, what: str) -> str:
    """The local path a ``file://`` URL names (RFC 8089: empty host or ``localhost``, the
    path percent-decoded); any other str as it is."""
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in _LOCAL_SCHEMES:
        return raw
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost"):
        raise ValueError(
            f"{what} {raw!r} names the host {host!r}; a local file URL is "
            f"'{scheme}:///absolute/path' (or give a plain path)"
        )
    return urllib.request.url2pathname(slash + path) or "/"


def _absolute(path: str | os.PathLike[str], remote: str) -> Path:
    """``path`` (or the path of a ``file://`` URL) made absolute; it must not be an existing
    file (it is to be a directory). ``remote`` names the class that serves fsspec URLs."""
    raw = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(raw, str) or not raw:
        raise TypeError(f"path must be a non-empty str or os.PathLike[str]; got {path!r}")
    if is_fsspec_url(raw):
        raise ValueError(
            f"path {raw!r} is an fsspec URL, and this store keeps a local directory: use "
            f"{remote}({raw!r}, storage_options=...) (the configuration's *_path keys take "
            "either)"
        )
    absolute = Path(os.path.abspath(_local_path(raw, "path")))
    if absolute.exists() and not absolute.is_dir():
        raise ValueError(f"path {str(absolute)!r} is a file; the store needs a directory there")
    return absolute


@contextlib.contextmanager
def _opened(path: str) -> Iterator[tuple[int, os.stat_result]]:
    """``path`` opened for reading (never through a symlink) and its fstat."""
    fd = os.open(path, _OPEN_READ)
    try:
        yield fd, os.fstat(fd)
    finally:
        os.close(fd)


def _remove(path: str, current: os.stat_result) -> None:
    if stat.S_ISDIR(current.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _discard(path: str) -> None:
    """Remove ``path`` (a file, or a directory squatting on an entry's name) if it exists."""
    with contextlib.suppress(FileNotFoundError):
        _remove(path, os.lstat(path))


def _remove_if_same(path: str, opened: os.stat_result) -> bool:
    """Remove ``path`` if it still is the file ``opened`` (call while that file is open)."""
    try:
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return False
        _remove(path, current)
    except OSError as exc:
        logger.debug("could not remove %s: %s", path, exc)
        return False
    return True


def _write_atomic(path: str, parts: list[bytes], *, sync: bool = True, mode: int = 0o666) -> None:
    """Make ``path`` hold ``parts`` joined, all or nothing, even if the process is killed.

    ``sync=False`` skips the fsyncs: the entry is still never torn (write then rename, and
    the checksum), and survives the process being killed, but a power loss may lose it.
    """
    directory, name = os.path.split(path)
    os.makedirs(directory, mode=0o777 if mode == 0o666 else 0o700, exist_ok=True)
    temp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, _OPEN_TEMP, mode)
    try:
        with open(fd, "wb") as file:
            file.writelines(parts)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        _replace(temp, path)
    except BaseException:
        # An error or an interrupt: the entry keeps its old content, the temp file goes.
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync:
        _fsync_directory(directory)


def _replace(temp: str, path: str) -> None:
    try:
        os.replace(temp, path)
    except IsADirectoryError:
        # Something made a directory where the entry belongs: the entry's name is ours.
        shutil.rmtree(path, ignore_errors=True)
        os.replace(temp, path)


def _fsync_directory(directory: str) -> None:
    """Best effort: make the rename itself durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        logger.debug("could not fsync directory %s: %s", directory, exc)


def _listing(directory: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _prune_temp(entry: os.DirEntry[str], now: float) -> bool:
    """Remove ``entry`` if it is a temp file last written more than 10 minutes ago."""
    if not _is_temp(entry.name):
        return False
    try:
        if now - entry.stat(follow_symlinks=False).st_mtime <= _TEMP_MAX_AGE:
            return False
        os.unlink(entry.path)
    except OSError as exc:  # usually: it vanished meanwhile
        logger.debug("prune skipped %s: %s", entry.path, exc)
        return False
    return True


# -- json --------------------------------------------------------------------------------


def _json_error(problem: str) -> SerializationError:
    return SerializationError(f"{problem}; {_JSON_ACCEPTS}")


def _a(name: str) -> str:
    return f"an {name}" if name[:1].lower() in ("a", "e", "i", "o", "u") else f"a {name}"


def _json_children(value: dict[Any, Any] | list[Any], where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield f"{where}[{index}]", item
        return
    for key, item in value.items():
        if type(key) is not str:
            raise _json_error(f"{where} has a key {key!r} of type {_type_name(key)}")
        yield f"{where}[{key!r}]", item


def _check_json(value: object, where: str, active: set[int]) -> None:
    """Raise unless ``value`` survives a json round trip exactly (same types, same values)."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        if isinstance(value, float) and not math.isfinite(value):
            raise _json_error(f"{where} is the float {value!r}")
        return
    if not isinstance(value, (dict, list)) or kind not in (dict, list):
        raise _json_error(f"{where} is {_a(_type_name(value))}")
    if id(value) in active:
        raise _json_error(f"{where} contains itself")
    active.add(id(value))
    for child_where, child in _json_children(value, where):
        _check_json(child, child_where, active)
    active.discard(id(value))


def _to_json(value: Any) -> bytes:
    try:
        _check_json(value, "value", set())
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")
    except (RecursionError, ValueError) as exc:
        raise _json_error(f"value cannot be written as json ({exc})") from exc


# -- result cache ------------------------------------------------------------------------


class FilesystemResultCache:
    """Result cache in a directory shared by any number of processes.

    Entries live in ``path/<h[:2]>/<h>`` where ``h`` is the sha256 of the key, so any string
    is a usable key. Values are pickled with cloudpickle: only share the directory with
    trusted processes (see the module docstring).

    Args:
        path: The directory, or a ``file://`` URL of it; relative paths are resolved
            against the current directory now. It is created on the first write. Another
            URL (``abfs://``, ``s3://``...) is a ValueError: those are the fsspec classes'.
        clock: Wall-clock time in seconds, used for stored-at times, TTLs and the prune
            schedule (tests pass a fake).
        prune_interval: ``set`` runs :meth:`prune` at most once per this many seconds.
        sync: fsync each entry and its directory (``False``: still never torn and safe
            from a killed process, but a power loss may lose the latest entries).
        private: entries readable by the user alone (0600, directories 0700).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        prune_interval: float = 300.0,
        sync: bool = True,
        private: bool = False,
    ) -> None:
        self._configure(path, clock, prune_interval)
        self._sync = bool(sync)
        self._mode = 0o600 if private else 0o666

    def _configure(
        self, path: str | os.PathLike[str], clock: Callable[[], float], prune_interval: float
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds; got {clock!r}")
        if not isinstance(prune_interval, (int, float)) or not prune_interval >= 0:
            raise ValueError(f"prune_interval must be a number >= 0; got {prune_interval!r}")
        self.path = _absolute(path, "FsspecResultCache")
        self._clock = clock
        self._prune_interval = float(prune_interval)
        self._schedule = _Schedule(self._prune_interval)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "clock": self._clock,
            "interval": self._prune_interval,
            "sync": self._sync,
            "mode": self._mode,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._configure(state["path"], state["clock"], state["interval"])
        self._sync = state.get("sync", True)
        self._mode = state.get("mode", 0o666)

    def __repr__(self) -> str:
        interval = self._prune_interval
        return f"{type(self).__name__}({str(self.path)!r}, prune_interval={interval!r})"

    def get(self, key: str, ttl: float | None) -> Any:
        """The value stored under ``key``, or ``None`` on a miss.

        Args:
            key: Any string.
            ttl: Maximum age in seconds (``None``: any age). An entry also expires at the
                time its writer asked for. Expired entries are removed.

        Returns:
            Exactly the value given to :meth:`set`, or ``None`` if there is none, it has
            expired, or its file is corrupt (then with a :class:`CorruptEntryWarning`, and
            the file is removed).

        Raises:
            InvalidKeyError: ``key`` is not a str.
        """
        path = self._entry_path(key)
        if ttl is not None and ttl <= 0:
            return None
        try:
            with _opened(path) as (fd, opened):
                return self._load(path, fd, opened, key, ttl)
        except FileNotFoundError:
            return None
        except OSError as exc:
            _warn_corrupt(f"cache entry {path} is unreadable ({exc}); treated as a miss")
            return None

    def _load(self, path: str, fd: int, opened: os.stat_result, key: str, ttl: float | None) -> Any:
        try:
            entry = _read_entry(fd, opened, _KIND_CACHE)
            if entry.key != _encode_key(key):
                raise _CorruptError("it holds a different key (misplaced file)")
            if self._expired(entry.header, ttl):
                _remove_if_same(path, opened)
                return None
            return _unpickle(entry.payload)
        except _UnloadableError as exc:  # intact: another process may well load it
            _warn_corrupt(f"cache entry {path} is intact but {exc}; treated as a miss", 4)
            return None
        except (OSError, _CorruptError) as exc:
            _warn_corrupt(f"cache entry {path} is corrupt ({exc}); treated as a miss", 4)
            _remove_if_same(path, opened)
            return None

    def _expired(self, header: _Header, ttl: float | None) -> bool:
        return is_expired(header, ttl, self._clock())

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any entry; the last writer wins.

        Args:
            key: Any string.
            value: Anything cloudpickle can pickle.
            ttl: How long the writer wants the entry kept, in seconds (``None``: forever);
                :meth:`prune` removes it after that.

        Raises:
            InvalidKeyError: ``key`` is not a str.
            SerializationError: (a ``TypeError``) ``value`` cannot be pickled; nothing is
                written.
            ValueError: ``ttl`` is negative or not a number.
        """
        path = self._entry_path(key)
        stored_at = self._clock()
        parts = cache_entry_parts(key, value, ttl, stored_at, "filesystem result cache")
        _write_atomic(path, parts, sync=self._sync, mode=self._mode)
        if self._schedule.due(stored_at):
            self.prune()

    def prune(self) -> int:
        """Remove entries whose writer's ttl has passed and temp files older than 10 minutes.

        Only each entry's header is read. Files that vanish meanwhile are skipped.

        Returns:
            How many files were removed.
        """
        now, wall = self._clock(), time.time()
        removed = 0
        for entry in self._files():
            if _ENTRY_NAME.fullmatch(entry.name):
                removed += _prune_expired(entry.path, now)
            else:
                removed += _prune_temp(entry, wall)
        return removed

    def clear(self) -> None:
        """Remove every entry (temp files of writes in progress are left alone)."""
        for entry in self._files():
            if _ENTRY_NAME.fullmatch(entry.name):
                _discard(entry.path)

    def __len__(self) -> int:
        return sum(1 for entry in self._files() if _ENTRY_NAME.fullmatch(entry.name))

    def _entry_path(self, key: object) -> str:
        if not isinstance(key, str):
            raise InvalidKeyError(f"cache keys must be str; got {_type_name(key)}")
        name = hashlib.sha256(_encode_key(key)).hexdigest()
        return os.path.join(self.path, name[:2], name)

    def _files(self) -> Iterator[os.DirEntry[str]]:
        """Every file in the shard directories: entries, temp files and strays."""
        for shard in _listing(self.path):
            if _SHARD_NAME.fullmatch(shard.name) and shard.is_dir(follow_symlinks=False):
                yield from _listing(shard.path)


def _encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def is_expired(header: _Header, ttl: float | None, now: float) -> bool:
    """Whether an entry is past its writer's expiry, or older than the reader's ``ttl``."""
    return now >= header.expires_at or (ttl is not None and now - header.stored_at >= ttl)


def cache_entry_parts(
    key: str, value: Any, ttl: float | None, stored_at: float, what: str
) -> list[bytes]:
    """The parts of a cache entry for ``value`` (checks ``ttl``; pickles; ``what`` names the
    store in a pickling error). Shared by the local and the object-storage caches."""
    if ttl is not None and (not isinstance(ttl, (int, float)) or not ttl >= 0):
        raise ValueError(f"ttl must be None or a number of seconds >= 0; got {ttl!r}")
    payload = _pickle(value, what)
    expires_at = math.inf if ttl is None else stored_at + ttl
    codec, key_bytes = _CODECS["pickle"], _encode_key(key)
    return _entry_parts(_KIND_CACHE, codec, stored_at, expires_at, key_bytes, payload)


def _prune_expired(path: str, now: float) -> bool:
    """Remove the cache entry at ``path`` if its own expiry has passed; reads the header."""
    try:
        with _opened(path) as (fd, opened):
            if not stat.S_ISREG(opened.st_mode):
                return False
            header = _parse_header(os.read(fd, _HEADER_SIZE), _KIND_CACHE)
            return now >= header.expires_at and _remove_if_same(path, opened)
    except (OSError, _CorruptError) as exc:  # vanished meanwhile, or left for get to report
        logger.debug("prune skipped %s: %s", path, exc)
        return False


# -- artifact store ----------------------------------------------------------------------


class FilesystemArtifactStore:
    """Artifact store in a directory shared by any number of processes.

    Each artifact is one file, ``path/<key>``, written once under a fresh uuid4 key.

    Args:
        path: The directory, or a ``file://`` URL of it; relative paths are resolved
            against the current directory now. It is created on the first write. Another
            URL (``abfs://``, ``s3://``...) is a ValueError: those are the fsspec classes'.
        serializer: ``"pickle"`` (cloudpickle: any value, but unsafe on untrusted files) or
            ``"json"`` (JSON-native values only, round-tripped exactly; never unpickles).

    Raises:
        ValueError: ``serializer`` is not one of the two, or ``path`` is an fsspec URL.
    """

    name = "filesystem"

    def __init__(self, path: str | os.PathLike[str], *, serializer: str = "pickle") -> None:
        self._configure(path, serializer)

    def _configure(self, path: str | os.PathLike[str], serializer: str) -> None:
        if not isinstance(serializer, str) or serializer not in _CODECS:
            allowed = ", ".join(repr(name) for name in _CODECS)
            raise ValueError(f"serializer must be one of {allowed}; got {serializer!r}")
        self.path = _absolute(path, "FsspecArtifactStore")
        self.serializer = serializer
        self._schedule = _Schedule(_ARTIFACT_PRUNE_INTERVAL)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "serializer": self.serializer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._configure(state["path"], state["serializer"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, serializer={self.serializer!r})"

    def put(self, value: Any) -> ArtifactRef:
        """Store ``value`` under a fresh key.

        With ``serializer="json"`` the file is ``<key>.json``, plain JSON any tool can read,
        and its checksum ``<key>.json.sha256``; with pickle, one framed file ``<key>``.

        Returns:
            ``ArtifactRef(key, "filesystem")``.

        Raises:
            SerializationError: (a ``TypeError``) the serializer cannot store ``value``
                exactly; the message names the offending type and where it is. Nothing is
                written.
        """
        ref = ArtifactRef(uuid.uuid4().hex, self.name)
        if self.serializer == "json":
            self._put_json(self._path_of(ref), ref.key, _to_json(value))
            return ref
        payload = _pickle(value, "filesystem artifact store")
        codec, key = _CODECS[self.serializer], ref.key.encode("ascii")
        parts = _entry_parts(_KIND_ARTIFACT, codec, time.time(), math.inf, key, payload)
        _write_atomic(self._path_of(ref), parts)
        if self._schedule.due(time.monotonic()):
            self.prune()
        return ref

    def get(self, ref: ArtifactRef) -> Any:
        """The value stored under ``ref``.

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key (a crafted ref).
            ArtifactNotFoundError: (a ``KeyError``) ``ref`` belongs to another store, nothing
                is stored under it, or the stored file is corrupt (then with a
                :class:`CorruptEntryWarning`).
            SerializationError: the file is intact but its value cannot be unpickled in
                this process (say, the module defining its type is missing here).
        """
        path = self._path_of(ref)
        try:
            return _read_json_artifact(path + _JSON_SUFFIX)
        except FileNotFoundError:
            pass  # not a json artifact: a framed one, or none
        except (OSError, _CorruptError) as exc:
            _warn_corrupt(f"artifact file {path}{_JSON_SUFFIX} is corrupt ({exc})")
            raise ArtifactNotFoundError(
                f"artifact {ref.key!r}: the stored file {path}{_JSON_SUFFIX} was corrupt ({exc})"
            ) from exc
        try:
            return decode_artifact(_read_artifact(path, ref.key), self.serializer)
        except FileNotFoundError:
            raise ArtifactNotFoundError(
                f"no artifact {ref.key!r} in the filesystem artifact store at {self.path}"
            ) from None
        except _UnloadableError as exc:
            raise SerializationError(
                f"artifact {ref.key!r} is stored intact in {path}, but {exc}; is the module "
                "that defines its type importable in this process?"
            ) from exc.__cause__
        except (OSError, _CorruptError) as exc:
            _warn_corrupt(f"artifact file {path} is corrupt ({exc})")
            raise ArtifactNotFoundError(
                f"artifact {ref.key!r}: the stored file {path} was corrupt ({exc})"
            ) from exc

    def exists(self, ref: ArtifactRef) -> bool:
        """True if a file is stored under ``ref`` in this store (its content is not read).

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key.
        """
        try:
            path = self._path_of(ref)
        except ArtifactNotFoundError:
            return False
        return any(_is_file(p) for p in (path + _JSON_SUFFIX, path))

    def delete(self, ref: ArtifactRef) -> None:
        """Remove the artifact under ``ref``; no error if there is none.

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key.
            ArtifactNotFoundError: ``ref`` belongs to another store.
        """
        path = self._path_of(ref)
        for name in (path + _JSON_SUFFIX, path + _JSON_SUFFIX + _SUM_SUFFIX, path):
            _discard(name)

    def _put_json(self, path: str, key: str, payload: bytes) -> None:
        """The checksum first, then the JSON: a json file that exists has its checksum."""
        line = checksum_line(key + _JSON_SUFFIX, payload)
        _write_atomic(path + _JSON_SUFFIX + _SUM_SUFFIX, [line])
        _write_atomic(path + _JSON_SUFFIX, [payload])
        if self._schedule.due(time.monotonic()):
            self.prune()

    def prune(self) -> int:
        """Remove temp files left by writers killed more than 10 minutes ago.

        ``put`` runs this at most once every 5 minutes. Returns how many files it removed.
        """
        now = time.time()
        return sum(_prune_temp(entry, now) for entry in _listing(self.path))

    def _path_of(self, ref: ArtifactRef) -> str:
        """The file for ``ref``, after checking the ref again: it may have been crafted."""
        if not isinstance(ref, ArtifactRef):
            raise TypeError(
                f"expected an ArtifactRef (what a persist=True task returns); got "
                f"{type(ref).__name__} {ref!r}"
            )
        key = check_artifact_key(getattr(ref, "key", None))
        store = getattr(ref, "store", None)
        if store is not None and store != self.name:  # None: a ref rebuilt from its key
            raise ArtifactNotFoundError(
                f"artifact {key!r} belongs to the {store!r} artifact store, not to this "
                f"{self.name} store"
            )
        path = os.path.join(self.path, key)
        if os.path.dirname(os.path.normpath(path)) != str(self.path):
            raise InvalidKeyError(f"artifact key {key!r} does not name a file in {self.path}")
        return path


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _read_json_artifact(path: str) -> Any:
    """The value of a json artifact file, checked against its ``.sha256`` file.

    Raises:
        FileNotFoundError: there is no json artifact at ``path``.
        _CorruptError: the checksum is missing or does not match, or the JSON is invalid.
    """
    with _opened(path) as (fd, _), open(fd, "rb", closefd=False) as file:
        payload = file.read()
    try:
        with open(path + _SUM_SUFFIX, "rb") as file:
            line = file.read()
    except FileNotFoundError:
        if not _is_file(path):
            raise  # both were deleted since the JSON was opened: no artifact, not a corrupt one
        raise _CorruptError(f"its checksum file {path}{_SUM_SUFFIX} is missing") from None
    check_checksum(payload, line)
    return json_value(payload)


def decode_artifact(entry: _Entry, serializer: str) -> Any:
    """The value in a framed artifact entry, decoded as a store with ``serializer`` may.

    Raises:
        _CorruptError: a json entry holds invalid JSON.
        ArtifactNotFoundError: a pickle entry, and ``serializer`` is ``"json"``.
        _UnloadableError: the pickle cannot be loaded here.
    """
    if entry.header.codec == _CODECS["json"]:
        return json_value(entry.payload)
    if serializer == "json":
        key = entry.key.decode("ascii")
        raise ArtifactNotFoundError(
            f"artifact {key!r} was stored by the pickle serializer; this store uses "
            "serializer='json' and never unpickles"
        )
    return _unpickle(entry.payload)


def json_value(payload: bytes) -> Any:
    """The value of a JSON payload whose checksum has been checked."""
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise _CorruptError(f"invalid json ({exc})") from exc


def checksum_line(name: str, payload: bytes) -> bytes:
    """The ``sha256sum`` line a json artifact's ``.sha256`` file holds."""
    return f"{hashlib.sha256(payload).hexdigest()}  {name}\n".encode()


def check_checksum(payload: bytes, line: bytes) -> None:
    """Raise unless ``line`` (a ``sha256sum`` line) is the checksum of ``payload``."""
    expected = line.split(b" ", 1)[0].decode("ascii", "replace")
    if hashlib.sha256(payload).hexdigest() != expected:
        raise _CorruptError("its content does not match its checksum")


def _read_artifact(path: str, key: str) -> _Entry:
    with _opened(path) as (fd, opened):
        entry = _read_entry(fd, opened, _KIND_ARTIFACT)
    if entry.key != key.encode("ascii"):
        raise _CorruptError("it holds a different key (misplaced file)")
    return entry

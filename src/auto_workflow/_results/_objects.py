"""Result cache and artifact store at an fsspec URL: ``abfs://``, ``s3://``, ``memory://``...

The layout and the entry format are those of :mod:`._disk` (``<root>/<h[:2]>/<h>`` for a
cache entry, ``<root>/<key>`` or ``<root>/<key>.json`` + ``.json.sha256`` for an artifact),
so a copy of the objects in a local directory reads with the local classes, and back.

Invariants:

- fsspec is imported when a store is made, never when auto_workflow is: the URL's protocols
  are checked then (an unknown one is a ``ValueError``, a missing implementation an
  ``ImportError`` naming the extra to install, both naming the URL). The filesystem itself
  is made on first use, once per process (a forked child makes its own).
- An entry is written in one put (``pipe_file``) under its final name. Object stores have
  no atomic rename, but they make an object visible whole or not at all, so there is no
  temp object and nothing to clean up. Artifacts, written once, use the store's
  conditional create (``mode="create"``: ``If-None-Match: *`` on Azure Blob and S3), so an
  artifact is never replaced; cache entries are overwritten (the last writer wins).
- A reader trusts nothing: the whole object is read and its size, magic, version, kind,
  checksum and key are checked before its payload is decoded, so an object torn by a
  backend whose put is not atomic, or damaged later, is a miss (an artifact:
  :class:`ArtifactNotFoundError`) with a :class:`CorruptEntryWarning`, never a wrong value.
- A reader never deletes: an object store cannot remove "the object I read, unless it was
  replaced meanwhile", so a bad or expired cache entry stays until the next ``set`` of its
  key replaces it or :meth:`FsspecResultCache.prune` removes it.
- Errors of the storage itself (network, permissions) propagate: they are not corrupt
  entries. The engine treats a failing cache as a miss and logs it.
- Instances pickle as their URL, storage options and settings, never a filesystem: a Dask
  worker on another machine unpickles one and connects itself. Storage options are never
  shown (``repr`` and errors name their keys only), nor a password inside the URL.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from auto_workflow._core._model import ArtifactRef, check_artifact_key
from auto_workflow._results._disk import (
    _CODECS,
    _ENTRY_NAME,
    _HEADER_SIZE,
    _JSON_SUFFIX,
    _KIND_ARTIFACT,
    _KIND_CACHE,
    _SHARD_NAME,
    _SUM_SUFFIX,
    _CorruptError,
    _encode_key,
    _entry_parts,
    _Header,
    _parse_header,
    _pickle,
    _Schedule,
    _to_json,
    _type_name,
    _UnloadableError,
    _unpickle,
    _warn_corrupt,
    cache_entry_parts,
    check_checksum,
    checksum_line,
    decode_artifact,
    entry_from_bytes,
    is_expired,
    is_fsspec_url,
    json_value,
)
from auto_workflow.exceptions import ArtifactNotFoundError, InvalidKeyError, SerializationError

__all__ = ["FsspecArtifactStore", "FsspecResultCache"]

_EXTRA_OF = {"abfs": "adls", "abfss": "adls", "az": "adls", "s3": "s3", "s3a": "s3"}
_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/@]*@")  # user:password@ (not container@account)
_CREATE_ATTEMPTS = 3
_MEMORY_HINT = (
    " (memory:// is the memory of one process: a process or Dask worker cannot see what "
    "another process stored there; use object storage such as abfs:// or s3://)"
)


def _shown(url: str) -> str:
    """``url`` fit for messages: the password of a ``user:password@`` part is masked."""
    return _PASSWORD.sub(r"\1:***@", url)


def _import_fsspec(url: str) -> Any:
    try:
        import fsspec  # type: ignore[import-untyped]  # the [storage] extra, asked for by a URL
    except ImportError as exc:
        raise ImportError(
            f"{_shown(url)!r} is an fsspec URL, and fsspec is not installed ({exc}); run: "
            "pip install 'auto-workflow[storage]'"
        ) from exc
    return fsspec


def _check_protocols(url: str) -> None:
    """Import the implementation of each protocol in ``url`` (chained ones too), now."""
    fsspec = _import_fsspec(url)
    for part in url.split("::"):
        protocol = fsspec.core.split_protocol(part)[0] or "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            extra = _EXTRA_OF.get(protocol)
            hint = f"pip install 'auto-workflow[{extra}]'" if extra else "install it"
            raise ImportError(
                f"{_shown(url)!r}: the fsspec filesystem for {protocol!r} is not installed "
                f"({exc}); {hint}"
            ) from exc
        except ValueError as exc:
            known = sorted(fsspec.available_protocols())
            close = difflib.get_close_matches(protocol, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{_shown(url)!r}: fsspec knows no protocol {protocol!r}; {hint}known: "
                f"{', '.join(known)}"
            ) from exc


class _Place:
    """Where a store's objects live: a URL, its storage options, and the filesystem, made on
    first use in each process."""

    __slots__ = ("_fs", "_lock", "_pid", "_root", "options", "url")

    def __init__(self, url: object, options: Mapping[str, Any] | None, local: str) -> None:
        if not isinstance(url, str) or not is_fsspec_url(url):
            raise ValueError(
                f"url must be an fsspec URL such as 'abfs://container/prefix' or "
                f"'memory://name'; got {url!r} (a local path or file:// URL: use {local})"
            )
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"storage_options must be a mapping; got {type(options).__name__}")
        if options is not None and not all(isinstance(key, str) for key in options):
            raise TypeError("storage_options keys must be str (fsspec keyword arguments)")
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        _check_protocols(self.url)
        self._lock = threading.Lock()
        self._fs: Any = None
        self._root = ""
        self._pid = 0

    def filesystem(self) -> tuple[Any, str]:
        """The filesystem and the root path inside it."""
        with self._lock:
            if self._fs is None or self._pid != os.getpid():
                fs, root = _import_fsspec(self.url).core.url_to_fs(self.url, **self.options)
                self._fs, self._root, self._pid = fs, str(root).rstrip("/"), os.getpid()
            return self._fs, self._root

    def join(self, *names: str) -> str:
        return "/".join((self.filesystem()[1], *names))

    def shown(self, path: str) -> str:
        """``path`` (below the root) as a URL fit for messages."""
        root = self.filesystem()[1]
        below = path[len(root) :] if path.startswith(root) else f" ({path})"
        return _shown(self.url + below)

    def __repr__(self) -> str:
        options = f", storage_options={sorted(self.options)}" if self.options else ""
        return f"{_shown(self.url)!r}{options}"


def _cat(fs: Any, path: str) -> bytes:
    data = fs.cat_file(path)
    if not isinstance(data, bytes | bytearray):
        raise _CorruptError(f"the filesystem returned {type(data).__name__}, not bytes")
    return bytes(data)


def _remove_quietly(fs: Any, paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)


# -- result cache ------------------------------------------------------------------------


class FsspecResultCache:
    """Result cache at an fsspec URL, shared by every process (and machine) that can reach it.

    Entries are ``<url>/<h[:2]>/<h>`` where ``h`` is the sha256 of the key, in the format of
    :class:`~auto_workflow.cache.FilesystemResultCache`. Values are pickled with
    cloudpickle: only point it at storage that no untrusted party can write.

    Args:
        url: An fsspec URL (``"abfs://container/cache"``, ``"s3://bucket/cache"``,
            ``"memory://cache"``); a local path or ``file://`` URL belongs to
            ``FilesystemResultCache``.
        storage_options: Keyword arguments for the fsspec filesystem (credentials,
            endpoints); default: none, so the filesystem reads its own configuration
            (``AZURE_STORAGE_*``, ``AWS_*`` variables, fsspec's config).
        clock: Wall-clock time in seconds (tests pass a fake).
        prune_interval: ``set`` runs :meth:`prune` at most once per this many seconds;
            ``None`` (the default) never: a prune lists the whole cache, so on object
            storage run it yourself or let the store's lifecycle rules expire objects.

    Raises:
        ValueError: ``url`` is not an fsspec URL, or names a protocol fsspec does not know.
        ImportError: fsspec, or the filesystem of the URL's protocol, is not installed; the
            message says what to install.
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        prune_interval: float | None = None,
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds; got {clock!r}")
        if prune_interval is not None and (
            not isinstance(prune_interval, (int, float)) or not prune_interval >= 0
        ):
            raise ValueError(f"prune_interval must be None or >= 0; got {prune_interval!r}")
        self._place = _Place(url, storage_options, "FilesystemResultCache")
        self._clock = clock
        self._prune_interval = prune_interval
        self._schedule = None if prune_interval is None else _Schedule(float(prune_interval))

    @property
    def url(self) -> str:
        """The URL the cache lives at."""
        return self._place.url

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self._place.url,
            "storage_options": self._place.options,
            "clock": self._clock,
            "prune_interval": self._prune_interval,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = state.pop("url")
        self.__init__(url, **state)  # type: ignore[misc]  # rebuilt from its configuration

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._place!r})"

    def get(self, key: str, ttl: float | None) -> Any:
        """The value stored under ``key``, or ``None`` on a miss.

        Args:
            key: Any string.
            ttl: Maximum age in seconds (``None``: any age). An entry also expires at the
                time its writer asked for.

        Returns:
            Exactly the value given to :meth:`set`, or ``None`` if there is none, it has
            expired, or its object is corrupt (then with a :class:`CorruptEntryWarning`).

        Raises:
            InvalidKeyError: ``key`` is not a str.
            Exception: whatever the filesystem raises when the storage cannot be read.
        """
        path = self._entry_path(key)
        if ttl is not None and ttl <= 0:
            return None
        fs, _ = self._place.filesystem()
        try:
            raw = _cat(fs, path)
            entry = entry_from_bytes(raw, _KIND_CACHE)
            if entry.key != _encode_key(key):
                raise _CorruptError("it holds a different key (misplaced object)")
            if self._expired(entry.header, ttl):
                return None
            return _unpickle(entry.payload)
        except FileNotFoundError:
            return None
        except _UnloadableError as exc:  # intact: another process may well load it
            _warn_corrupt(f"cache entry {self._place.shown(path)} is intact but {exc}; a miss")
            return None
        except _CorruptError as exc:
            _warn_corrupt(f"cache entry {self._place.shown(path)} is corrupt ({exc}); a miss")
            return None

    def _expired(self, header: _Header, ttl: float | None) -> bool:
        return is_expired(header, ttl, self._clock())

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` in one put, replacing any entry (the last writer wins).

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
        parts = cache_entry_parts(key, value, ttl, stored_at, "fsspec result cache")
        fs, _ = self._place.filesystem()
        fs.pipe_file(path, b"".join(parts))
        if self._schedule is not None and self._schedule.due(stored_at):
            self.prune()

    def prune(self) -> int:
        """Remove the entries whose writer's ttl has passed; returns how many.

        It lists the whole cache and reads the header of each entry (a ranged read): on
        object storage, that is one request per entry.
        """
        fs, _ = self._place.filesystem()
        now = self._clock()
        expired = [path for path in self._entries(fs) if self._header_expired(fs, path, now)]
        _remove_quietly(fs, expired)
        return len(expired)

    def _header_expired(self, fs: Any, path: str, now: float) -> bool:
        try:
            header = _parse_header(fs.cat_file(path, start=0, end=_HEADER_SIZE), _KIND_CACHE)
        except (FileNotFoundError, _CorruptError):  # gone meanwhile, or for get to report
            return False
        return now >= header.expires_at

    def clear(self) -> None:
        """Remove every entry."""
        fs, _ = self._place.filesystem()
        _remove_quietly(fs, list(self._entries(fs)))

    def __len__(self) -> int:
        fs, _ = self._place.filesystem()
        return sum(1 for _ in self._entries(fs))

    def _entry_path(self, key: object) -> str:
        if not isinstance(key, str):
            raise InvalidKeyError(f"cache keys must be str; got {_type_name(key)}")
        name = hashlib.sha256(_encode_key(key)).hexdigest()
        return self._place.join(name[:2], name)

    def _entries(self, fs: Any) -> Iterator[str]:
        """Every entry object below the root (``<shard>/<digest>``; anything else is left)."""
        root = self._place.join()
        try:
            found = fs.find(root)
        except FileNotFoundError:
            return
        for path in found:
            shard, _, name = str(path).rpartition("/")
            if _ENTRY_NAME.fullmatch(name) and _SHARD_NAME.fullmatch(shard.rpartition("/")[2]):
                yield str(path)


# -- artifact store ----------------------------------------------------------------------


class FsspecArtifactStore:
    """Artifact store at an fsspec URL: refs that a Dask worker on another machine can read.

    Each artifact is one object, ``<url>/<key>`` (or ``<key>.json`` and its checksum
    ``<key>.json.sha256``), written once under a fresh uuid4 key, in the format of
    :class:`~auto_workflow.artifacts.FilesystemArtifactStore`; refs name the same store
    kind, ``"filesystem"``.

    Args:
        url: An fsspec URL (``"abfs://container/artifacts"``, ``"s3://bucket/artifacts"``,
            ``"memory://artifacts"``: this process only); a local path or ``file://`` URL
            belongs to ``FilesystemArtifactStore``.
        storage_options: Keyword arguments for the fsspec filesystem (credentials,
            endpoints); default: none, so the filesystem reads its own configuration.
        serializer: ``"pickle"`` (cloudpickle: any value, but unsafe on untrusted objects)
            or ``"json"`` (JSON-native values only, round-tripped exactly; never unpickles).

    Raises:
        ValueError: ``url`` is not an fsspec URL or names an unknown protocol, or
            ``serializer`` is not one of the two.
        ImportError: fsspec, or the filesystem of the URL's protocol, is not installed; the
            message says what to install.
    """

    name = "filesystem"

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        serializer: str = "pickle",
    ) -> None:
        if not isinstance(serializer, str) or serializer not in _CODECS:
            allowed = ", ".join(repr(name) for name in _CODECS)
            raise ValueError(f"serializer must be one of {allowed}; got {serializer!r}")
        self._place = _Place(url, storage_options, "FilesystemArtifactStore")
        self.serializer = serializer

    @property
    def url(self) -> str:
        """The URL the store lives at."""
        return self._place.url

    def __getstate__(self) -> dict[str, Any]:
        options = self._place.options
        return {"url": self._place.url, "storage_options": options, "serializer": self.serializer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = state.pop("url")
        self.__init__(url, **state)  # type: ignore[misc]  # rebuilt from its configuration

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._place!r}, serializer={self.serializer!r})"

    def put(self, value: Any) -> ArtifactRef:
        """Store ``value`` under a fresh key, in one conditional put (never replacing).

        Returns:
            ``ArtifactRef(key, "filesystem")``.

        Raises:
            SerializationError: (a ``TypeError``) the serializer cannot store ``value``
                exactly; nothing is written.
            Exception: whatever the filesystem raises when the storage cannot be written.
        """
        if self.serializer == "json":
            payload = _to_json(value)
            return self._create(lambda ref: self._put_json(ref, payload))
        payload = _pickle(value, "fsspec artifact store")
        return self._create(lambda ref: self._put_framed(ref, payload))

    def _create(self, write: Callable[[ArtifactRef], None]) -> ArtifactRef:
        """``write`` under a fresh key, again under another if the key is taken (it never
        is, short of a broken uuid source); the last attempt's FileExistsError is raised."""
        for _ in range(_CREATE_ATTEMPTS - 1):
            ref = ArtifactRef(uuid.uuid4().hex, self.name)
            try:
                write(ref)
            except FileExistsError:
                continue
            return ref
        ref = ArtifactRef(uuid.uuid4().hex, self.name)
        write(ref)
        return ref

    def _put_framed(self, ref: ArtifactRef, payload: bytes) -> None:
        codec, key = _CODECS[self.serializer], ref.key.encode("ascii")
        parts = _entry_parts(_KIND_ARTIFACT, codec, time.time(), math.inf, key, payload)
        fs, path = self._place.filesystem()[0], self._path_of(ref)
        fs.pipe_file(path, b"".join(parts), mode="create")

    def _put_json(self, ref: ArtifactRef, payload: bytes) -> None:
        """The checksum first, then the JSON: a json object that exists has its checksum."""
        fs, path = self._place.filesystem()[0], self._path_of(ref) + _JSON_SUFFIX
        fs.pipe_file(
            path + _SUM_SUFFIX, checksum_line(ref.key + _JSON_SUFFIX, payload), mode="create"
        )
        fs.pipe_file(path, payload, mode="create")

    def get(self, ref: ArtifactRef) -> Any:
        """The value stored under ``ref``.

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key (a crafted ref).
            ArtifactNotFoundError: (a ``KeyError``) ``ref`` belongs to another store, nothing
                is stored under it, or the stored object is corrupt (then with a
                :class:`CorruptEntryWarning`).
            SerializationError: the object is intact but its value cannot be unpickled in
                this process.
            Exception: whatever the filesystem raises when the storage cannot be read.
        """
        path = self._path_of(ref)
        fs = self._place.filesystem()[0]
        readers = [(path + _JSON_SUFFIX, self._read_json), (path, self._read_framed)]
        if self.serializer == "pickle":
            readers.reverse()  # the store's own format first: a hit costs one request
        for where, read in readers:
            try:
                return read(fs, where, ref)
            except FileNotFoundError:
                continue  # not in this format: the other one, or none
            except _UnloadableError as exc:
                raise SerializationError(
                    f"artifact {ref.key!r} is stored intact at {self._place.shown(where)}, but "
                    f"{exc}; is the module that defines its type importable in this process?"
                ) from exc.__cause__
            except _CorruptError as exc:
                raise self._corrupt(ref, where, exc) from exc
        raise ArtifactNotFoundError(
            f"no artifact {ref.key!r} in the fsspec artifact store at {_shown(self.url)}"
            f"{_MEMORY_HINT if self.url.startswith('memory://') else ''}"
        )

    def _read_framed(self, fs: Any, path: str, ref: ArtifactRef) -> Any:
        entry = entry_from_bytes(_cat(fs, path), _KIND_ARTIFACT)
        if entry.key != ref.key.encode("ascii"):
            raise _CorruptError("it holds a different key (misplaced object)")
        return decode_artifact(entry, self.serializer)

    def _read_json(self, fs: Any, path: str, ref: ArtifactRef) -> Any:
        payload = _cat(fs, path)
        try:
            line = _cat(fs, path + _SUM_SUFFIX)
        except FileNotFoundError:
            raise _CorruptError(f"its checksum object {path}{_SUM_SUFFIX} is missing") from None
        check_checksum(payload, line)
        return json_value(payload)

    def _corrupt(self, ref: ArtifactRef, path: str, exc: _CorruptError) -> ArtifactNotFoundError:
        where = self._place.shown(path)
        _warn_corrupt(f"artifact object {where} is corrupt ({exc})", 4)
        return ArtifactNotFoundError(
            f"artifact {ref.key!r}: the stored object {where} was corrupt ({exc})"
        )

    def exists(self, ref: ArtifactRef) -> bool:
        """True if an object is stored under ``ref`` in this store (its content is not read).

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key.
        """
        try:
            path = self._path_of(ref)
        except ArtifactNotFoundError:
            return False
        fs = self._place.filesystem()[0]
        return any(bool(fs.isfile(p)) for p in (path + _JSON_SUFFIX, path))

    def delete(self, ref: ArtifactRef) -> None:
        """Remove the artifact under ``ref``; no error if there is none.

        Raises:
            InvalidKeyError: ``ref.key`` is not a safe key.
            ArtifactNotFoundError: ``ref`` belongs to another store.
        """
        path = self._path_of(ref)
        json_path = path + _JSON_SUFFIX
        _remove_quietly(self._place.filesystem()[0], (json_path, json_path + _SUM_SUFFIX, path))

    def prune(self) -> int:
        """Nothing to remove: writes leave no temp objects. Returns 0 (the local store's
        ``prune`` removes temp files)."""
        return 0

    def _path_of(self, ref: ArtifactRef) -> str:
        """The object for ``ref``, after checking the ref again: it may have been crafted."""
        if not isinstance(ref, ArtifactRef):
            raise TypeError(
                f"expected an ArtifactRef (what a persist=True task returns); got "
                f"{type(ref).__name__} {ref!r}"
            )
        key = check_artifact_key(getattr(ref, "key", None))  # no separators, no dots
        store = getattr(ref, "store", None)
        if store is not None and store != self.name:  # None: a ref rebuilt from its key
            raise ArtifactNotFoundError(
                f"artifact {key!r} belongs to the {store!r} artifact store, not to this "
                f"{self.name} store"
            )
        return self._place.join(key)

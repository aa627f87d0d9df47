"""The object storage connector: an fsspec filesystem rooted at a profile's ``url``.

Invariants: the filesystem is made on first use, from the profile's ``url`` and its other
fields as fsspec storage options (secrets resolved then, and registered for redaction);
the instance is this connector's own (``skip_instance_cache``), so closing it closes no one
else's; every path a helper takes is relative to the root and may not climb out of it
(``..``) or be absolute; listings come back relative to the root, sorted. Errors are
fsspec's own (``FileNotFoundError`` & co.), never carrying a credential: the storage options
are not part of paths.
"""

from __future__ import annotations

import posixpath
import shutil
import threading
from collections.abc import Callable
from typing import IO, Any

import fsspec  # type: ignore[import-untyped]  # ships no type information
from fsspec.asyn import AsyncFileSystem, sync  # type: ignore[import-untyped]

from auto_workflow._connectors._errors import ConnectorError, MissingExtraError
from auto_workflow._connectors._profiles import Profile, describe_fields, resolve
from auto_workflow._connectors._registry import revive

__all__ = ["StorageConnector", "connect"]

_EXTRA_OF = {"abfs": "adls", "abfss": "adls", "az": "adls", "s3": "s3", "s3a": "s3"}


def connect(profile: Profile) -> StorageConnector:
    """The registry's factory for ``kind = "fsspec"`` profiles (nothing connects yet)."""
    return StorageConnector(profile)


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


class StorageConnector:
    """Files in object storage (or a local or in-memory filesystem) under one root URL.

    Paths are relative to the profile's ``url``: with ``url = "abfs://lake/raw"``,
    ``upload("2024/orders.csv", data)`` writes ``abfs://lake/raw/2024/orders.csv``.
    """

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._lock = threading.Lock()
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root = ""
        self._closed = False

    @property
    def profile(self) -> Profile:
        """The profile this connector was made from (secret references unresolved)."""
        return self._profile

    @property
    def name(self) -> str:
        """The profile's name."""
        return self._profile.name

    def __repr__(self) -> str:
        options = describe_fields(self._profile)
        url = options.pop("url")
        shown = "".join(f", {k}={v!r}" for k, v in sorted(options.items()))
        return f"StorageConnector({self.name!r}, url={url!r}{shown})"

    def __reduce__(self) -> tuple[Callable[[Profile], Any], tuple[Profile]]:
        # Never the filesystem: the receiving process makes its own from the profile.
        return (revive, (self._profile,))

    # -- the filesystem ------------------------------------------------------------------

    def _open(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fields = resolve(self._profile)
        url = str(fields.pop("url"))
        try:
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **fields)
        except ImportError as exc:
            extra = _EXTRA_OF.get(_protocol(url), "storage")
            raise MissingExtraError(
                f"storage profile {self.name!r}: url {url!r} needs a filesystem that is not "
                f"installed ({exc}); run: pip install 'auto-workflow[{extra}]'"
            ) from exc
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem itself (made on first use), for everything else fsspec does."""
        with self._lock:
            if self._closed:
                raise ConnectorError(
                    f"storage connector {self.name!r} is closed; connectors.get({self.name!r}) "
                    "makes a new one"
                )
            if self._fs is None:
                self._fs, self._root = self._open()
            return self._fs

    @property
    def root(self) -> str:
        """The root path inside the filesystem (the profile's url without its protocol)."""
        _ = self.fs
        return self._root

    def path(self, path: str = "") -> str:
        """The full filesystem path of ``path`` (relative to the root).

        Raises:
            ValueError: ``path`` is absolute or climbs out of the root.
        """
        if not isinstance(path, str):
            raise TypeError(f"path must be a str; got {type(path).__name__}")
        clean = posixpath.normpath(path) if path else ""
        if path.startswith("/") or clean == ".." or clean.startswith("../"):
            raise ValueError(f"path {path!r} must be relative to the root and stay below it")
        root = self.root
        return root if clean in ("", ".") else f"{root}/{clean}" if root else clean

    def url(self, path: str = "") -> str:
        """The full URL of ``path``, protocol included (``abfs://lake/raw/x.csv``)."""
        return str(self.fs.unstrip_protocol(self.path(path)))

    def _relative(self, full: str) -> str:
        root = self.root.strip("/")
        full = full.strip("/")
        return full[len(root) :].lstrip("/") if root and full.startswith(root) else full

    # -- helpers -------------------------------------------------------------------------

    def upload(self, path: str, data: bytes | str | IO[bytes]) -> int:
        """Write ``data`` (bytes, text as UTF-8, or a readable binary stream) to ``path``,
        replacing it; parent directories are made as needed. Returns the bytes written."""
        full, fs = self.path(path), self.fs
        fs.makedirs(posixpath.dirname(full) or full, exist_ok=True)
        with fs.open(full, "wb") as out:
            if isinstance(data, str):
                data = data.encode()
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
                return len(data)
            shutil.copyfileobj(data, out, 1 << 20)
            return int(out.tell())

    def download(self, path: str, target: IO[bytes] | None = None) -> bytes | int:
        """The bytes of ``path``, or, given a writable binary ``target``, the number of bytes
        copied into it (streamed, never all in memory).

        Raises:
            FileNotFoundError: there is nothing at ``path``.
        """
        with self.fs.open(self.path(path), "rb") as src:
            if target is None:
                data: bytes = src.read()
                return data
            before = target.tell() if target.seekable() else 0
            shutil.copyfileobj(src, target, 1 << 20)
            return (target.tell() - before) if target.seekable() else -1

    def open(self, path: str, mode: str = "rb", **options: Any) -> Any:
        """``fs.open`` on ``path`` (a file object; use it in a ``with`` block)."""
        return self.fs.open(self.path(path), mode, **options)

    def list(self, path: str = "", *, recursive: bool = False) -> list[str]:
        """The entries below ``path``, relative to the root, sorted; with ``recursive``,
        every file at any depth (no directories). Nothing there: an empty list."""
        full, fs = self.path(path), self.fs
        try:
            found = fs.find(full) if recursive else fs.ls(full, detail=False)
        except FileNotFoundError:
            return []
        return sorted(self._relative(str(p)) for p in found if str(p).strip("/") != full.strip("/"))

    def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``."""
        return bool(self.fs.exists(self.path(path)))

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove ``path`` (with ``recursive``, a directory and everything below it); no error
        if there is nothing there."""
        fs, full = self.fs, self.path(path)
        if fs.exists(full):
            fs.rm(full, recursive=recursive)

    def makedirs(self, path: str) -> None:
        """Make the directory ``path`` and its parents (a no-op where they exist, and on
        stores without real directories)."""
        self.fs.makedirs(self.path(path), exist_ok=True)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the filesystem (and its HTTP sessions); later calls raise."""
        with self._lock:
            self._closed = True
            fs, self._fs = self._fs, None
        if isinstance(fs, AsyncFileSystem) and type(fs).__module__.startswith("adlfs"):
            # The [adls] extra, present since this filesystem is one of its classes.
            from adlfs.spec import close_service_client  # type: ignore[import-untyped]

            sync(fs.loop, close_service_client, fs)

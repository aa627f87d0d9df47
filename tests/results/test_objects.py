"""The cache and artifact store at an fsspec URL (memory:// here; abfs:// on Azurite in
tests/connectors/test_stores.py), and file:// URLs kept on the local code path."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from auto_workflow import flow, task
from auto_workflow._core._model import ArtifactRef
from auto_workflow._core._plugins import DEFAULTS
from auto_workflow._results._disk import _entry_parts
from auto_workflow.artifacts import FilesystemArtifactStore, FsspecArtifactStore, get_store
from auto_workflow.cache import FilesystemResultCache, FsspecResultCache
from auto_workflow.config import reload_config
from auto_workflow.exceptions import (
    ArtifactNotFoundError,
    CorruptEntryWarning,
    InvalidKeyError,
    SerializationError,
)

MEMORY = fsspec.filesystem("memory")


def make_value(label: str, payload: bytes) -> dict[str, Any]:
    """A self-verifying value: its digest covers its label and payload."""
    return {"label": label, "payload": payload, "digest": hashlib.sha256(payload).hexdigest()}


def is_valid(label: str, value: object) -> bool:
    if not isinstance(value, dict) or value.get("label") != label:
        return False
    return bool(hashlib.sha256(value["payload"]).hexdigest() == value["digest"])


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh memory:// root, removed afterwards (the memory filesystem is process-wide)."""
    root = f"memory://aw-{uuid.uuid4().hex}"
    yield root
    if MEMORY.exists(root):
        MEMORY.rm(root, recursive=True)


def objects(url: str) -> list[str]:
    return sorted(str(p) for p in MEMORY.find(url))


def cache_object(url: str) -> str:
    (path,) = objects(f"{url}/cache")
    return path


# -- round trips ---------------------------------------------------------------------------


def test_cache_round_trips_values_and_ttls(url: str) -> None:
    clock = [1000.0]
    cache = FsspecResultCache(f"{url}/cache", clock=lambda: clock[0])
    assert cache.get("k", None) is None
    value = {"rows": [1, 2.5, "x", None], "blob": b"\x00" * 10_000}
    cache.set("k", value)
    assert cache.get("k", None) == value
    cache.set("short", 1, ttl=10)
    assert len(cache) == 2
    clock[0] += 11
    assert cache.get("short", None) is None  # its writer's ttl has passed
    assert cache.get("k", 5) is None  # older than the reader's ttl
    assert cache.get("k", None) == value
    assert cache.prune() == 1
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_cache_entries_have_the_local_layout(url: str) -> None:
    cache = FsspecResultCache(f"{url}/cache")
    cache.set("key", 1)
    digest = hashlib.sha256(b"key").hexdigest()
    assert objects(url) == [f"/{url[len('memory://') :]}/cache/{digest[:2]}/{digest}"]


def test_artifacts_round_trip_in_both_serializers(url: str) -> None:
    store = FsspecArtifactStore(url)
    ref = store.put({"x": (1, 2)})
    assert ref.store == "filesystem"
    assert store.get(ref) == {"x": (1, 2)}
    assert store.exists(ref)
    json_store = FsspecArtifactStore(url, serializer="json")
    jref = json_store.put({"rows": [1, 2]})
    body = MEMORY.cat_file(f"{url}/{jref.key}.json")
    assert json.loads(body) == {"rows": [1, 2]}
    line = MEMORY.cat_file(f"{url}/{jref.key}.json.sha256").decode()
    assert line == f"{hashlib.sha256(body).hexdigest()}  {jref.key}.json\n"  # sha256sum -c
    assert store.get(jref) == {"rows": [1, 2]}  # a pickle store reads json artifacts
    with pytest.raises(ArtifactNotFoundError, match="never unpickles"):
        json_store.get(ref)
    for r in (ref, jref):
        store.delete(r)
        store.delete(r)  # nothing there: no error
        assert not store.exists(r)
        with pytest.raises(ArtifactNotFoundError, match=r.key):
            store.get(r)
    assert objects(url) == []


def test_a_local_store_reads_a_copy_of_the_objects(url: str, tmp_path: Path) -> None:
    store = FsspecArtifactStore(url)
    ref = store.put([1, "two"])
    cache = FsspecResultCache(f"{url}/cache")
    cache.set("k", "v")
    MEMORY.get(url, str(tmp_path / "copy"), recursive=True)
    assert FilesystemArtifactStore(tmp_path / "copy").get(ref) == [1, "two"]
    assert FilesystemResultCache(tmp_path / "copy" / "cache").get("k", None) == "v"


def test_an_artifact_is_never_replaced(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FsspecArtifactStore(url)
    first = store.put("first")
    # The next fresh key happens to be taken: the conditional put refuses, another key is used.
    keys = iter([uuid.UUID(first.key), uuid.uuid4()])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(keys))
    second = store.put("second")
    assert second.key != first.key
    assert store.get(first) == "first"
    assert store.get(second) == "second"
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(first.key))  # every key taken
    with pytest.raises(FileExistsError):
        store.put("third")
    assert store.get(first) == "first"


def test_unpicklable_values_write_nothing(url: str) -> None:
    with pytest.raises(SerializationError, match="lock"):
        FsspecResultCache(url).set("k", threading.Lock())
    with pytest.raises(SerializationError, match="tuple"):
        FsspecArtifactStore(url, serializer="json").put((1, 2))
    assert objects(url) == []


def test_keys_and_refs_are_checked(url: str) -> None:
    with pytest.raises(InvalidKeyError, match="int"):
        FsspecResultCache(url).get(1, None)  # type: ignore[arg-type]
    store = FsspecArtifactStore(url)
    crafted = object.__new__(ArtifactRef)
    object.__setattr__(crafted, "key", "../escape")
    object.__setattr__(crafted, "store", "filesystem")
    with pytest.raises(InvalidKeyError, match="escape"):
        store.get(crafted)
    with pytest.raises(ArtifactNotFoundError, match="'memory' artifact store"):
        store.get(ArtifactRef("abc", "memory"))
    assert not store.exists(ArtifactRef("abc", "memory"))


# -- integrity -------------------------------------------------------------------------------


def _entry_bytes(key: str, value: object) -> bytes:
    payload = pickle.dumps(value)
    return b"".join(_entry_parts(1, 1, 0.0, float("inf"), key.encode(), payload))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), id="bit-flip"),
        pytest.param(lambda raw: raw + b"x", id="trailing-bytes"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: b"not an entry at all, but long enough" * 3, id="garbage"),
        pytest.param(lambda raw: _entry_bytes("other", "wrong value"), id="misplaced"),
    ],
)
def test_a_damaged_cache_object_is_a_warned_miss_never_a_wrong_value(url: str, damage: Any) -> None:
    cache = FsspecResultCache(f"{url}/cache")
    cache.set("k", "right value")
    path = cache_object(url)
    MEMORY.pipe_file(path, damage(MEMORY.cat_file(path)))
    with pytest.warns(CorruptEntryWarning, match="corrupt") as caught:
        assert cache.get("k", None) is None
    assert caught[0].filename == __file__  # the warning points at the caller
    assert MEMORY.exists(path)  # a reader never deletes; the next set replaces it
    cache.set("k", "new value")
    assert cache.get("k", None) == "new value"


def test_a_damaged_artifact_is_not_found_with_a_warning(url: str) -> None:
    store = FsspecArtifactStore(url)
    ref = store.put("value")
    path = f"{url}/{ref.key}"
    raw = MEMORY.cat_file(path)
    MEMORY.pipe_file(path, raw[:-3])
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="corrupt"):
        store.get(ref)
    json_store = FsspecArtifactStore(url, serializer="json")
    jref = json_store.put({"n": 1})
    MEMORY.pipe_file(f"{url}/{jref.key}.json", b'{"n": 2}')  # edited: valid JSON, wrong sum
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="checksum"):
        json_store.get(jref)
    MEMORY.rm_file(f"{url}/{jref.key}.json.sha256")
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="missing"):
        json_store.get(jref)


def test_an_intact_entry_that_cannot_be_unpickled_here_is_said_so(url: str) -> None:
    payload = b"cno_such_module\nX\n."  # a pickle of a class whose module is missing here
    key = hashlib.sha256(b"k").hexdigest()
    MEMORY.pipe_file(
        f"{url}/{key[:2]}/{key}", b"".join(_entry_parts(1, 1, 0.0, float("inf"), b"k", payload))
    )
    with pytest.warns(CorruptEntryWarning, match="intact"):
        assert FsspecResultCache(url).get("k", None) is None
    MEMORY.pipe_file(f"{url}/abc", b"".join(_entry_parts(2, 1, 0.0, float("inf"), b"abc", payload)))
    with pytest.raises(SerializationError, match="importable"):
        FsspecArtifactStore(url).get(ArtifactRef("abc", "filesystem"))


def test_concurrent_writers_of_one_key_never_leave_a_torn_object(url: str) -> None:
    cache = FsspecResultCache(url)
    failures: list[str] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        for n in range(200):
            if (n + seed) % 2:
                cache.set("same", make_value("same", os.urandom(1000 + 97 * seed)))
                continue
            try:
                value = cache.get("same", None)
            except CorruptEntryWarning as torn:  # raised: warnings are errors in here
                failures.append(str(torn))
                continue
            if value is not None and not is_valid("same", value):
                failures.append(repr(value)[:80])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: many interleavings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a torn object would be a CorruptEntryWarning
            threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert is_valid("same", cache.get("same", None))
    assert len(cache) == 1


# -- configuration, pickling, errors ---------------------------------------------------------


def test_instances_pickle_as_their_configuration(url: str) -> None:
    cache = FsspecResultCache(url, storage_options={"opt": 1}, prune_interval=60)
    cache.set("k", 1)  # its filesystem is made
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get("k", None) == 1
    assert (clone.url, clone.__getstate__()) == (cache.url, cache.__getstate__())
    assert b"MemoryFileSystem" not in pickle.dumps(cache)
    store = FsspecArtifactStore(url, serializer="json")
    again = pickle.loads(pickle.dumps(store))
    assert again.get(store.put([1])) == [1]
    assert again.serializer == "json"


def test_repr_and_messages_show_no_storage_option_value_or_password(url: str) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    where = url.replace("memory://", f"memory://user:{secret}@")
    cache = FsspecResultCache(where, storage_options={"account_key": secret})
    store = FsspecArtifactStore(where, storage_options={"account_key": secret})
    assert "account_key" in repr(cache)
    assert secret not in repr(cache) + repr(store)
    assert "memory://user:***@" in repr(cache)
    assert "c@acct" in repr(FsspecResultCache("memory://c@acct/x"))  # container@account form
    ref = store.put(1)
    with pytest.raises(ArtifactNotFoundError) as info:
        store.get(ArtifactRef("missing", "filesystem"))
    assert secret not in str(info.value)
    MEMORY.pipe_file(MEMORY.find(where)[0], b"torn")
    with pytest.warns(CorruptEntryWarning) as caught, pytest.raises(ArtifactNotFoundError) as bad:
        store.get(ref)
    assert secret not in str(caught[0].message) + str(bad.value)
    MEMORY.rm(where, recursive=True)


@pytest.mark.parametrize("make", [FsspecResultCache, FsspecArtifactStore])
def test_a_bad_url_is_refused_when_the_store_is_made(make: Any) -> None:
    with pytest.raises(ValueError, match=r"'abfz'.*did you mean 'abfs'\?"):
        make("abfz://container/x")
    with pytest.raises(ValueError, match="must be an fsspec URL"):
        make("/a/local/dir")
    with pytest.raises(ValueError, match=r"must be an fsspec URL.*use Filesystem"):
        make("file:///a/local/dir")
    with pytest.raises(TypeError, match="storage_options"):
        make("memory://x", storage_options=[("a", 1)])


def test_a_missing_filesystem_names_the_extra_and_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs fails, installed or not
    with pytest.raises(ImportError, match=r"'s3://bucket/cache'.*auto-workflow\[s3\]"):
        FsspecResultCache("s3://bucket/cache")


def test_a_missing_fsspec_names_the_storage_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now fails
    with pytest.raises(ImportError, match=r"'memory://x'.*auto-workflow\[storage\]"):
        FsspecArtifactStore("memory://x")


@pytest.mark.parametrize("make", [FilesystemResultCache, FilesystemArtifactStore])
def test_local_stores_take_file_urls_and_refuse_other_urls(make: Any, tmp_path: Path) -> None:
    spaced = tmp_path / "a dir"
    assert make(spaced.as_uri()).path == spaced  # percent-decoded: 'a%20dir'
    assert make(f"file://localhost{tmp_path}").path == tmp_path
    with pytest.raises(ValueError, match="names the host 'data'"):
        make("file://data/cache")
    with pytest.raises(ValueError, match=r"fsspec URL.*Fsspec"):
        make("memory://somewhere")


@pytest.fixture
def configured(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The configuration asks for the filesystem cache and store, both at ``url``."""
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH", f"{url}/artifacts")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_PATH", f"{url}/cache")
    reload_config()
    DEFAULTS.__init__()  # type: ignore[misc]
    return url


CALLS: list[int] = []


@task(persist=True, cache_ttl=3600)
def _produce(n: int) -> list[int]:
    CALLS.append(n)
    return list(range(n))


@task(run_in="thread")
def _consume(ref: ArtifactRef) -> int:
    return sum(get_store().get(ref))


@flow
def _pipeline(n: int) -> tuple[ArtifactRef, int]:
    ref = _produce(n)
    return ref, _consume(ref)


def test_a_flow_run_uses_the_configured_urls_end_to_end(configured: str) -> None:
    CALLS.clear()
    ref, total = _pipeline.run(5)
    assert total == 10
    again, total_again = _pipeline.run(5)
    assert (again, total_again, CALLS) == (ref, 10, [5])  # the second run hit the cache
    assert MEMORY.isfile(f"{configured}/artifacts/{ref.key}")
    assert len(FsspecResultCache(f"{configured}/cache")) == 1
    assert FsspecArtifactStore(f"{configured}/artifacts").get(ref) == [0, 1, 2, 3, 4]


def test_a_bad_configured_url_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH", "abfz://c/p")
    reload_config()
    DEFAULTS.__init__()  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"artifact_store_path = 'abfz://c/p'.*'abfz'"):
        _pipeline.run(1)


_NO_FSSPEC_PROBE = """
import os, sys
from pathlib import Path
from auto_workflow import flow, task
from auto_workflow.artifacts import FilesystemArtifactStore, get_store
from auto_workflow.cache import FilesystemResultCache
from auto_workflow.config import reload_config

root = Path(sys.argv[1])
cache = FilesystemResultCache((root / "c").as_uri())
cache.set("k", 1)
assert cache.get("k", None) == 1
store = FilesystemArtifactStore(str(root / "a"))
assert store.get(store.put(2)) == 2

@task(persist=True, cache_ttl=60)
def made() -> int:
    return 3

@task
def read(ref) -> int:
    return get_store().get(ref)

@flow
def f() -> int:
    return read(made())

os.environ.update(
    AUTO_WORKFLOW_ARTIFACT_STORE="filesystem",
    AUTO_WORKFLOW_RESULT_CACHE="filesystem",
    AUTO_WORKFLOW_ARTIFACT_STORE_PATH=(root / "ca").as_uri(),
    AUTO_WORKFLOW_RESULT_CACHE_PATH=str(root / "cc"),
)
reload_config()
assert f.run() == 3 and f.run() == 3
assert (root / "ca").is_dir() and (root / "cc").is_dir()
print("fsspec" in sys.modules)
"""


def test_local_paths_and_file_urls_never_import_fsspec(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    env["AUTO_WORKFLOW_HISTORY"] = "off"
    out = subprocess.run(
        [sys.executable, "-c", _NO_FSSPEC_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

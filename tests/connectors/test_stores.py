"""The result cache and artifact store at an abfs:// URL, on Azurite: what memory:// shows in
tests/results/test_objects.py, on a real blob service shared by processes."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from servers import AZURITE_KEY, Azurite

from auto_workflow import flow, task
from auto_workflow._core._plugins import DEFAULTS
from auto_workflow.artifacts import ArtifactRef, FsspecArtifactStore, get_store
from auto_workflow.cache import FsspecResultCache
from auto_workflow.config import reload_config
from auto_workflow.exceptions import ArtifactNotFoundError, CorruptEntryWarning
from conftest import need

pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")


@dataclass(frozen=True)
class Blob:
    """A fresh container on Azurite: its abfs:// URL and the options that reach it."""

    url: str
    options: dict[str, str]
    fs: Any


@pytest.fixture
def blob(azurite: Azurite) -> Iterator[Blob]:
    adlfs = need("adlfs")
    container = f"s{uuid.uuid4().hex[:12]}"
    options = {"connection_string": azurite.connection_string}
    fs = adlfs.AzureBlobFileSystem(skip_instance_cache=True, **options)
    fs.mkdir(container)
    yield Blob(f"abfs://{container}", options, fs)
    fs.rm(container, recursive=True)


def _cache(blob: Blob, **kwargs: Any) -> FsspecResultCache:
    return FsspecResultCache(f"{blob.url}/cache", storage_options=blob.options, **kwargs)


def _store(blob: Blob, **kwargs: Any) -> FsspecArtifactStore:
    return FsspecArtifactStore(f"{blob.url}/artifacts", storage_options=blob.options, **kwargs)


def test_cache_round_trips_on_blob_storage(blob: Blob) -> None:
    clock = [1000.0]
    cache = _cache(blob, clock=lambda: clock[0])
    value = {"rows": list(range(1000)), "blob": os.urandom(3_000_000)}
    assert cache.get("k", None) is None
    cache.set("k", value)
    cache.set("brief", 1, ttl=5)
    assert cache.get("k", None) == value
    assert len(cache) == 2
    digest = hashlib.sha256(b"k").hexdigest()
    assert blob.fs.isfile(f"{blob.url}/cache/{digest[:2]}/{digest}")
    clock[0] += 6
    assert cache.get("brief", None) is None
    assert cache.prune() == 1
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_artifacts_round_trip_on_blob_storage(blob: Blob, serializer: str) -> None:
    store = _store(blob, serializer=serializer)
    ref = store.put({"rows": [1, 2, 3]})
    assert store.exists(ref)
    assert store.get(ref) == {"rows": [1, 2, 3]}
    if serializer == "json":
        body = blob.fs.cat_file(f"{blob.url}/artifacts/{ref.key}.json")
        assert json.loads(body) == {"rows": [1, 2, 3]}  # plain JSON any tool can read
    store.delete(ref)
    assert not store.exists(ref)
    with pytest.raises(ArtifactNotFoundError, match=ref.key):
        store.get(ref)


def test_a_damaged_blob_is_a_miss_never_a_wrong_value(blob: Blob) -> None:
    cache = _cache(blob)
    cache.set("k", "right")
    (path,) = blob.fs.find(f"{blob.url}/cache")
    raw = blob.fs.cat_file(path)
    blob.fs.pipe_file(path, raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        assert cache.get("k", None) is None
    store = _store(blob)
    ref = store.put("value")
    blob.fs.pipe_file(f"{blob.url}/artifacts/{ref.key}", raw[: len(raw) // 2])
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="corrupt"):
        store.get(ref)


def test_an_artifact_blob_is_written_with_a_conditional_create(blob: Blob) -> None:
    store = _store(blob)
    ref = store.put("first")
    path = f"{blob.url}/artifacts/{ref.key}"
    with pytest.raises(FileExistsError):  # what put uses: If-None-Match: * on the blob
        blob.fs.pipe_file(path, b"other", mode="create")
    assert store.get(ref) == "first"


_WRITER = """
import hashlib, json, os, sys, warnings
from auto_workflow.cache import FsspecResultCache

url, options, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cache = FsspecResultCache(url, storage_options=options)
failures, hits = [], 0
warnings.simplefilter("error")  # a torn blob would be a CorruptEntryWarning
for n in range(40):
    if (n + seed) % 2:
        payload = os.urandom(20_000 + 5_000 * seed)
        cache.set("same", {"seed": seed, "payload": payload,
                           "digest": hashlib.sha256(payload).hexdigest()})
        continue
    try:
        value = cache.get("same", None)
    except Warning as torn:
        failures.append(str(torn))
        continue
    if value is not None:
        hits += 1
        if hashlib.sha256(value["payload"]).hexdigest() != value["digest"]:
            failures.append(f"wrong value from writer {value['seed']}")
print(json.dumps({"failures": failures, "hits": hits}))
"""


def test_concurrent_writers_in_processes_never_leave_a_torn_blob(blob: Blob) -> None:
    url, options = f"{blob.url}/cache", json.dumps(blob.options)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, options, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert [r["failures"] for r in reports] == [[]] * 4
    assert sum(r["hits"] for r in reports) > 0
    final = _cache(blob).get("same", None)
    assert hashlib.sha256(final["payload"]).hexdigest() == final["digest"]


def test_pickled_stores_carry_no_filesystem_and_show_no_key(blob: Blob) -> None:
    store = _store(blob)
    ref = store.put([1])
    assert AZURITE_KEY not in repr(store)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get(ref) == [1]
    assert b"AzureBlobFileSystem" not in pickle.dumps(store)


@task(persist=True, cache_ttl=3600)
def _extract(n: int) -> list[int]:
    return [i * i for i in range(n)]


@task(run_in="thread")
def _total(ref: ArtifactRef) -> int:
    return sum(get_store().get(ref))


@task(run_in="process")
def _total_elsewhere(ref: ArtifactRef) -> tuple[int, int]:
    return sum(get_store().get(ref)), os.getpid()


@flow
def _squares(n: int) -> tuple[ArtifactRef, int]:
    ref = _extract(n)
    return ref, _total(ref)


@flow
def _squares_elsewhere(n: int) -> tuple[int, int]:
    return _total_elsewhere(_extract(n))


def test_a_flow_configured_with_abfs_urls_runs_end_to_end(
    blob: Blob, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Configuration alone: the URLs in AUTO_WORKFLOW_* keys, the credentials where adlfs
    # looks for them.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH", f"{blob.url}/artifacts")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_PATH", f"{blob.url}/cache")
    reload_config()
    DEFAULTS.__init__()  # type: ignore[misc]
    ref, total = _squares.run(10)
    assert total == 285
    assert blob.fs.isfile(f"{blob.url}/artifacts/{ref.key}")
    assert len(blob.fs.find(f"{blob.url}/cache")) == 1
    again, _ = _squares.run(10)
    assert again == ref  # the cached ref, its artifact still there


def test_a_process_worker_reads_the_artifact_from_blob_storage(blob: Blob) -> None:
    total, pid = _squares_elsewhere.run(10, artifact_store=_store(blob))
    assert total == 285
    assert pid != os.getpid()  # the store travelled as its URL and options, and connected there

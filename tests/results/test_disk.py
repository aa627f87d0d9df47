"""Filesystem result cache and artifact store: atomic, validated, safe keys, many processes."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import inspect
import itertools
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auto_workflow._core._model import ArtifactRef
from auto_workflow._results import _disk
from auto_workflow._results._disk import FilesystemArtifactStore, FilesystemResultCache
from auto_workflow.exceptions import (
    ArtifactNotFoundError,
    CorruptEntryWarning,
    InvalidKeyError,
    SerializationError,
)

# -- helpers -----------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand (module level, so a cache using it pickles)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_value(label: str, payload: str | bytes) -> dict[str, Any]:
    """A self-verifying value: its digest covers its label and payload."""
    data = payload.encode() if isinstance(payload, str) else payload
    digest = hashlib.sha256(label.encode() + data).hexdigest()
    return {"label": label, "payload": payload, "digest": digest}


def is_valid(label: str | None, value: object) -> bool:
    """True if ``value`` is exactly a value ``make_value(label, ...)`` returned."""
    if not isinstance(value, dict) or set(value) != {"label", "payload", "digest"}:
        return False
    if label is not None and value["label"] != label:
        return False
    payload = value["payload"]
    data = payload.encode() if isinstance(payload, str) else payload
    return bool(hashlib.sha256(value["label"].encode() + data).hexdigest() == value["digest"])


def entry_path(cache: FilesystemResultCache, key: str) -> Path:
    name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return cache.path / name[:2] / name


def temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


def artifact_refs(store: FilesystemArtifactStore) -> list[ArtifactRef]:
    if not store.path.exists():
        return []
    # <key> (framed), or <key>.json and <key>.json.sha256 (a json artifact)
    keys = {p.name.partition(".")[0] for p in store.path.iterdir() if not p.name.startswith(".")}
    return [ArtifactRef(key, "filesystem") for key in sorted(keys)]


def crafted_ref(key: str, store: str = "filesystem") -> ArtifactRef:
    """An ArtifactRef that skipped validation, as unpickling a crafted pickle could make."""
    ref = object.__new__(ArtifactRef)
    object.__setattr__(ref, "key", key)
    object.__setattr__(ref, "store", store)
    return ref


def files_outside(root: Path, inside: Path) -> list[Path]:
    return [p for p in root.rglob("*") if inside != p and inside not in p.parents]


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down (1 != 1.0 != True here; -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- child processes ---------------------------------------------------------------------
# The children run functions defined below, sent as source with ``python -c``: one source of
# truth for make_value/is_valid, and no test-module import (with pytest) in each child.

_CHILD_PRELUDE = """\
from __future__ import annotations

import hashlib, itertools, json, os, random, signal, sys, time, warnings
from typing import Any

from auto_workflow._results._disk import FilesystemArtifactStore, FilesystemResultCache
from auto_workflow._core._model import ArtifactRef
from auto_workflow.exceptions import ArtifactNotFoundError
"""


def _cache_step(cache: FilesystemResultCache, rng: random.Random, counts: dict[str, int]) -> str:
    key = f"key-{rng.randrange(4)}"
    if rng.random() < 0.4:
        payload = os.urandom(rng.choice([16, 4096, 65536])).hex()
        cache.set(key, make_value(key, payload), ttl=rng.choice([None, None, 0.3]))
        counts["cache_writes"] += 1
        return ""
    value = cache.get(key, None)
    counts["cache_hits"] += value is not None
    if value is None or is_valid(key, value):
        return ""
    return f"cache {key}: read a value nobody wrote: {str(value)[:100]}"


def _artifact_step(
    writer: FilesystemArtifactStore,
    reader: FilesystemArtifactStore,
    rng: random.Random,
    mine: list[ArtifactRef],
    counts: dict[str, int],
) -> str:
    if rng.random() < 0.4:
        payload = os.urandom(rng.choice([16, 4096, 65536])).hex()
        mine.append(writer.put(make_value("artifact", payload)))
        if len(mine) > 3:
            writer.delete(mine.pop(0))
        return ""
    names = [n for n in os.listdir(reader.path) if not n.startswith(".")]
    if not names:
        return ""
    key = rng.choice(names).partition(".")[0]  # <key>, or <key>.json and its .sha256
    try:
        value = reader.get(ArtifactRef(key, "filesystem"))
    except ArtifactNotFoundError:
        return ""  # deleted by its writer since the listing; corruption would warn (= raise)
    counts["artifact_hits"] += 1
    return "" if is_valid("artifact", value) else f"artifact {key}: invalid {str(value)[:100]}"


def _concurrent_worker(cache_dir: str, artifact_dir: str, seconds: str, seed: str) -> None:
    warnings.simplefilter("error")  # a CorruptEntryWarning is a failure here
    rng = random.Random(int(seed))
    cache = FilesystemResultCache(cache_dir, prune_interval=0.1)
    writer = FilesystemArtifactStore(artifact_dir, serializer=("pickle", "json")[int(seed) % 2])
    reader = FilesystemArtifactStore(artifact_dir)
    os.makedirs(artifact_dir, exist_ok=True)
    counts = {"cache_writes": 0, "cache_hits": 0, "artifact_hits": 0}
    failures: list[str] = []
    mine: list[ArtifactRef] = []
    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            failures.append(_cache_step(cache, rng, counts))
            failures.append(_artifact_step(writer, reader, rng, mine, counts))
        except Exception as exc:  # noqa: BLE001  (any error is a failure to report)
            failures.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"failures": [f for f in failures if f][:10], **counts}), flush=True)


def _write_forever(
    cache: FilesystemResultCache,
    store: FilesystemArtifactStore,
    payloads: list[bytes],
    artifacts_first: bool,
) -> None:
    previous = None
    for n in itertools.count():
        value = make_value("big", payloads[n % 2] + n.to_bytes(8, "big"))
        ref = store.put(value) if artifacts_first else None
        cache.set("big", value)
        ref = ref or store.put(value)
        if previous is not None:
            store.delete(previous)
        previous = ref


def _kill_launcher(cache_dir: str, artifact_dir: str, seed: str) -> None:
    """For each line on stdin: fork a writer, SIGKILL it after a random delay, reap it."""
    rng = random.Random(int(seed))
    cache = FilesystemResultCache(cache_dir)
    store = FilesystemArtifactStore(artifact_dir)
    payloads = [os.urandom(rng.randrange(1 << 20, 3 << 20)) for _ in range(2)]
    print("ready", flush=True)
    for n in itertools.count():
        if not sys.stdin.readline():
            return
        pid = os.fork()
        if pid == 0:
            try:  # alternate which kind a slow disk gets to finish first
                _write_forever(cache, store, payloads, artifacts_first=n % 2 == 1)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("killed", flush=True)


def _child_source(main: Callable[..., None], *helpers: Callable[..., Any]) -> str:
    functions = [make_value, is_valid, *helpers, main]
    body = "\n\n".join(inspect.getsource(f) for f in functions)
    return f"{_CHILD_PRELUDE}\n{body}\n\n{main.__name__}(*sys.argv[1:])\n"


def _kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()


@contextlib.contextmanager
def children(source: str, argvs: list[list[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one ``python -c source *argv`` per argv; on exit kill stragglers and reap all."""
    with contextlib.ExitStack() as stack:
        procs = []
        for argv in argvs:
            proc = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", source, *argv],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            stack.callback(_kill_if_running, proc)
            procs.append(proc)
        yield procs


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.kill()
        assert proc.stderr is not None
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()}")


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report: dict[str, Any] = json.loads(out.splitlines()[-1])
    return report


# -- round trips -------------------------------------------------------------------------


def test_cache_round_trips_values_exactly(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    values = {"a": {"x": [1, 2.5, "s"]}, "b": (1, 2), "c": b"\x00bytes", "d": lambda x: x + 1}
    for key, value in values.items():
        cache.set(key, value)
    assert cache.get("a", None) == values["a"]
    assert cache.get("b", None) == (1, 2)
    assert cache.get("c", None) == b"\x00bytes"
    assert cache.get("d", None)(1) == 2  # cloudpickle: even a lambda
    assert cache.get("missing", None) is None
    assert len(cache) == 4


def test_cache_stores_none_as_an_entry(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", None)
    assert cache.get("k", None) is None
    assert len(cache) == 1


def test_cache_set_replaces_and_clear_removes_everything(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", 1)
    cache.set("k", 2)
    cache.set("other", 3)
    assert cache.get("k", None) == 2
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    assert cache.get("k", None) is None


def test_cache_persists_across_instances(tmp_path: Path) -> None:
    FilesystemResultCache(tmp_path / "cache").set("k", {"v": 1})
    assert FilesystemResultCache(tmp_path / "cache").get("k", None) == {"v": 1}


def test_artifacts_round_trip_and_persist(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path / "art")
    ref = store.put({"v": (1, 2)})
    none_ref = store.put(None)
    assert ref.store == "filesystem"
    assert len(ref.key) == 32
    assert ref != none_ref
    again = FilesystemArtifactStore(tmp_path / "art")
    assert again.get(ref) == {"v": (1, 2)}
    assert again.get(none_ref) is None
    assert again.exists(ref)


def test_artifact_delete_is_quiet_when_absent(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path / "art")
    ref = store.put(1)
    store.delete(ref)
    store.delete(ref)
    assert not store.exists(ref)
    with pytest.raises(ArtifactNotFoundError, match=ref.key) as caught:
        store.get(ref)
    assert isinstance(caught.value, KeyError)


def test_foreign_artifact_ref_names_its_store(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path / "art")
    ref = ArtifactRef("abc", "memory")
    with pytest.raises(ArtifactNotFoundError, match="'memory' artifact store"):
        store.get(ref)
    assert not store.exists(ref)
    with pytest.raises(ArtifactNotFoundError, match="'memory'"):
        store.delete(ref)


def test_constructing_and_reading_do_not_touch_the_disk(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    store = FilesystemArtifactStore(tmp_path / "art", serializer="json")
    assert cache.get("k", None) is None
    assert len(cache) == 0
    assert cache.prune() == 0
    cache.clear()
    assert not store.exists(ArtifactRef("abc", "filesystem"))
    with pytest.raises(ArtifactNotFoundError):
        store.get(ArtifactRef("abc", "filesystem"))
    assert store.prune() == 0
    assert list(tmp_path.iterdir()) == []


def test_relative_paths_resolve_against_cwd_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cache = FilesystemResultCache("cache")
    store = FilesystemArtifactStore(Path("art"))
    assert cache.path == tmp_path / "cache"
    assert store.path == tmp_path / "art"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cache.set("k", 1)
    ref = store.put(2)
    assert entry_path(cache, "k").is_file()
    assert (tmp_path / "art" / ref.key).is_file()
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_instances_pickle_as_their_configuration(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock, prune_interval=5)
    store = FilesystemArtifactStore(tmp_path / "art", serializer="json")
    cache.set("k", "v")  # used first: the schedule's lock must not travel
    ref = store.put([1])
    cache2 = pickle.loads(pickle.dumps(cache))
    store2 = pickle.loads(pickle.dumps(store))
    assert cache2.path == cache.path
    assert cache2.get("k", None) == "v"
    assert store2.serializer == "json"
    assert store2.get(ref) == [1]
    assert (
        repr(cache2)
        == repr(cache)
        == f"FilesystemResultCache({str(cache.path)!r}, prune_interval=5.0)"
    )
    assert repr(store2) == f"FilesystemArtifactStore({str(store.path)!r}, serializer='json')"


def test_one_cache_instance_is_safe_across_threads(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache", prune_interval=0)
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            key = f"k{rng.randrange(3)}"
            if rng.random() < 0.5:
                cache.set(key, make_value(key, os.urandom(rng.randrange(1, 5000))))
            elif (value := cache.get(key, None)) is not None and not is_valid(key, value):
                failures.append(f"{key}: {value!r:.80}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(cache) == 3


# -- many processes ----------------------------------------------------------------------


def test_processes_share_cache_and_artifact_directories(tmp_path: Path) -> None:
    cache_dir, artifact_dir = tmp_path / "cache", tmp_path / "artifacts"
    source = _child_source(_concurrent_worker, _cache_step, _artifact_step)
    argvs = [[str(cache_dir), str(artifact_dir), "1.5", str(seed)] for seed in range(8)]
    with children(source, argvs) as procs:
        for proc in procs:
            _wait_ready(proc)
        for proc in procs:  # start together, so the loops overlap
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [_report(proc) for proc in procs]
    assert [r["failures"] for r in reports] == [[]] * 8
    assert sum(r["cache_hits"] for r in reports) > 0
    assert sum(r["artifact_hits"] for r in reports) > 0
    cache = FilesystemResultCache(cache_dir)
    for n in range(4):
        value = cache.get(f"key-{n}", None)
        assert value is None or is_valid(f"key-{n}", value)
    store = FilesystemArtifactStore(artifact_dir)
    assert all(is_valid("artifact", store.get(ref)) for ref in artifact_refs(store))


def test_writers_killed_mid_write_never_leave_a_torn_entry(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    store = FilesystemArtifactStore(tmp_path / "art")
    source = _child_source(_kill_launcher, _write_forever)
    hits, artifact_hits, temps = 0, 0, set()
    with children(source, [[str(cache.path), str(store.path), "7"]]) as (launcher,):
        assert launcher.stdin is not None
        assert launcher.stdout is not None
        _wait_ready(launcher)
        for _ in range(20):
            launcher.stdin.write("kill\n")
            launcher.stdin.flush()
            assert launcher.stdout.readline() == "killed\n"
            value = cache.get("big", None)  # a CorruptEntryWarning would fail the test
            assert value is None or is_valid("big", value)
            hits += value is not None
            for ref in artifact_refs(store):
                assert is_valid("big", store.get(ref))
                store.delete(ref)
                artifact_hits += 1
            temps.update(temp_files(tmp_path))
            assert len(cache) <= 1  # temp files are never counted (nor read) as entries
        launcher.stdin.close()
        assert launcher.wait(timeout=10) == 0
    assert hits > 0
    assert artifact_hits > 0
    assert temps, "no kill landed mid-write; the test proved nothing"
    _assert_prune_removes_stale_temp_files(cache, store)


def _assert_prune_removes_stale_temp_files(
    cache: FilesystemResultCache, store: FilesystemArtifactStore
) -> None:
    cache_temps, store_temps = temp_files(cache.path), temp_files(store.path)
    assert cache.prune() == 0  # fresh temp files may be writes in progress
    long_ago = time.time() - 11 * 60
    for temp in cache_temps + store_temps:
        os.utime(temp, (long_ago, long_ago))
    assert cache.prune() == len(cache_temps)
    assert store.prune() == len(store_temps)
    assert temp_files(cache.path) == temp_files(store.path) == []
    assert is_valid("big", cache.get("big", None))


def test_a_complete_entry_under_a_temp_name_is_never_read(tmp_path: Path) -> None:
    donor = FilesystemResultCache(tmp_path / "donor")
    donor.set("k", "value")
    donor_store = FilesystemArtifactStore(tmp_path / "donor-art")
    ref = donor_store.put("value")
    cache = FilesystemResultCache(tmp_path / "cache")
    store = FilesystemArtifactStore(tmp_path / "art")
    target = entry_path(cache, "k")
    target.parent.mkdir(parents=True)
    shutil.copy(entry_path(donor, "k"), target.parent / f".{target.name}.1.ab.tmp")
    store.path.mkdir()
    shutil.copy(donor_store.path / ref.key, store.path / f".{ref.key}.1.ab.tmp")
    assert cache.get("k", None) is None
    assert len(cache) == 0
    assert not store.exists(ref)


# -- corruption --------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_header_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01  # inside stored-at
    path.write_bytes(bytes(data))


def _append_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00")


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an entry " * 20)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _directory(path: Path) -> None:
    path.unlink()
    (path / "inner").mkdir(parents=True)


DAMAGE = [_truncate, _flip_payload_byte, _flip_header_byte, _append_byte, _garbage, _empty]
DAMAGE += [_directory]


@pytest.mark.parametrize("damage", DAMAGE)
def test_corrupt_cache_entry_is_a_warned_miss_and_removed(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", {"v": list(range(100))})
    path = entry_path(cache, "k")
    damage(path)
    with pytest.warns(CorruptEntryWarning, match=path.name):
        assert cache.get("k", None) is None
    assert not path.exists()
    cache.set("k", "recovered")
    assert cache.get("k", None) == "recovered"


@pytest.mark.parametrize("damage", DAMAGE)
def test_corrupt_cache_entry_is_replaced_by_the_next_set(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", 1)
    damage(entry_path(cache, "k"))
    cache.set("k", "recovered")
    assert cache.get("k", None) == "recovered"


@pytest.mark.parametrize("damage", DAMAGE)
def test_corrupt_artifact_is_not_found_with_a_warning(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    store = FilesystemArtifactStore(tmp_path / "art")
    ref = store.put({"v": list(range(100))})
    damage(store.path / ref.key)
    with (
        pytest.warns(CorruptEntryWarning, match=ref.key),
        pytest.raises(ArtifactNotFoundError, match=f"{ref.key}.*corrupt"),
    ):
        store.get(ref)


def test_misplaced_files_are_detected_by_their_stored_key(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("a", "A")
    cache.set("b", "B")
    shutil.copy(entry_path(cache, "a"), entry_path(cache, "b"))
    with pytest.warns(CorruptEntryWarning, match="different key"):
        assert cache.get("b", None) is None
    store = FilesystemArtifactStore(tmp_path / "art")
    ref_a, ref_b = store.put("A"), store.put("B")
    shutil.copy(store.path / ref_a.key, store.path / ref_b.key)
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="corrupt"):
        store.get(ref_b)


def test_unloadable_cache_value_is_a_warned_miss_and_kept(tmp_path: Path) -> None:
    # Intact, but not loadable here (think: a module this process lacks). Another process
    # may load it, so it stays.
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", Unpicklable())
    with pytest.warns(CorruptEntryWarning, match="intact but its value cannot be unpickled"):
        assert cache.get("k", None) is None
    assert len(cache) == 1


def test_unloadable_artifact_is_a_serialization_error_not_a_missing_one(
    tmp_path: Path,
) -> None:
    store = FilesystemArtifactStore(tmp_path / "art")
    ref = store.put(Unpicklable())
    with pytest.raises(SerializationError, match="stored intact") as info:
        store.get(ref)
    assert not isinstance(info.value, KeyError)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert store.exists(ref)


class Unpicklable:
    """Pickles fine, fails to load."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot load me")


def test_corrupt_entry_replaced_meanwhile_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    other_process = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", "old")
    _garbage(entry_path(cache, "k"))
    read_entry = _disk._read_entry

    def replace_then_read(*args: Any) -> Any:
        other_process.set("k", "good")  # lands after our open, before our unlink
        return read_entry(*args)

    monkeypatch.setattr(_disk, "_read_entry", replace_then_read)
    with pytest.warns(CorruptEntryWarning):
        assert cache.get("k", None) is None
    monkeypatch.undo()
    assert cache.get("k", None) == "good"


# -- keys --------------------------------------------------------------------------------

ODD_KEYS = {
    "parent": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "nul": "a\x00b",
    "long": "x" * 100_000,
    "empty": "",
    "dots": "..",
    "backslash": "..\\..\\windows",
    "unicode": "ключ/ü",
    "surrogate": "\ud800",
    "newline": "a\nb",
}


def test_any_string_is_a_cache_key_that_stays_inside_the_directory(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    for name, key in ODD_KEYS.items():
        cache.set(key, name)
    assert {name: cache.get(key, None) for name, key in ODD_KEYS.items()} == {
        name: name for name in ODD_KEYS
    }
    assert len(cache) == len(ODD_KEYS)
    assert files_outside(tmp_path, cache.path) == []
    assert all(len(p.relative_to(cache.path).parts) == 2 for p in cache.path.rglob("*.*"))


@pytest.mark.parametrize("key", [b"bytes", 1, None, ("t",)])
def test_non_str_cache_key_is_rejected_naming_its_type(tmp_path: Path, key: Any) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    with pytest.raises(InvalidKeyError, match=type(key).__name__):
        cache.set(key, 1)
    with pytest.raises(InvalidKeyError, match=type(key).__name__):
        cache.get(key, None)
    assert not cache.path.exists()


def _pickled_ref(key: str) -> ArtifactRef:
    """A ref unpickled from a doctored pickle (protocol 0 spells strings out, unprefixed)."""
    data = pickle.dumps(ArtifactRef("PLACEHOLDER", "filesystem"), protocol=0)
    doctored = data.replace(b"VPLACEHOLDER\n", b"V" + key.encode("raw_unicode_escape") + b"\n")
    ref: ArtifactRef = pickle.loads(doctored)
    return ref


@pytest.mark.parametrize("key", ["../escape", "..", ".", "", "a/../../escape", "/abs", "a\x00"])
@pytest.mark.parametrize("make_ref", [crafted_ref, _pickled_ref])
def test_crafted_artifact_ref_never_escapes_the_directory(
    tmp_path: Path, key: str, make_ref: Callable[[str], ArtifactRef]
) -> None:
    sentinel = tmp_path / "escape"
    sentinel.write_text("keep me")
    store = FilesystemArtifactStore(tmp_path / "art")
    store.put("something")
    ref = make_ref(key)
    assert ref.key == key  # validation was skipped on the way in
    for operation in (store.get, store.exists, store.delete):
        with pytest.raises(InvalidKeyError):
            operation(ref)
    assert sentinel.read_text() == "keep me"
    assert files_outside(tmp_path, store.path) == [sentinel]


# -- time --------------------------------------------------------------------------------


def test_get_misses_once_the_entry_is_ttl_old(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    cache.set("k", "v")
    clock.now += 9.9
    assert cache.get("k", 10) == "v"
    assert cache.get("k", None) == "v"
    assert cache.get("k", 0) is None  # ttl 0 always misses ...
    assert len(cache) == 1  # ... without touching the entry
    clock.now += 0.1
    assert cache.get("k", 10) is None
    assert len(cache) == 0  # an expired entry found by get is removed


def test_no_ttl_means_no_age_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    cache.set("k", "v")
    clock.now += 1e9
    assert cache.get("k", None) == "v"


def test_entry_expires_when_its_writer_said(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    cache.set("k", "v", ttl=5)
    clock.now += 4.9
    assert cache.get("k", None) == "v"
    clock.now += 0.1
    assert cache.get("k", 100) is None
    assert len(cache) == 0


@pytest.mark.parametrize("ttl", [-1, math.nan, "5"])
def test_set_rejects_a_bad_ttl(tmp_path: Path, ttl: Any) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="ttl"):
        cache.set("k", 1, ttl=ttl)


def test_prune_removes_expired_entries_and_keeps_others(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    cache.set("short", 1, ttl=5)
    cache.set("long", 2, ttl=100)
    cache.set("forever", 3)
    clock.now += 10
    assert cache.prune() == 1
    assert len(cache) == 2
    assert not entry_path(cache, "short").exists()
    assert cache.get("long", None) == 2
    assert cache.get("forever", None) == 3


def test_set_prunes_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock, prune_interval=60)
    cache.set("old", 1, ttl=1)  # the first set prunes (nothing yet)
    clock.now += 10
    cache.set("a", 2)  # not due: "old" stays on disk although expired
    assert entry_path(cache, "old").exists()
    clock.now += 51
    cache.set("b", 3)  # due again
    assert not entry_path(cache, "old").exists()
    assert len(cache) == 2


def test_prune_removes_only_stale_temp_files(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    store = FilesystemArtifactStore(tmp_path / "art")
    cache.set("k", 1)
    ref = store.put(1)
    shard = entry_path(cache, "k").parent
    long_ago = time.time() - 11 * 60
    for directory in (shard, store.path):
        for name in (".old.1.aa.tmp", ".fresh.1.bb.tmp", ".not-temp", "stray"):
            (directory / name).write_bytes(b"partial")
        os.utime(directory / ".old.1.aa.tmp", (long_ago, long_ago))
        os.utime(directory / ".not-temp", (long_ago, long_ago))
    assert cache.prune() == 1
    assert store.prune() == 1
    for directory in (shard, store.path):
        remaining = {p.name for p in directory.iterdir()}
        assert remaining >= {".fresh.1.bb.tmp", ".not-temp", "stray"}
        assert ".old.1.aa.tmp" not in remaining
    assert cache.get("k", None) == 1
    assert store.get(ref) == 1


def test_prune_tolerates_files_vanishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    for n in range(5):
        cache.set(f"k{n}", n, ttl=1)
    shard = entry_path(cache, "k0").parent
    (shard / ".gone.1.aa.tmp").write_bytes(b"partial")
    listing = _disk._listing

    def listing_then_vanish(directory: Any) -> Any:
        entries = listing(directory)
        for entry in entries:
            if entry.is_file():
                os.unlink(entry.path)  # another process got there first
        return entries

    monkeypatch.setattr(_disk, "_listing", listing_then_vanish)
    clock.now += 10
    assert cache.prune() == 0
    assert cache.get("k1", None) is None


def test_expired_entry_replaced_meanwhile_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    cache = FilesystemResultCache(tmp_path / "cache", clock=clock)
    cache.set("k", "old", ttl=1)
    clock.now += 10
    parse_header = _disk._parse_header

    def replace_then_parse(*args: Any) -> Any:
        cache.set("k", "new")  # another writer, between prune's open and its unlink
        return parse_header(*args)

    monkeypatch.setattr(_disk, "_parse_header", replace_then_parse)
    assert _disk._prune_expired(str(entry_path(cache, "k")), clock.now) is False
    monkeypatch.undo()
    assert cache.get("k", None) == "new"


# -- serialization -----------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


def _circular() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


JSON_REJECTS = [
    ((1, 2), "value is a tuple"),
    ({1, 2}, "value is a set"),
    ({1: "a"}, "value has a key 1 of type int"),
    (math.nan, "value is the float nan"),
    (-math.inf, "value is the float -inf"),
    (object(), "value is an object"),
    (b"x", "value is a bytes"),
    ({"a": [1, 2, (3,)]}, r"value\['a'\]\[2\] is a tuple"),
    ([{"b": {2: 0}}], r"value\[0\]\['b'\] has a key 2 of type int"),
    ({"c": Color.RED}, r"value\['c'\] is a test_disk.Color"),
    (OrderedDict(a=1), "value is a collections.OrderedDict"),
    (_circular(), r"value\[1\] contains itself"),
]


@pytest.mark.parametrize(("value", "message"), JSON_REJECTS)
def test_json_serializer_rejects_what_it_cannot_round_trip(
    tmp_path: Path, value: Any, message: str
) -> None:
    store = FilesystemArtifactStore(tmp_path / "art", serializer="json")
    with pytest.raises(TypeError, match=f"^{message}.*serializer='pickle'") as caught:
        store.put(value)
    assert isinstance(caught.value, SerializationError)
    assert not store.path.exists()


def test_json_serializer_round_trips_allowed_values_exactly(tmp_path: Path) -> None:
    value = {
        "str": "ü\ud800\n\"'",
        "ints": [0, -1, 10**30, True, False],
        "floats": [0.1, -0.0, 1e308, 5e-324, 2.0],
        "none": None,
        "nested": [[], {}, [1, [2, [3, {"": ""}]]]],
    }
    store = FilesystemArtifactStore(tmp_path / "art", serializer="json")
    ref = store.put(value)
    assert same(FilesystemArtifactStore(tmp_path / "art", serializer="json").get(ref), value)
    assert same(FilesystemArtifactStore(tmp_path / "art").get(ref), value)


def test_json_store_never_unpickles(tmp_path: Path) -> None:
    ref = FilesystemArtifactStore(tmp_path / "art").put({"v": 1})
    with pytest.raises(ArtifactNotFoundError, match="never unpickles"):
        FilesystemArtifactStore(tmp_path / "art", serializer="json").get(ref)


@pytest.mark.parametrize("serializer", ["yaml", "", "PICKLE"])
def test_unknown_serializer_lists_the_allowed_ones(tmp_path: Path, serializer: str) -> None:
    with pytest.raises(ValueError, match="'pickle', 'json'"):
        FilesystemArtifactStore(tmp_path, serializer=serializer)


def _generator() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(("make", "name"), [(threading.Lock, "lock"), (_generator, "generator")])
def test_unpicklable_value_is_a_type_error_and_writes_nothing(
    tmp_path: Path, make: Callable[[], Any], name: str
) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    store = FilesystemArtifactStore(tmp_path / "art")
    with pytest.raises(TypeError, match=f"value of type dict.*{name}"):
        cache.set("k", {"inner": make()})
    with pytest.raises(SerializationError, match=f"value of type \\S*{name}"):
        cache.set("k", make())
    with pytest.raises(SerializationError, match=f"value of type \\S*{name}"):
        store.put(make())
    assert list(tmp_path.iterdir()) == []


def test_unpicklable_value_leaves_the_old_entry(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", "old")
    with pytest.raises(SerializationError):
        cache.set("k", threading.Lock())
    assert cache.get("k", None) == "old"
    assert temp_files(tmp_path) == []


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", "old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        cache.set("k", "new")
    monkeypatch.undo()
    assert cache.get("k", None) == "old"
    assert temp_files(tmp_path) == []


def test_warnings_point_at_the_caller(tmp_path: Path) -> None:
    cache = FilesystemResultCache(tmp_path / "cache")
    cache.set("k", 1)
    _garbage(entry_path(cache, "k"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache.get("k", None)
    assert [Path(w.filename).name for w in caught] == ["test_disk.py"]


# -- json artifacts other tools can read ------------------------------------------------------


def test_a_json_artifact_is_a_plain_json_file_with_a_sha256sum_checksum(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path, serializer="json")
    value = {"rows": [1, 2.5, None], "name": "caf\u00e9"}
    ref = store.put(value)
    data = tmp_path / f"{ref.key}.json"
    assert json.loads(data.read_text(encoding="utf-8")) == value  # no binary header
    checksum = (tmp_path / f"{ref.key}.json.sha256").read_text()
    assert checksum == f"{hashlib.sha256(data.read_bytes()).hexdigest()}  {ref.key}.json\n"
    assert store.get(ref) == value
    assert FilesystemArtifactStore(tmp_path).get(ref) == value  # a pickle store reads it too
    assert store.exists(ref)
    store.delete(ref)
    assert not store.exists(ref)
    assert sorted(tmp_path.iterdir()) == []


def test_a_json_artifact_edited_on_disk_is_corrupt_not_trusted(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path, serializer="json")
    ref = store.put([1, 2, 3])
    (tmp_path / f"{ref.key}.json").write_text("[1, 2, 4]")
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="checksum"):
        store.get(ref)
    (tmp_path / f"{ref.key}.json.sha256").unlink()
    with pytest.warns(CorruptEntryWarning), pytest.raises(ArtifactNotFoundError, match="missing"):
        store.get(ref)


def test_a_ref_rebuilt_from_its_key_reads_from_the_store_it_is_given(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path, serializer="json")
    saved = json.dumps({"key": store.put({"a": 1}).key})  # what yesterday's run wrote down
    ref = ArtifactRef(json.loads(saved)["key"])
    assert ref.store is None
    assert repr(ref) == f"ArtifactRef({ref.key!r})"
    assert store.get(ref) == {"a": 1}
    assert FilesystemArtifactStore(tmp_path).get(ArtifactRef(**json.loads(saved))) == {"a": 1}

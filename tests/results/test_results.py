"""Caching and persistence as the engine applies them: keys, de-duplication, backends."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from auto_workflow import fan_out, flow, subscribe, task
from auto_workflow._core._calls import CallRunner
from auto_workflow._core._context import RunContext
from auto_workflow._core._plugins import DEFAULTS
from auto_workflow.artifacts import (
    ArtifactRef,
    FilesystemArtifactStore,
    MemoryArtifactStore,
    get_store,
    set_store,
)
from auto_workflow.cache import (
    FilesystemResultCache,
    MemoryResultCache,
    get_result_cache,
    set_result_cache,
)
from auto_workflow.config import reload_config
from auto_workflow.exceptions import (
    ArtifactNotFoundError,
    CacheKeyWarning,
    TaskExecutionError,
)
from auto_workflow.metrics_provider import InMemoryMetrics, set_metrics_provider


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# -- the default key as the engine uses it -------------------------------------------------


def test_defaults_are_applied_so_positional_and_keyword_calls_share_an_entry() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    def scale(a: int, factor: int = 2) -> int:
        runs.append(a)
        return a * factor

    assert scale(3) == 6
    assert scale(a=3) == 6
    assert scale(3, 2) == 6
    assert scale(factor=2, a=3) == 6
    assert runs == [3]
    assert scale(3, 3) == 9
    assert runs == [3, 3]


def test_unkeyable_argument_runs_uncached_and_warns_naming_task_and_argument() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    def use_lock(n: int, guard: Any) -> int:
        runs.append(n)
        return n + 1

    lock = threading.Lock()
    with pytest.warns(CacheKeyWarning, match=r"use_lock.*guard"):
        assert use_lock(1, lock) == 2
    with pytest.warns(CacheKeyWarning):
        assert use_lock(1, lock) == 2
    assert runs == [1, 1]


def test_cache_key_fn_that_raises_or_returns_a_non_string_is_a_clear_error() -> None:
    def broken(fn: Any, args: Any, kwargs: Any) -> str:
        raise LookupError("no key today")

    def numeric(fn: Any, args: Any, kwargs: Any) -> str:
        return 42  # type: ignore[return-value]

    @task(cache_ttl=60, cache_key_fn=broken)
    def a() -> int:
        return 1

    @task(cache_ttl=60, cache_key_fn=numeric)
    def b() -> int:
        return 1

    with pytest.raises(TaskExecutionError, match="cache_key_fn raised") as info:
        a()
    assert isinstance(info.value.original, LookupError)
    with pytest.raises(TaskExecutionError, match="must return a str; got int"):
        b()


def test_explain_cache_key_shows_why_calls_share_or_do_not_share_a_key() -> None:
    @task(cache_ttl=60)
    def load(path: str, limit: int = 10) -> str:
        return path

    same = load.explain_cache_key("a.csv")
    assert same.key == load.explain_cache_key(path="a.csv", limit=10).key
    other = load.explain_cache_key("a.csv", 11)
    assert other.key != same.key
    assert list(same.arguments) == ["path", "limit"]
    assert same.arguments["path"] == other.arguments["path"]
    assert same.arguments["limit"] != other.arguments["limit"]
    assert any("limit" in reason for reason in same.diff(other))


# -- in-flight de-duplication --------------------------------------------------------------


def test_identical_cached_calls_in_flight_run_once() -> None:
    runs: list[int] = []
    metrics = InMemoryMetrics()
    set_metrics_provider(metrics)
    seen: list[dict[str, Any]] = []
    subscribe("task_cached", lambda name, payload: seen.append(payload))

    @task(cache_ttl=60)
    async def fetch(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)
        return x * 100

    @flow
    def many() -> Any:
        return [fetch(1) for _ in range(5)] + [fetch(2)]

    assert many.run() == [100] * 5 + [200]
    assert sorted(runs) == [1, 2]
    assert metrics.counters["dedup_joins"] == 4
    assert sorted(p["source"] for p in seen) == ["in_flight"] * 4


def test_when_the_leader_fails_every_follower_gets_the_failure() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    async def doomed(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)
        raise ValueError(f"bad {x}")

    @flow
    def many() -> Any:
        return [doomed(1) for _ in range(3)]

    results = many.run(failure_policy="continue")
    assert runs == [1]
    assert len(results) == 3
    for err in results:
        assert isinstance(err, TaskExecutionError)
        assert isinstance(err.original, ValueError)
        assert "bad 1" in str(err)
    assert len({id(e) for e in results}) == 3  # each node has its own error object


async def test_when_the_leader_is_cancelled_a_follower_takes_over() -> None:
    runs: list[str] = []
    gate = asyncio.Event()

    def by_argument(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return f"slow:{args[0]}"  # the task closes over an Event, which has no default key

    @task(cache_ttl=60, cache_key_fn=by_argument)
    async def slow(x: int) -> int:
        runs.append("start")
        await gate.wait()
        return x + 1

    base = RunContext(run_id="r", flow_name="f")
    calls = CallRunner(base, DEFAULTS.snapshot(), 4)
    leader = asyncio.create_task(calls.call(slow, "n0", (1,), {}))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(calls.call(slow, "n1", (1,), {}))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    value, how = await asyncio.wait_for(follower, 5)
    assert (value, how) == (2, 1)  # it ran (one attempt) rather than reuse a result
    assert runs == ["start", "start"]
    with pytest.raises(asyncio.CancelledError):
        await leader
    calls.close()


def test_no_deduplication_for_uncached_or_ttl_zero_tasks() -> None:
    runs: list[str] = []

    @task
    async def plain(x: int) -> int:
        runs.append("plain")
        await asyncio.sleep(0.01)
        return x

    @task(cache_ttl=0)
    async def never(x: int) -> int:
        runs.append("never")
        await asyncio.sleep(0.01)
        return x

    @flow
    def both() -> Any:
        return [plain(1), plain(1), never(1), never(1)]

    assert both.run() == [1, 1, 1, 1]
    assert sorted(runs) == ["never", "never", "plain", "plain"]


# -- events and metrics --------------------------------------------------------------------


def test_cache_hit_emits_task_cached_and_marks_task_succeeded() -> None:
    cached: list[dict[str, Any]] = []
    succeeded: list[dict[str, Any]] = []
    subscribe("task_cached", lambda name, payload: cached.append(payload))
    subscribe("task_succeeded", lambda name, payload: succeeded.append(payload))

    @task(cache_ttl=60)
    def double(x: int) -> int:
        return 2 * x

    @flow
    def once() -> int:
        return double(4)

    assert once.run() == 8
    assert once.run() == 8
    assert [p["cached"] for p in succeeded] == [False, True]
    assert len(cached) == 1
    assert cached[0]["source"] == "cache"
    assert cached[0]["task"] == "double"
    assert cached[0]["flow"] == "once"


# -- backends: chosen by configuration, in code, per run -----------------------------------


def test_ttl_expiry_follows_the_cache_clock() -> None:
    clock = FakeClock()
    set_result_cache(MemoryResultCache(clock=clock))
    runs: list[int] = []

    @task(cache_ttl=30)
    def stamp(x: int) -> int:
        runs.append(x)
        return x

    stamp(1)
    clock.now += 29.9
    stamp(1)
    assert runs == [1]
    clock.now += 0.1
    stamp(1)
    assert runs == [1, 1]


def test_memory_cache_sweeps_entries_past_their_writer_ttl() -> None:
    clock = FakeClock()
    cache = MemoryResultCache(clock=clock)
    for i in range(MemoryResultCache._SWEEP_EVERY - 1):
        cache.set(f"k{i}", (i,), ttl=10)
    clock.now += 11
    cache.set("keep", (1,))
    assert len(cache) == 1
    assert cache.get("keep", None) == (1,)


def test_lru_bound_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES", "2")
    reload_config()
    try:
        runs: list[int] = []

        @task(cache_ttl=60)
        def ident(x: int) -> int:
            runs.append(x)
            return x

        for x in (1, 2, 3, 1):
            ident(x)
        assert runs == [1, 2, 3, 1]  # 1 was evicted when 3 came in
        assert len(get_result_cache()) == 2  # type: ignore[arg-type]
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES")
        reload_config()


def test_configuration_selects_filesystem_backends_and_reload_switches_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_PATH", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH", str(tmp_path / "art"))
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_SERIALIZER", "json")
    reload_config()
    try:
        cache, store = get_result_cache(), get_store()
        assert isinstance(cache, FilesystemResultCache)
        assert cache.path == tmp_path / "cache"
        assert isinstance(store, FilesystemArtifactStore)
        assert (store.path, store.serializer) == (tmp_path / "art", "json")

        @task(cache_ttl=60, persist=True)
        def report(n: int) -> dict[str, int]:
            return {"n": n}

        ref = report(3)
        assert ref.store == "filesystem"
        assert report(3) == ref  # the cached ref, its artifact still there
        assert get_store().get(ref) == {"n": 3}
        assert any((tmp_path / "art").rglob("*"))
        assert any((tmp_path / "cache").rglob("*"))
    finally:
        for name in ("RESULT_CACHE", "RESULT_CACHE_PATH", "ARTIFACT_STORE"):
            monkeypatch.delenv(f"AUTO_WORKFLOW_{name}")
        monkeypatch.delenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH")
        monkeypatch.delenv("AUTO_WORKFLOW_ARTIFACT_SERIALIZER")
        reload_config()
    assert isinstance(get_result_cache(), MemoryResultCache)
    assert isinstance(get_store(), MemoryArtifactStore)


def test_backend_set_in_code_wins_over_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = MemoryResultCache()
    set_result_cache(mine)
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_PATH", str(tmp_path))
    reload_config()
    try:
        assert get_result_cache() is mine
        set_result_cache(None)
        assert isinstance(get_result_cache(), FilesystemResultCache)
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_RESULT_CACHE")
        monkeypatch.delenv("AUTO_WORKFLOW_RESULT_CACHE_PATH")
        reload_config()


class RecordingCache:
    """A custom backend with the two-method protocol only (no ttl keyword)."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}
        self.ttls: list[float | None] = []

    def get(self, key: str, ttl: float | None) -> Any:
        self.ttls.append(ttl)
        return self.entries.get(key)

    def set(self, key: str, value: Any) -> None:
        self.entries[key] = value


def test_per_run_cache_and_store_are_used_instead_of_the_defaults() -> None:
    cache, store = RecordingCache(), MemoryArtifactStore()

    @task(cache_ttl=45, persist=True)
    def make(x: int) -> int:
        return x

    @task
    def read(ref: ArtifactRef) -> Any:
        return get_store().get(ref)  # the run's store, not the default one

    @flow
    def pipeline() -> Any:
        return read(make(5))

    assert pipeline.run(result_cache=cache, artifact_store=store) == 5
    assert len(cache.entries) == 1
    assert cache.ttls == [45]
    assert len(get_result_cache()) == 0  # type: ignore[arg-type]
    (value,) = next(iter(cache.entries.values()))
    assert store.get(value) == 5
    with pytest.raises(ArtifactNotFoundError):
        get_store().get(value)


def test_per_run_backends_are_checked_before_anything_runs() -> None:
    @flow
    def nothing() -> None:
        return None

    with pytest.raises(TypeError, match=r"result_cache must have get\(key, ttl\)"):
        nothing.run(result_cache=object())
    with pytest.raises(TypeError, match=r"artifact_store must have put\(value\)"):
        nothing.run(artifact_store=42)


def test_a_failing_cache_backend_costs_the_entry_never_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def get(self, key: str, ttl: float | None) -> Any:
            raise OSError("disk gone")

        def set(self, key: str, value: Any) -> None:
            raise OSError("disk gone")

    set_result_cache(Broken())

    @task(cache_ttl=60)
    def fine(x: int) -> int:
        return x + 1

    @flow
    def many() -> list[int]:
        return [fine(i) for i in range(5)]

    with caplog.at_level(logging.DEBUG, logger="auto_workflow"):
        assert many.run() == [1, 2, 3, 4, 5]
    troubles = [r for r in caplog.records if "result cache failed" in r.getMessage()]
    assert [r.levelno for r in troubles].count(logging.WARNING) == 1  # once per run, loudly
    assert troubles[0].exc_info is not None
    assert "get()" in troubles[0].getMessage()
    assert any("set()" in r.getMessage() for r in troubles[1:])
    assert all(r.levelno == logging.DEBUG for r in troubles[1:])


# -- persistence ---------------------------------------------------------------------------


def test_persisted_and_cached_result_reruns_when_its_artifact_is_gone() -> None:
    runs: list[int] = []
    store = MemoryArtifactStore()
    set_store(store)

    @task(cache_ttl=60, persist=True)
    def build(x: int) -> list[int]:
        runs.append(x)
        return [x] * 3

    first = build(1)
    assert build(1) == first
    assert runs == [1]
    store.delete(first)
    second = build(1)
    assert runs == [1, 1]
    assert second != first
    assert get_store().get(second) == [1, 1, 1]


def test_json_store_fails_the_task_naming_the_type(tmp_path: Path) -> None:
    set_store(FilesystemArtifactStore(tmp_path, serializer="json"))

    @task(persist=True)
    def bad() -> Any:
        return {"when": {1, 2}}

    with pytest.raises(TaskExecutionError, match="set") as info:
        bad()
    assert isinstance(info.value.original, TypeError)
    assert "persisted" in str(info.value)


def test_process_task_resolves_refs_from_a_filesystem_store(tmp_path: Path) -> None:
    @task(persist=True)
    def produce(n: int) -> list[int]:
        return list(range(n))

    @task(run_in="process")
    def consume(ref: ArtifactRef) -> int:
        return sum(get_store().get(ref))

    @flow
    def pipeline() -> int:
        return consume(produce(10))

    store = FilesystemArtifactStore(tmp_path)
    assert pipeline.run(artifact_store=store) == 45


def test_process_task_with_a_memory_store_gets_an_error_saying_what_to_do() -> None:
    @task(persist=True)
    def produce() -> int:
        return 1

    @task(run_in="process")
    def consume(ref: ArtifactRef) -> int:
        return int(get_store().get(ref))

    @flow
    def pipeline() -> int:
        return consume(produce())

    with pytest.raises(TaskExecutionError, match="filesystem") as info:
        pipeline.run()
    assert isinstance(info.value.original, KeyError)


def test_fan_out_of_a_cached_task_hits_per_element() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    def sq(x: int) -> int:
        runs.append(x)
        return x * x

    @flow
    def squares() -> Any:
        return fan_out(sq, [1, 2, 3, 2])

    assert squares.run() == [1, 4, 9, 4]
    assert squares.run() == [1, 4, 9, 4]
    assert sorted(runs) == [1, 2, 3]


class ClientHoldingStore(MemoryArtifactStore):
    """A custom store that cannot be pickled (it holds a lock, as a client would)."""

    def __init__(self) -> None:
        super().__init__()
        self.client = threading.Lock()

    def __reduce__(self) -> Any:
        return object.__reduce__(self)


@task(run_in="process")
def _double_in_a_worker(x: int) -> tuple[int, str]:
    return 2 * x, type(get_store()).__name__


def test_an_unpicklable_custom_store_stays_behind_and_process_tasks_still_run() -> None:
    @flow
    def pipeline() -> Any:
        return _double_in_a_worker(21)

    value, store_kind = pipeline.run(artifact_store=ClientHoldingStore())
    assert value == 42
    assert store_kind == "MemoryArtifactStore"  # the worker's own default store


def test_a_result_the_filesystem_cache_cannot_pickle_is_returned_and_not_cached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_result_cache(FilesystemResultCache(tmp_path))
    runs: list[int] = []

    @task(cache_ttl=60)
    def make_lock(n: int) -> Any:
        runs.append(n)
        return threading.Lock()

    with caplog.at_level(logging.WARNING, logger="auto_workflow"):
        first = make_lock(1)
        second = make_lock(1)
    assert type(first) is type(threading.Lock())
    assert second is not first
    assert runs == [1, 1]
    warned = [r for r in caplog.records if "result not cached" in r.getMessage()]
    assert len(warned) == 2
    assert "a _thread.lock value cannot be stored" in warned[0].getMessage()
    assert "tuple" not in warned[0].getMessage()  # not the engine's own wrapper
    assert all(r.levelno == logging.WARNING for r in warned)


_SHARED_FLOW = """
import json, os, sys
from auto_workflow import flow, task

@task(cache_ttl=3600)
def slow_square(x: int) -> int:
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(f"{x}\\n")
    return x * x

@flow
def squares(n: int) -> list:
    return [slow_square(i) for i in range(n)]

print(json.dumps(squares.run(int(sys.argv[1]))))
"""


def test_a_filesystem_cache_is_shared_by_separate_processes(tmp_path: Path) -> None:
    script = tmp_path / "shared.py"
    script.write_text(_SHARED_FLOW)
    log = tmp_path / "runs.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")},
        "AUTO_WORKFLOW_RESULT_CACHE": "filesystem",
        "AUTO_WORKFLOW_RESULT_CACHE_PATH": str(tmp_path / "cache"),
        "RUN_LOG": str(log),
    }
    for n, seed in ((3, "1"), (5, "2")):  # a different hash seed in each interpreter
        done = subprocess.run(
            [sys.executable, str(script), str(n)],
            env={**env, "PYTHONHASHSEED": seed},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout) == [i * i for i in range(n)]
    assert sorted(map(int, log.read_text().split())) == [0, 1, 2, 3, 4]  # 0-2 ran once


def test_threads_making_the_default_cache_at_once_share_one() -> None:
    barrier = threading.Barrier(8)
    caches: list[object] = []
    stores: list[object] = []

    def first_use() -> None:
        barrier.wait()
        caches.append(get_result_cache())
        stores.append(get_store())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(caches) == len(stores) == 8
    assert len({id(x) for x in caches}) == 1
    assert len({id(x) for x in stores}) == 1


_SCRIPT_AND_CLI = """
import json, os
from auto_workflow import flow, task

@task(cache_ttl=3600)
def cube(x: int) -> int:
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(f"{x}\\n")
    return x ** 3

@flow
def cubes(n: int) -> list:
    return [cube(i) for i in range(n)]

if __name__ == "__main__":
    print(json.dumps(cubes.run(3)))
"""


def test_a_script_run_directly_and_through_the_cli_share_cache_entries(tmp_path: Path) -> None:
    (tmp_path / "pipe.py").write_text(_SCRIPT_AND_CLI)
    log = tmp_path / "runs.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")},
        "AUTO_WORKFLOW_RESULT_CACHE": "filesystem",
        "AUTO_WORKFLOW_RESULT_CACHE_PATH": str(tmp_path / "cache"),
        "AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS": "1",
        "RUN_LOG": str(log),
    }
    commands = [
        [sys.executable, "pipe.py"],  # the module is __main__ here
        [sys.executable, "-m", "auto_workflow", "run", "pipe.py:cubes", "--arg", "n=4"],
    ]
    for command in commands:
        subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, check=True, timeout=60)
    assert sorted(map(int, log.read_text().split())) == [0, 1, 2, 3]


async def test_concurrent_direct_calls_and_runs_on_one_loop_share_flights() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    async def fetch(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)
        return x + 100

    @flow
    def one(x: int) -> int:
        return fetch(x)

    values = await asyncio.gather(
        fetch.run_async(1), fetch.run_async(1), one.run_async(1), one.run_async(2)
    )
    assert values == [101, 101, 101, 102]
    assert sorted(runs) == [1, 2]


async def test_runs_with_different_caches_do_not_share_flights() -> None:
    runs: list[int] = []

    @task(cache_ttl=60)
    async def fetch(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)
        return x

    @flow
    def one() -> int:
        return fetch(7)

    await asyncio.gather(
        one.run_async(result_cache=MemoryResultCache()),
        one.run_async(result_cache=MemoryResultCache()),
    )
    assert runs == [7, 7]


def test_factory_tasks_closing_over_objects_run_uncached_never_share() -> None:
    class Settings:
        def __init__(self, rate: int) -> None:
            self.rate = rate

    def make(settings: Settings) -> Any:
        @task(cache_ttl=600)
        def price(x: int) -> int:
            return x * settings.rate

        return price

    cheap, dear = make(Settings(2)), make(Settings(3))
    with pytest.warns(CacheKeyWarning, match="closure variable 'settings'"):
        assert cheap(10) == 20
    with pytest.warns(CacheKeyWarning):
        assert dear(10) == 30


async def test_runs_with_different_artifact_stores_do_not_share_flights() -> None:
    @task(cache_ttl=60, persist=True)
    async def make(x: int) -> dict[str, int]:
        await asyncio.sleep(0.05)
        return {"x": x}

    @task
    def use(ref: ArtifactRef) -> int:
        return int(get_store().get(ref)["x"])

    @flow
    def pipeline() -> int:
        return use(make(1))

    results = await asyncio.gather(
        pipeline.run_async(artifact_store=MemoryArtifactStore()),
        pipeline.run_async(artifact_store=MemoryArtifactStore()),
    )
    assert results == [1, 1]


async def test_a_nested_call_sharing_its_callers_key_runs_instead_of_waiting_forever() -> None:
    def same_key(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return f"shared:{args[0]}"

    @task(cache_ttl=60, cache_key_fn=same_key)
    async def inner(x: int) -> str:
        return f"inner {x}"

    @task(cache_ttl=60, cache_key_fn=same_key)
    async def outer(x: int) -> str:
        return "outer wraps " + await inner.run_async(x)

    result = await asyncio.wait_for(outer.run_async(1), 5)
    assert result == "outer wraps inner 1"


def test_a_memory_cache_made_directly_honours_the_configured_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES", "2")
    reload_config()
    try:
        cache = MemoryResultCache()
        for key in ("a", "b", "c"):
            cache.set(key, (1,))
        assert len(cache) == 2
        assert cache.get("a", None) is None
        unbounded = MemoryResultCache(None)  # None, said out loud: no bound
        for key in ("a", "b", "c"):
            unbounded.set(key, (1,))
        assert len(unbounded) == 3
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES")
        reload_config()


def test_a_ref_rebuilt_from_a_saved_key_reads_from_the_configured_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auto_workflow.artifacts import get_store

    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE", "filesystem")
    monkeypatch.setenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH", str(tmp_path))
    reload_config()
    try:

        @task(persist=True)
        def report() -> dict[str, int]:
            return {"rows": 3}

        key = report().key  # yesterday's run saved only the key
        assert get_store().get(ArtifactRef(key)) == {"rows": 3}
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_ARTIFACT_STORE")
        monkeypatch.delenv("AUTO_WORKFLOW_ARTIFACT_STORE_PATH")
        reload_config()

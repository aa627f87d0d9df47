"""The Dask executor: the same flows give the same results on a cluster, faults map to ours.

Two clusters: an in-process ``LocalCluster(processes=False)`` for speed, and a real one, a
``dask scheduler`` and two ``dask worker`` processes started here on 127.0.0.1 and reached
by address (the scheduler runs with ``allowed-failures=0``, as the embedded cluster does, so
a worker death reaches our retries at once). Without ``distributed`` these tests skip, or
fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import distributed
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise  # in CI the extra is installed: its absence is a failure, not a skip
    pytest.skip("distributed is not installed (pip install 'auto-workflow[dask]')", True)

from auto_workflow import FailurePolicy, fan_out, flow, get_context, subscribe, task
from auto_workflow._history._engine import close_all
from auto_workflow.artifacts import FilesystemArtifactStore
from auto_workflow.cache import FilesystemResultCache, MemoryResultCache
from auto_workflow.config import reload_config
from auto_workflow.dask import DaskExecutor
from auto_workflow.exceptions import (
    AggregateTaskError,
    ClusterUnavailableError,
    SerializationError,
    TaskExecutionError,
    TimeoutError,
    UpstreamFailedError,
    WorkerCrashedError,
)
from procs import children_of, free_port, stop_groups

pytestmark = pytest.mark.timeout(120)  # a shared, noisy 2-core machine: generous

DASK = Path(sys.executable).with_name("dask")
MARKERS: Path | None = None  # set per test: where tasks leave marker files
CLUSTER_PIDS: set[int] = set()  # the real cluster's processes (not leaks)
_DASK_THREADS = ("IO loop", "ThreadPoolExecutor")  # the in-process cluster's own threads


# -- clusters -------------------------------------------------------------------------------


def _wait_for_workers(address: str, count: int, seconds: float) -> None:
    with distributed.Client(address, timeout=seconds) as client:
        client.wait_for_workers(count, timeout=seconds)


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded workers, separate processes; its address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    cwd = tmp_path_factory.mktemp("cluster")  # workers cannot import the tests from here
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    env.pop("PYTHONPATH", None)
    common = {"cwd": cwd, "env": env, "start_new_session": True}
    sched = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    procs = [subprocess.Popen([*sched, "--no-dashboard"], **common)]  # type: ignore[call-overload]
    worker = [str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1"]
    worker += ["--host", "127.0.0.1", "--no-dashboard"]
    try:
        procs += [subprocess.Popen(worker, **common) for _ in range(2)]  # type: ignore[call-overload]
        CLUSTER_PIDS.update(p.pid for p in procs)
        _wait_for_workers(address, 2, 60)
        yield address
    finally:
        stop_groups(procs)
        CLUSTER_PIDS.difference_update(p.pid for p in procs)


@pytest.fixture(scope="module")
def inproc() -> Iterator[str]:
    """An in-process LocalCluster (threads, no processes): fast."""
    with distributed.LocalCluster(
        processes=False,
        n_workers=2,
        threads_per_worker=1,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # 8787 may be taken
    ) as cluster:
        # Warm up once, so the threads Dask starts lazily and keeps exist before any test.
        _arith.run(executor=DaskExecutor(address=cluster.scheduler_address))
        yield cluster.scheduler_address


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Path) -> Iterator[None]:
    """This module's leak check: the module's clusters are expected; nothing else is."""
    global MARKERS
    MARKERS = tmp_path
    threads = set(threading.enumerate())
    children = children_of()

    def extra_children() -> set[int]:
        return children_of() - children - CLUSTER_PIDS

    yield
    close_all()  # the history's writer thread lingers between runs on purpose
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and extra_children():
        time.sleep(0.1)
    assert not extra_children(), "a test left child processes behind"
    new = {t.name for t in set(threading.enumerate()) - threads if t.is_alive()}
    new = {n for n in new if "Dask" not in n and not n.startswith(_DASK_THREADS)}
    assert not new, f"a test left threads behind: {sorted(new)}"


@pytest.fixture(params=["inproc", "real"])
def address(request: pytest.FixtureRequest) -> str:
    name = "inproc" if request.param == "inproc" else "real_cluster"
    value: str = request.getfixturevalue(name)
    return value


def _marker(name: str) -> Path:
    assert MARKERS is not None
    return MARKERS / name


# -- tasks and flows (module level: shipped to the workers by value) ---------------------------


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def upto(n: int) -> list[int]:
    return list(range(n))


@task
async def label(x: int) -> str:
    return f"n={x}"


@flow
def _arith() -> list[Any]:
    static = fan_out(inc, [1, 2, 3])
    dynamic = fan_out(inc, upto(4))
    both = total([total(static), total(dynamic)])
    return [both, label(both), static, dynamic]


@task(retries=2)
def flaky(x: int, marker: str) -> int:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise ValueError("first attempt fails")
    return x * 10


@task
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


@flow
def _policies(marker: str) -> list[Any]:
    bad = boom(1)
    return [flaky(2, marker), inc(bad), inc(5)]


@task(persist=True)
def keep(x: int) -> dict[str, int]:
    return {"x": x}


@task(cache_ttl=3600)
def cached_square(x: int) -> int:
    return x * x


@task
def produce(x: int) -> int:
    return x + 100


@flow
def _stores() -> list[Any]:
    return [keep(3), cached_square(produce(1)), cached_square(4)]


@task
def record(name: str, log: str) -> str:
    with open(log, "a") as fh:
        fh.write(name + "\n")
    return name


@flow
def _priorities(log: str) -> list[str]:
    return [record.with_options(priority=p)(f"p{p}", log) for p in (1, 5, 3, 9, 2)]


# -- acceptance: the same results as the local executor -------------------------------------


def test_fan_out_and_chains_match_the_local_executor(address: str) -> None:
    assert _arith.run(executor=DaskExecutor(address=address)) == _arith.run()


def test_retries_and_failure_policies_match_the_local_executor(address: str) -> None:
    results = {}
    for where in ("local", "dask"):
        marker = str(_marker(f"flaky-{where}"))
        executor = DaskExecutor(address=address) if where == "dask" else "local"
        out = _policies.run(marker, failure_policy="continue", executor=executor)
        results[where] = [v if not isinstance(v, TaskExecutionError) else type(v) for v in out]
        with pytest.raises(AggregateTaskError) as info:
            _policies.run(marker, failure_policy=FailurePolicy.AGGREGATE, executor=executor)
        assert [e.task_name for e in info.value.errors] == ["boom"]
        with pytest.raises(TaskExecutionError, match="boom 1"):
            _policies.run(marker, executor=executor)
    assert results["dask"] == results["local"]
    assert results["dask"][0] == 20  # flaky was retried on the cluster


def test_persist_and_cache_match_the_local_executor(address: str, tmp_path: Path) -> None:
    outs = []
    for where in ("local", "dask"):
        store = FilesystemArtifactStore(tmp_path / f"artifacts-{where}")
        cache = FilesystemResultCache(tmp_path / f"cache-{where}")
        executor = DaskExecutor(address=address) if where == "dask" else "local"
        first = _stores.run(artifact_store=store, result_cache=cache, executor=executor)
        again = _stores.run(artifact_store=store, result_cache=cache, executor=executor)
        assert again[1:] == first[1:]
        assert store.get(first[0]) == store.get(again[0]) == {"x": 3}
        outs.append(first[1:])
    assert outs[0] == outs[1] == [101 * 101, 16]


def test_a_cached_task_is_keyed_by_its_remote_argument_without_fetching_it(
    inproc: str,
) -> None:
    cache = MemoryResultCache()
    seen: list[str] = []
    unsubscribe = subscribe("task_cached", lambda _name, p: seen.append(p["task"]))
    try:
        for _ in range(2):
            out = _stores.run(result_cache=cache, executor=DaskExecutor(address=inproc))
            assert out[1:] == [101 * 101, 16]
    finally:
        unsubscribe()
    # The second run: cached_square(produce(1)) hits although produce ran again remotely.
    assert seen.count("cached_square") == 2


def test_priority_orders_ready_tasks_as_the_local_executor_does(
    address: str, tmp_path: Path
) -> None:
    orders = []
    for where in ("local", "dask"):
        log = tmp_path / f"order-{where}"
        executor = DaskExecutor(address=address) if where == "dask" else "local"
        _priorities.run(str(log), max_concurrency=1, executor=executor)
        orders.append(log.read_text().split())
    assert orders[0] == orders[1] == ["p9", "p5", "p3", "p2", "p1"]


# -- where tasks run ---------------------------------------------------------------------------


@task
def pid_remote() -> int:
    return os.getpid()


@task(tags={"local"})
def pid_local() -> int:
    return os.getpid()


@task
async def pid_async() -> int:
    return os.getpid()


@flow
def _pids() -> list[int]:
    return [pid_remote(), pid_local(), pid_async()]


def test_plain_tasks_run_on_the_cluster_async_and_local_tagged_ones_here(
    real_cluster: str,
) -> None:
    remote, local, in_loop = _pids.run(executor=DaskExecutor(address=real_cluster))
    assert remote != os.getpid()
    assert local == in_loop == os.getpid()


def test_config_and_environment_choose_the_dask_executor(
    real_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTO_WORKFLOW_EXECUTOR", "dask")
    monkeypatch.setenv("AUTO_WORKFLOW_DASK_ADDRESS", real_cluster)
    reload_config()
    try:
        assert _pids.run()[0] != os.getpid()
        assert _pids.run(executor="local")[0] == os.getpid()
        monkeypatch.setenv("AUTO_WORKFLOW_EXECUTOR", "kubernetes")
        with pytest.raises(ValueError, match="AUTO_WORKFLOW_EXECUTOR"):
            reload_config()
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_EXECUTOR")
        monkeypatch.delenv("AUTO_WORKFLOW_DASK_ADDRESS")
        reload_config()


def test_the_cli_runs_a_flow_on_a_scheduler_address(real_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "etl.py").write_text(
        textwrap.dedent(
            """
            import os
            from auto_workflow import flow, task

            @task
            def where() -> int:
                return os.getpid()

            @task(tags={"local"})
            def elsewhere(pid: int) -> bool:
                return pid != os.getpid()

            @flow
            def pipeline() -> bool:
                return elsewhere(where())
            """
        )
    )
    command = ["run", "etl.py:pipeline", "--no-progress", "--dask-address", real_cluster]
    done = subprocess.run(
        [sys.executable, "-m", "auto_workflow", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "true"


_EMBEDDED = """
import os, sys
sys.path.insert(0, sys.argv[1])
from procs import children_of
from auto_workflow import fan_out, flow, task

@task
def inc(x):
    return x + 1

@task(tags={"local"})
def workers_now(xs):
    return sorted(children_of())

@flow
def pipeline():
    xs = fan_out(inc, [1, 2, 3])
    return [xs, workers_now(xs)]

if __name__ == "__main__":
    xs, during = pipeline.run(executor="dask")
    tracker = [p for p in children_of() if b"tracker" in open(f"/proc/{p}/cmdline", "rb").read()]
    print(xs, len(during) - len(tracker), sorted(set(children_of()) - set(tracker)))
"""


def test_the_embedded_cluster_runs_and_leaves_no_process_behind(tmp_path: Path) -> None:
    # In a fresh interpreter: multiprocessing's resource tracker, which the embedded
    # cluster's nannies start, outlives a run by design (it exits with its parent).
    (tmp_path / "embedded.py").write_text(_EMBEDDED)
    tests = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "embedded.py", tests],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == f"[2, 3, 4] {os.cpu_count()} []"


def test_the_embedded_cluster_starts_while_dasks_default_http_port_is_taken() -> None:
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # taken by someone else already: the same case
            taken.bind(("0.0.0.0", 8787))
            taken.listen()
        executor = DaskExecutor(processes=False, n_workers=1)
        assert _arith.run(executor=executor) == _arith.run()  # no "port in use" warning


def test_importing_the_library_and_the_face_imports_no_distributed() -> None:
    probe = "import sys, auto_workflow, auto_workflow.dask; print('distributed' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@task(retries=1)
def whereabouts(marker: str) -> tuple[Any, ...]:
    ctx = get_context()
    if not os.path.exists(marker):
        Path(marker).write_text("failed once")
        raise RuntimeError("the first attempt fails")
    return ctx.flow_name, dict(ctx.params), ctx.task_name, ctx.node_id, ctx.attempt, ctx.run_id


@flow
def _whereabouts(marker: str) -> list[Any]:
    return [whereabouts(marker), get_context().run_id]


def test_a_task_on_the_cluster_sees_its_run_context(address: str) -> None:
    marker = str(_marker("whereabouts"))
    seen, run_id = _whereabouts.run(
        marker, params={"day": "2024-01-01"}, executor=DaskExecutor(address=address)
    )
    assert seen == (
        "_whereabouts",
        {"day": "2024-01-01"},
        "whereabouts",
        "whereabouts:0",
        2,
        run_id,
    )


# -- code on the workers -----------------------------------------------------------------------


def _import_from(folder: Path, name: str, source: str) -> Any:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    try:
        __import__(name)
        return sys.modules[name]
    finally:
        sys.path.remove(str(folder))


def test_the_flows_own_module_is_shipped_to_workers_that_lack_it(
    real_cluster: str, tmp_path: Path
) -> None:
    mod = _import_from(
        tmp_path,
        "aw_shipped_flow",
        """
        from auto_workflow import flow, task

        @task
        def triple(x):
            return 3 * x

        @flow
        def pipeline():
            return triple(triple(2))
        """,
    )
    try:
        assert mod.pipeline.run(executor=DaskExecutor(address=real_cluster)) == 18
    finally:
        del sys.modules["aw_shipped_flow"]


def test_a_module_missing_on_the_workers_fails_at_once_naming_it(
    real_cluster: str, tmp_path: Path
) -> None:
    _import_from(tmp_path, "aw_helper_only_here", "VALUE = 7\n")
    mod = _import_from(
        tmp_path,
        "aw_uses_helper",
        """
        import aw_helper_only_here
        from auto_workflow import flow, task

        @task(retries=3)
        def use():
            return aw_helper_only_here.VALUE

        @flow
        def pipeline():
            return use()
        """,
    )
    try:
        with pytest.raises(TaskExecutionError) as info:
            mod.pipeline.run(executor=DaskExecutor(address=real_cluster))
    finally:
        del sys.modules["aw_uses_helper"], sys.modules["aw_helper_only_here"]
    assert info.value.attempts == 1  # not retried: every attempt would fail alike
    assert isinstance(info.value.original, SerializationError)
    assert "'aw_helper_only_here'" in str(info.value.original)
    assert "install" in str(info.value.original)


# -- faults ------------------------------------------------------------------------------------


@task(retries=2)
def die_once(marker: str) -> int:
    path = Path(marker)
    if not path.exists():
        path.write_text("dying")
        os._exit(1)  # the worker process dies mid-attempt
    return os.getpid()


@flow
def _dies(marker: str) -> list[Any]:
    return [die_once(marker), inc(1)]


def test_a_worker_that_dies_mid_attempt_fails_it_and_our_retry_runs_it_again(
    real_cluster: str,
) -> None:
    retries: list[str] = []
    unsubscribe = subscribe("task_retry", lambda _n, p: retries.append(p["error"]))
    try:
        out = _dies.run(str(_marker("die")), executor=DaskExecutor(address=real_cluster))
    finally:
        unsubscribe()
    assert out[1] == 2
    assert len(retries) == 1
    assert "WorkerCrashedError" in retries[0]
    assert "die_once" in retries[0]


@flow
def _dies_unretried(marker: str) -> int:
    return die_once.with_options(retries=0)(marker)


def test_a_worker_death_without_retries_is_a_worker_crashed_error(real_cluster: str) -> None:
    with pytest.raises(TaskExecutionError) as info:
        _dies_unretried.run(str(_marker("die")), executor=DaskExecutor(address=real_cluster))
    assert isinstance(info.value.original, WorkerCrashedError)
    assert "'die_once'" in str(info.value.original)


@task(timeout=0.5)
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow
def _slow() -> float:
    return slow(2.0)


def test_a_timeout_cancels_the_attempts_future(inproc: str) -> None:
    executor = DaskExecutor(address=inproc)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        _slow.run(executor=executor)
    assert time.monotonic() - start < 2.0
    assert executor.abandoned == 1
    time.sleep(2.0)  # the abandoned call finishes in its worker thread


@task
def nap(marker: str, seconds: float) -> float:
    Path(marker).write_text("started")
    time.sleep(seconds)
    return seconds


@task
def note(value: Any, log: str) -> Any:
    with open(log, "a") as fh:  # one line per execution, wherever it ran
        fh.write(f"{value}\n")
    return value


@flow
def _naps(marker: str, log: str) -> list[float]:
    return [note(nap(marker, 2.0), log) for _ in range(8)]  # the notes go ahead of the naps


def _scheduler_tasks(address: str) -> int:
    with distributed.Client(address, timeout=30) as client:

        def count(dask_scheduler: Any) -> int:
            return len(dask_scheduler.tasks)

        result: int = client.run_on_scheduler(count)
        return result


def _wait_for_file(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _scheduler_forgets_everything(address: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _scheduler_tasks(address) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _scheduler_tasks(address) == 0


async def test_cancelling_a_run_cancels_its_futures_and_the_cluster_stays_usable(
    real_cluster: str,
) -> None:
    marker, log = _marker("nap"), _marker("notes")
    run = asyncio.ensure_future(
        _naps.run_async(str(marker), str(log), executor=DaskExecutor(address=real_cluster))
    )
    await asyncio.to_thread(_wait_for_file, marker, 60)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await asyncio.to_thread(_scheduler_forgets_everything, real_cluster, 30)
    assert await _arith.run_async(executor=DaskExecutor(address=real_cluster)) == _arith.run()
    assert not log.exists()  # what went ahead of the cancelled naps never ran


def test_an_unreachable_scheduler_is_a_clear_error_within_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ClusterUnavailableError, match=address):
        _arith.run(executor=DaskExecutor(address=address, connect_timeout=2))
    assert time.monotonic() - start < 8


# -- data stays on the cluster -----------------------------------------------------------------

_MB = 1_000_000


@task
def blob(n: int) -> bytes:
    return b"x" * n


@task
def step(data: bytes) -> bytes:
    return data[1:] + b"y"


@task
def size(data: bytes) -> int:
    return len(data)


@flow
def _chain() -> int:
    data = blob(100 * _MB)
    for _ in range(9):
        data = step(data)
    return size(data)


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / _MB


@contextlib.contextmanager
def _sampled_peak(
    measure: Callable[[], float], every: float, name: str, *, at_end: bool
) -> Iterator[list[float]]:
    """Samples ``measure()`` every ``every`` seconds on a thread of its own while the block
    runs (and once more when it ends if ``at_end``); yields [the peak so far]."""
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            peak[0] = max(peak[0], measure())

    sampler = threading.Thread(target=sample, name=name)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()
        if at_end:
            peak[0] = max(peak[0], measure())


@contextlib.contextmanager
def _peak_rss_growth() -> Iterator[list[float]]:
    """Samples this process's RSS every 5 ms; yields [growth of the peak over the start]."""
    start = _rss_mb()
    with _sampled_peak(lambda: _rss_mb() - start, 0.005, "rss-sampler", at_end=True) as peak:
        yield peak


@flow
def _chain_through_the_client() -> int:
    data = blob(100 * _MB)
    for _ in range(3):
        data = step.with_options(tags={"local"})(data)  # runs here: its input comes here
    return size(data)


def test_a_chain_of_100_mb_values_never_comes_through_the_client(real_cluster: str) -> None:
    executor = DaskExecutor(address=real_cluster)
    _arith.run(executor=executor)  # connect once first: count the data, not the imports
    with _peak_rss_growth() as growth:
        assert _chain.run(executor=executor) == 100 * _MB
    assert growth[0] < 250, f"the client's RSS grew by {growth[0]:.0f} MB"
    # The measurement can fail: the same data through the client grows it by at least the
    # two 100 MB values alive at once (earlier ones are released as the chain moves on).
    with _peak_rss_growth() as through:
        assert _chain_through_the_client.run(executor=executor) == 100 * _MB
    assert through[0] > 150, f"through the client: {through[0]:.0f} MB"
    assert through[0] > 4 * growth[0], (growth[0], through[0])


def test_executor_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="one of"):
        DaskExecutor("tcp://127.0.0.1:1", n_workers=2)
    with pytest.raises(ValueError, match="connect_timeout"):
        DaskExecutor(connect_timeout=0)
    with pytest.raises(ValueError, match="executor must be"):
        _arith.run(executor="spark")
    with pytest.raises(TypeError, match="executor must be"):
        _arith.run(executor=42)  # type: ignore[arg-type]


# -- submitting ahead --------------------------------------------------------------------------


@task
def gate(release: str) -> int:
    Path(release + ".started").write_text("")
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 0


@task
def after_gate(x: int) -> int:
    return x + 1


@flow
def _gated(release: str) -> int:
    x = gate(release)
    for _ in range(5):
        x = after_gate(x)
    return x


def _keys_named(address: str, prefix: str) -> int:
    with distributed.Client(address, timeout=30) as client:

        def count(dask_scheduler: Any) -> int:
            return sum(str(key).startswith(prefix) for key in dask_scheduler.tasks)

        result: int = client.run_on_scheduler(count)
        return result


def test_a_chain_goes_to_the_cluster_whole_while_its_first_task_runs(inproc: str) -> None:
    release = _marker("release")
    executor = DaskExecutor(address=inproc)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(_gated.run, str(release), executor=executor)
        _wait_for_file(Path(f"{release}.started"), 60)
        waiting = _keys_named(inproc, "after_gate-")
        release.write_text("go")
        assert run.result(timeout=60) == 5
    assert waiting == 5  # the five steps wait on the scheduler, not in the client


@flow
def _noted(marker: str, log: str) -> list[Any]:
    return [note(flaky(2, marker), log), note(boom(1), log)]


def test_what_goes_ahead_of_a_failing_input_runs_once_after_its_retry_succeeds(
    address: str,
) -> None:
    log = _marker("notes")
    out = _noted.run(
        str(_marker("flaky")),
        str(log),
        failure_policy="continue",
        executor=DaskExecutor(address=address),
    )
    assert out[0] == 20
    assert isinstance(out[1], UpstreamFailedError)
    assert log.read_text().split() == ["20"]  # not for the failed attempt, not for boom


@flow
def _slow_noted(marker: str, log: str) -> list[Any]:
    return [note(slow(1.5), log), nap(marker, 3.0)]


def test_an_input_that_times_out_withdraws_what_went_ahead_of_it(inproc: str) -> None:
    log = _marker("notes")
    executor = DaskExecutor(address=inproc)
    out = _slow_noted.run(
        str(_marker("nap")), str(log), failure_policy="continue", executor=executor
    )
    assert isinstance(out[0], UpstreamFailedError)
    assert isinstance(out[0].original, TimeoutError)
    # The run outlived the abandoned call (its worker finished it after 1.5 s), and the note
    # that had gone ahead of it was withdrawn with it: it never ran.
    assert out[1] == 3.0
    assert not log.exists()


@task
def grow(data: bytes) -> bytes:
    return data[1:] + b"z"


@flow
def _long_chain(steps: int, mb: int) -> int:
    data = blob(mb * _MB)
    for _ in range(steps):
        data = grow(data)
    return size(data)


def _cluster_bytes(client: Any) -> int:
    def held(dask_scheduler: Any) -> int:
        tasks = dask_scheduler.tasks.values()
        return sum(ts.nbytes for ts in tasks if ts.state == "memory" and ts.nbytes > 0)

    result: int = client.run_on_scheduler(held)
    return result


@contextlib.contextmanager
def _peak_cluster_bytes(address: str) -> Iterator[list[float]]:
    """Samples the bytes the cluster holds every 10 ms; yields [the peak]."""
    with (
        distributed.Client(address, timeout=30) as client,
        _sampled_peak(
            lambda: _cluster_bytes(client), 0.01, "cluster-sampler", at_end=False
        ) as peak,
    ):
        yield peak


def test_a_long_chain_keeps_only_a_few_of_its_values_on_the_cluster(real_cluster: str) -> None:
    # 31 values of 20 MB go through the cluster; each is released once its consumer has
    # started (or the run ended), so only the last few are ever held at once.
    with _peak_cluster_bytes(real_cluster) as peak:
        assert _long_chain.run(30, 20, executor=DaskExecutor(address=real_cluster)) == 20 * _MB
    assert 20 * _MB <= peak[0] <= 5 * 20 * _MB, f"peak {peak[0] / _MB:.0f} MB"


async def test_a_run_on_the_callers_client_leaves_none_of_its_futures_behind(inproc: str) -> None:
    def wanted(dask_scheduler: Any, client_id: str) -> list[str]:
        tasks = dask_scheduler.tasks.values()
        return [ts.key for ts in tasks if any(c.client_key == client_id for c in ts.who_wants)]

    gc.disable()  # a future kept by a reference cycle would otherwise go at a collection
    try:
        async with distributed.Client(inproc, asynchronous=True) as client:
            out = await _arith.run_async(executor=DaskExecutor(client=client))
            await asyncio.sleep(0.2)  # releases travel in the client's next batch
            left = await client.run_on_scheduler(wanted, client_id=client.id)
    finally:
        gc.enable()
    assert out[0] == 19
    assert left == []


# -- with the run history ----------------------------------------------------------------------


@task
def fails_once(x: int, marker: str) -> int:
    with open(f"{marker}.{x}", "a") as runs:  # one line per execution, wherever it ran
        runs.write("x\n")
    if x == 2 and not os.path.exists(marker):
        Path(marker).write_text("failed once")
        raise RuntimeError("the first try of element 2 fails")
    return x * 3


@flow(durable=True)
def durable_sum(marker: str) -> int:
    return total([fails_once(i, marker) for i in range(4)])


def test_a_durable_run_on_a_cluster_is_recorded_and_resumes_only_what_failed(
    address: str,
) -> None:
    from auto_workflow.history import RunStatus, get_run

    marker = str(_marker("fails-once"))
    executor = DaskExecutor(address=address)
    with pytest.raises(TaskExecutionError):
        # One at a time, in build order: element 3 has not started when element 2 fails.
        durable_sum.run(marker, run_id="on-dask", executor=executor, max_concurrency=1)
    record = get_run("on-dask")
    assert record.status is RunStatus.FAILED
    assert {t.node: t.status.value for t in record.tasks}["fails_once:2"] == "failed"
    assert durable_sum.resume("on-dask", executor=executor) == 18
    runs = {i: len(Path(f"{marker}.{i}").read_text().splitlines()) for i in range(4)}
    assert runs == {0: 1, 1: 1, 2: 2, 3: 1}  # the checkpointed elements did not run again
    assert get_run("on-dask").status is RunStatus.SUCCEEDED

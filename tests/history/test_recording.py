"""What the engine records into the history for a run (in process, real SQLite file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow._history import _engine
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.history import RunStatus, get_run, list_runs


@task
def source(n: int) -> list[int]:
    return list(range(n))


@task
def check(x: int) -> int:
    if x % 25 == 7:
        raise ValueError(f"element {x} is bad")
    return x


@flow
def many(n: int) -> list[int]:
    return fan_out(check, source(n))


def test_a_large_run_itemises_the_first_calls_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "ITEMISED", 10)
    many.run(100, failure_policy="continue", run_id="big")
    run = get_run("big")
    assert run.status is RunStatus.FAILED
    assert run.counts() == {"succeeded": 97, "failed": 4}  # every call counted (source too)
    assert list_runs()[0].counts == {"succeeded": 97, "failed": 4}
    failed = sorted(t.item for t in run.tasks if t.status.value == "failed")
    assert failed == [7, 32, 57, 82]  # every failure keeps its own row and error
    assert all(t.error is not None for t in run.tasks if t.status.value == "failed")
    summary = [t for t in run.tasks if t.kind == "summary"]
    assert [(s.task, s.status.value, s.item) for s in summary] == [("check", "succeeded", 87)]
    assert summary[0].node == "check \u00d787 (counted, not itemised)"
    assert summary[0].fanout == "fanout:1"
    itemised = [t for t in run.tasks if t.kind == "task" and t.task == "check"]
    assert len(itemised) == 10 + 3  # the first ten (one failed), then the later failures


@task
def total(xs: list[int]) -> list[int]:
    return [sum(xs)]


@flow
def two_fanouts_and_direct_calls(n: int) -> object:
    direct = [check(i * 25) for i in range(15)]  # build-time calls: no fan-out
    first = fan_out(check, source(n))
    second = fan_out(check, total(source(3)))  # one call, in its own expansion
    third = fan_out(check, source(n + 1))
    return direct, first, second, third


def test_counted_calls_go_to_the_row_of_their_own_fan_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "ITEMISED", 10)
    monkeypatch.setattr(_engine, "UPFRONT", 0)  # as in a large graph: build-time calls too
    two_fanouts_and_direct_calls.run(40, failure_policy="continue", run_id="rows")
    run = get_run("rows")
    summary = {(s.fanout, s.status.value): s.item for s in run.tasks if s.kind == "summary"}
    itemised = [t for t in run.tasks if t.kind == "task" and t.task == "check"]
    # 15 direct calls + 40 + 1 + 41 fan-out calls; 10 itemised, plus each later failure
    counted = sum(summary.values())
    assert counted + len(itemised) == 15 + 40 + 1 + 41
    fanouts = {t.fanout for t in run.tasks if t.kind == "summary"}
    assert None in fanouts  # the direct calls past the first ten
    assert len(fanouts) == 4  # the direct calls, and the three fan-outs
    for row in (t for t in run.tasks if t.kind == "summary"):
        assert row.started_at is not None
        assert row.ended_at is not None
        assert row.started_at <= row.ended_at


def test_by_default_a_big_fan_out_keeps_a_hundred_rows_per_task_and_exact_counts() -> None:
    many.run(3000, failure_policy="continue", run_id="default-big")
    run = get_run("default-big")
    failures = 3000 // 25  # x % 25 == 7
    assert run.counts() == {"succeeded": 3000 - failures + 1, "failed": failures}
    rows = [t for t in run.tasks if t.task == "check" and t.kind == "task"]
    assert _engine.ITEMISED == 100
    assert len(rows) == 100 + failures - 4  # the first hundred held four failures
    assert len([t for t in run.tasks if t.kind == "summary"]) == 1


@task(retries=2)
def steady(x: int) -> int:
    return x


@task(retries=2)
def shaky(x: int) -> int:
    from auto_workflow.context import get_context

    if x % 10 == 3 and get_context().attempt == 1:
        raise ConnectionError(f"blip {x}")
    return x


@flow
def retrying(n: int) -> object:
    return fan_out(steady, source(n)), fan_out(shaky, source(n))


def test_a_call_that_may_retry_is_counted_when_its_first_attempt_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "ITEMISED", 5)
    retrying.run(40, run_id="retrying")
    run = get_run("retrying")
    assert run.counts() == {"succeeded": 82}
    summary = {s.task: s.item for s in run.tasks if s.kind == "summary"}
    assert summary == {"steady": 35, "shaky": 32}  # shaky: 40 - the first 5 - 3 later retries
    retried = [t for t in run.tasks if t.task == "shaky" and t.attempts == 2]
    assert [t.item for t in retried] == [3, 13, 23, 33]  # each retry keeps its own row


def test_an_ended_journal_lets_go_of_the_run_s_graph() -> None:
    import weakref

    from auto_workflow._core._graph import Graph
    from auto_workflow._core._journal import RunSpec
    from auto_workflow._history._engine import history_for
    from auto_workflow.config import get_config

    history = history_for(get_config())
    assert history is not None
    graph = Graph("g")
    for i in range(10):
        graph.add(check, (i,), {})
    spec = RunSpec(
        run_id="let-go", flow="g", target=None, args=(), kwargs={}, params={}, durable=False
    )
    journal, _ = history.begin(spec, graph, None, False)
    for node in graph.nodes:
        journal.task_started(node, 1.0)
        journal.task_ended(node, "succeeded", 1, 2.0, None, False)
    journal.finish("succeeded", None, 3.0)
    alive = weakref.ref(graph)
    del graph, node
    assert alive() is None  # freed when the run ends, not at the next garbage collection
    assert get_run("let-go").counts() == {"succeeded": 10}


def test_a_durable_run_itemises_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "ITEMISED", 10)
    many.run(30, failure_policy="continue", run_id="durable-big", durable=True)
    run = get_run("durable-big")
    assert not [t for t in run.tasks if t.kind == "summary"]
    assert len([t for t in run.tasks if t.task == "check"]) == 30
    assert all(t.checkpoint for t in run.tasks if t.status.value == "succeeded")


def test_a_secret_handed_out_by_secret_is_never_recorded_in_clear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from auto_workflow.secrets import secret

    monkeypatch.setenv("WAREHOUSE_PASSWORD", "hunter2-s3cret")
    password = secret("WAREHOUSE_PASSWORD")
    assert password == "hunter2-s3cret"

    @task
    def connect(dsn: str) -> str:
        raise ConnectionError(f"cannot reach {dsn}")

    @flow
    def load(dsn: str) -> str:
        return connect(dsn)

    dsn = f"postgresql://etl:{password}@db/warehouse"
    with pytest.raises(Exception, match="cannot reach"):
        load.run(dsn, run_id="secretive", params={"dsn": dsn})
    run = get_run("secretive")
    recorded = repr(run)
    assert "hunter2-s3cret" not in recorded
    assert "postgresql://etl:***@db/warehouse" in recorded


def test_deleting_runs_removes_their_checkpoints_and_only_theirs(isolated_history: Path) -> None:
    import os
    import time

    from auto_workflow.history import delete_runs

    @task
    def one() -> int:
        return 1

    @flow(durable=True)
    def kept() -> int:
        return one()

    kept.run(run_id="old-run")
    kept.run(run_id="new-run")
    root = isolated_history.parent / "checkpoints"
    old, new = root / "old-run", root / "new-run"
    assert old.is_dir()
    assert new.is_dir()
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(new, (an_hour_ago, an_hour_ago))
    assert delete_runs(keep_last=1) == 1  # the older of the flow's two runs
    assert not old.exists()
    assert new.is_dir()
    assert get_run("new-run").status is RunStatus.SUCCEEDED


def test_retention_removes_the_checkpoints_of_the_runs_it_deletes(isolated_history: Path) -> None:
    import os
    import time

    from auto_workflow._history._store import HistoryStore

    @task
    def one() -> int:
        return 1

    @flow(durable=True)
    def nightly_once() -> int:
        return one()

    for run_id in ("r-1", "r-2", "r-3"):
        nightly_once.run(run_id=run_id)
    root = isolated_history.parent / "checkpoints"
    two_hours_ago = time.time() - 7200
    for run_id in ("r-1", "r-2", "r-3"):
        os.utime(root / run_id, (two_hours_ago, two_hours_ago))
    store = HistoryStore(isolated_history)
    assert store.apply_retention(keep_last=1, min_interval=0) == 2
    assert sorted(p.name for p in root.iterdir()) == ["r-3"]


@task
async def wait_or_fail(x: int) -> int:
    if x == 30:
        await asyncio.sleep(0.05)  # the others are all waiting by now
        raise ValueError("the bad one")
    if x >= 20:
        await asyncio.sleep(30)  # cancelled when the run fails fast
    return x


@flow
def fails_fast(n: int) -> list[int]:
    return fan_out(wait_or_fail, source(n))


def test_counted_calls_that_fail_or_are_cancelled_still_get_their_own_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the itemised rows a call that nothing wraps takes the runner's straight line,
    where only its success is counted: a failure or a cancellation is still recorded."""
    monkeypatch.setattr(_engine, "ITEMISED", 5)
    with pytest.raises(TaskExecutionError):
        fails_fast.run(40, run_id="fast")
    run = get_run("fast")
    by_status: dict[str, list[int | None]] = {}
    for t in run.tasks:
        if t.task == "wait_or_fail" and t.kind == "task":
            by_status.setdefault(t.status.value, []).append(t.item)
    assert by_status["failed"] == [30]
    assert sorted(by_status["cancelled"]) == [i for i in range(20, 40) if i != 30]
    summary = [t for t in run.tasks if t.kind == "summary"]
    assert [(s.status.value, s.item) for s in summary] == [("succeeded", 20 - 5)]
    assert run.counts() == {"succeeded": 21, "failed": 1, "cancelled": 19}  # source too

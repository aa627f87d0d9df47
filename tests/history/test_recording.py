"""What the engine records into the history for a run (in process, real SQLite file)."""

from __future__ import annotations

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow._history import _engine
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

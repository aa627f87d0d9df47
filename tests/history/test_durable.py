"""Durable runs: killed from outside, resumed, nothing that finished runs twice.

The flows run in real subprocesses (``python -m auto_workflow``) against a history file in
``tmp_path``; every task execution appends a line to a file of its own, so the tests count
executions, not log lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from auto_workflow import fan_out, flow, task
from auto_workflow.config import reload_config
from auto_workflow.exceptions import GraphChangedError, TaskExecutionError
from auto_workflow.history import RunStatus, TaskStatus, get_run

FLOW = """
import os, time
from auto_workflow import fan_out, flow, task

MARKS = os.environ["MARKS"]


def mark(name):
    with open(os.path.join(MARKS, name), "a") as f:
        f.write("x\\n")


@task
def items(n: int) -> list[int]:
    mark("items")
    return list(range(n))


@task
def work(i: int) -> int:
    mark(f"work-{i}")
    time.sleep(float(os.environ.get("DELAY", "0")))
    return i * 2


@task(run_in="process")
def total(xs: list[int]) -> int:
    mark("total")
    return sum(xs)


@flow(durable=True)
def big(n: int = 200) -> int:
    return total(fan_out(work, items(n)))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    env.pop("PYTHONPATH", None)
    env.update(
        AUTO_WORKFLOW_HISTORY_PATH=str(tmp_path / "history.sqlite"),
        MARKS=str(tmp_path / "marks"),
        **extra,
    )
    return env


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auto_workflow", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _executions(tmp_path: Path) -> dict[str, int]:
    marks = tmp_path / "marks"
    return {p.name: len(p.read_text().splitlines()) for p in marks.iterdir()}


def _runs_json(tmp_path: Path) -> list[dict[str, Any]]:
    out = _cli(tmp_path, "runs", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(FLOW)
    (tmp_path / "marks").mkdir()
    return tmp_path


def _kill_midway(work: Path, run_id: str) -> dict[str, int]:
    """Start the durable run, SIGKILL it once some work has finished; executions so far."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auto_workflow",
            "run",
            "flows.py:big",
            "--run-id",
            run_id,
            "--max-concurrency",
            "4",
            "--no-progress",
        ],
        cwd=work,
        env=_env(work, DELAY="0.02"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((work / "marks").iterdir())) < 60:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _executions(work)


def test_a_killed_durable_run_resumes_without_rerunning_finished_tasks(work: Path) -> None:
    before = _kill_midway(work, "nightly-1")
    started = {name for name in before if name.startswith("work-")}
    assert 50 <= len(started) < 200, "the kill should land in the middle of the fan-out"
    runs = _runs_json(work)
    assert [(r["run_id"], r["status"]) for r in runs] == [("nightly-1", "crashed")]

    done = _cli(work, "resume", "nightly-1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sum(i * 2 for i in range(200))
    after = _executions(work)
    assert after["items"] == 1  # checkpointed before the kill: loaded, not run
    assert after["total"] == 1
    assert {f"work-{i}" for i in range(200)} <= set(after)
    # A task ran twice only if it was still running when the process died (at most the
    # 4 the run allows at once, plus any whose checkpoint was being written).
    twice = {name for name, n in after.items() if n > 1}
    assert twice <= started, twice
    assert len(twice) <= 8, twice
    assert all(n <= 2 for n in after.values())
    assert _runs_json(work)[0]["status"] == "succeeded"


def test_a_succeeded_durable_run_returns_its_result_without_running_anything(
    work: Path,
) -> None:
    first = _cli(work, "run", "flows.py:big", "--arg", "n=20", "--run-id", "r1", "--no-progress")
    assert first.returncode == 0, first.stderr
    counted = _executions(work)
    again = _cli(work, "run", "flows.py:big", "--arg", "n=20", "--run-id", "r1", "--durable")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert _executions(work) == counted  # nothing ran the second time
    resumed = _cli(work, "resume", "r1", "--no-progress")
    assert resumed.stdout == first.stdout
    assert _executions(work) == counted


def test_runs_show_json_lists_failures_first_with_their_error(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "from auto_workflow import flow, task\n\n"
        "@task\ndef ok() -> int:\n    return 1\n\n"
        "@task(retries=1)\ndef bad(x: int) -> int:\n    raise ValueError('no CRM profile')\n\n"
        "@task\ndef after(x: int) -> int:\n    return x\n\n"
        "@flow\ndef f() -> list[int]:\n    return [ok(), after(bad(ok()))]\n"
    )
    failed = _cli(tmp_path, "run", "flows.py:f", "--run-id", "bad-1", "--no-progress")
    assert failed.returncode == 1
    shown = _cli(tmp_path, "runs", "show", "bad", "--json")  # a unique prefix is enough
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "failed"
    by_task = {t["task"]: t for t in record["tasks"]}
    assert by_task["bad"]["status"] == "failed"
    assert by_task["bad"]["attempts"] == 2
    assert by_task["bad"]["error"]["type"] == "ValueError"
    assert "no CRM profile" in by_task["bad"]["error"]["message"]
    assert len(by_task["bad"]["attempt_log"]) == 2
    assert by_task["after"]["status"] == "skipped"
    text = _cli(tmp_path, "runs", "show", "bad-1")
    first_task_line = text.stdout.splitlines()[5]
    assert " bad " in first_task_line
    assert "failed" in first_task_line
    missing = _cli(tmp_path, "runs", "show", "nope")
    assert missing.returncode == 1
    assert "nope" in missing.stderr


def test_runs_is_a_rich_table_on_a_terminal_and_plain_when_piped(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "from auto_workflow import flow, task\n\n"
        "@task\ndef bad() -> int:\n    raise ValueError('no')\n\n"
        "@flow(name='[red]nightly[/red]')\ndef f() -> int:\n    return bad()\n"
    )
    _cli(tmp_path, "run", "flows.py:f", "--run-id", "rich-1", "--no-progress")
    terminal = {"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "120"}
    shown = _cli(tmp_path, "runs", **terminal)
    assert shown.returncode == 0, shown.stderr
    assert "\u2500" in shown.stdout  # the table's rule
    assert "\x1b[1;31mfailed" in shown.stdout  # failed in bold red
    assert "[red]nightly[/red]" in shown.stdout  # a name is text, never rich markup
    piped = _cli(tmp_path, "runs", TTY_INTERACTIVE="0")  # whatever the outer terminal is
    assert "\x1b" not in piped.stdout
    assert piped.stdout.splitlines()[0].split() == [
        *("RUN", "ID", "FLOW", "STATUS", "STARTED", "DURATION", "OK", "FAILED", "SKIPPED"),
    ]
    assert "rich-1  [red]nightly[/red]  failed" in piped.stdout


# -- in process ------------------------------------------------------------------------------

CALLS: list[int] = []


@task
def step(i: int) -> int:
    CALLS.append(i)
    if i == 2 and len([c for c in CALLS if c == 2]) == 1:
        raise RuntimeError("first try of step 2 fails")
    return i


@flow(durable=True)
def three() -> list[int]:
    return [step(0), step(1), step(2)]


@flow(name="three", durable=True)
def three_changed() -> list[int]:
    return [step(0), step(step(1)), step(2)]


def test_resume_in_process_runs_only_what_had_not_finished() -> None:
    CALLS.clear()
    with pytest.raises(TaskExecutionError):
        three.run(run_id="py-1")
    assert get_run("py-1").status is RunStatus.FAILED
    assert three.resume("py-1") == [0, 1, 2]
    assert sorted(CALLS) == [0, 1, 2, 2]  # 0 and 1 ran once; 2 failed once, then ran


PARSED: list[int] = []
CONSUMER_CRASHES = [True]


@task
def parse_row(x: int) -> int:
    PARSED.append(x)
    if x % 3 == 0:
        raise ValueError(f"bad row {x}")
    return x * 10


@task
def row_numbers(n: int) -> list[int]:
    return list(range(n))


@task
def report_rows(values: list[Any]) -> list[Any]:
    if CONSUMER_CRASHES[0]:
        raise RuntimeError("the consumer crashed")
    return [f"error: {v.original}" if isinstance(v, TaskExecutionError) else v for v in values]


@flow(durable=True)
def handled() -> list[Any]:
    return report_rows(fan_out(parse_row, row_numbers(5), return_exceptions=True))


HANDLED = ["error: bad row 0", 10, 20, "error: bad row 3", 40]


def test_a_run_with_handled_fan_out_failures_is_recorded_as_succeeded() -> None:
    PARSED.clear()
    CONSUMER_CRASHES[0] = False
    assert handled.run(run_id="handled-1") == HANDLED
    run = get_run("handled-1")
    assert run.status is RunStatus.SUCCEEDED
    parsed = [t for t in run.tasks if t.task == "parse_row"]
    assert [t.status for t in parsed].count(TaskStatus.FAILED) == 2
    failed = [t for t in parsed if t.status is TaskStatus.FAILED]
    assert all(t.checkpoint for t in failed)  # a caught error is kept like a result
    assert failed[0].error is not None
    assert "bad row 0" in failed[0].error.message
    PARSED.clear()
    assert handled.run(run_id="handled-1") == HANDLED  # resumed: nothing runs again
    assert PARSED == []


def test_resuming_after_a_crash_gives_the_consumer_the_same_list() -> None:
    PARSED.clear()
    CONSUMER_CRASHES[0] = True
    with pytest.raises(TaskExecutionError, match="the consumer crashed"):
        handled.run(run_id="handled-2")
    assert sorted(PARSED) == [0, 1, 2, 3, 4]
    CONSUMER_CRASHES[0] = False
    PARSED.clear()
    assert handled.resume("handled-2") == HANDLED
    assert PARSED == []  # failed elements come back from their checkpoints, not re-run


def test_a_changed_graph_is_refused_saying_where_it_differs() -> None:
    CALLS.clear()
    with pytest.raises(TaskExecutionError):
        three.run(run_id="py-2")
    with pytest.raises(GraphChangedError, match=r"node 2 was 'step:2 <- ', is now 'step:2 <- 1'"):
        three_changed.run(run_id="py-2", durable=True)


def test_a_taken_run_id_is_refused_unless_resuming_a_durable_run() -> None:
    @task
    def one() -> int:
        return 1

    @flow
    def plain() -> int:
        return one()

    assert plain.run(run_id="taken") == 1
    with pytest.raises(ValueError, match="cannot be resumed"):
        plain.run(run_id="taken")
    with pytest.raises(ValueError, match="not 'other'"):
        flow(name="other")(lambda: one()).run(run_id="taken")
    with pytest.raises(ValueError, match="run_id must be"):
        plain.run(run_id="../etc")


def test_history_off_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    @task
    def one() -> int:
        return 1

    @flow
    def quiet() -> int:
        return one()

    assert quiet.run(run_id="q-1", history=False) == 1
    monkeypatch.setenv("AUTO_WORKFLOW_HISTORY", "off")
    reload_config()
    assert quiet.run(run_id="q-2") == 1
    monkeypatch.delenv("AUTO_WORKFLOW_HISTORY")
    reload_config()
    with pytest.raises(LookupError):
        get_run("q-1")
    with pytest.raises(LookupError):
        get_run("q-2")


def test_a_history_that_cannot_be_written_never_fails_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the history's directory should be")
    monkeypatch.setenv("AUTO_WORKFLOW_HISTORY_PATH", str(blocker / "history.sqlite"))
    reload_config()

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(durable=True)
    def sturdy() -> list[int]:
        return fan_out(double, [1, 2, 3])

    assert sturdy.run() == [2, 4, 6]
    assert any("history" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")

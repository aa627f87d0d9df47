"""Log records written by ``run_in="process"`` tasks reach the parent's logging, with the
task's name and run id, at the parent's levels, handled as thread tasks' records are."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from auto_workflow import flow, get_context, task
from auto_workflow.logging import enable_structured_logging

LOGGER = "aw_test.process_logs"


class Capture(logging.Handler):
    """Formats records as a user's handler would, noting the run context seen meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.contexts: list[str | None] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))
        self.contexts.append(get_context().task_name)


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    target = logging.getLogger(LOGGER)
    target.addHandler(handler)
    target.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        target.setLevel(logging.NOTSET)


def _chatter() -> int:
    log = logging.getLogger(LOGGER)
    log.warning("hi %s", "there")
    log.info("details")
    return os.getpid()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_task_log_records_reach_the_parent_with_task_name_and_run_id(
    capture: Capture, mode: str
) -> None:
    chatty = task(name="chatty", run_in=mode)(_chatter)

    @flow(name="logs")
    def logs() -> Any:
        return chatty(), get_context().run_id

    pid, run_id = logs.run()
    assert capture.lines == [f"{LOGGER} WARNING hi there"]  # the same line in every mode
    assert capture.contexts == ["chatty"]  # the handler runs in the task's run context
    record = capture.records[0]
    if mode == "process":
        assert pid != os.getpid()
        assert record.process == pid
        assert (record.task_name, record.run_id) == ("chatty", run_id)  # type: ignore[attr-defined]
        assert record.node_id == "chatty:0"  # type: ignore[attr-defined]


def test_records_below_the_parents_level_are_not_even_made_in_the_worker(
    capture: Capture,
) -> None:
    @task(run_in="process")
    def enabled() -> tuple[bool, bool]:
        log = logging.getLogger(LOGGER)
        return log.isEnabledFor(logging.INFO), log.isEnabledFor(logging.WARNING)

    assert enabled() == (False, True)
    assert capture.records == []
    logging.getLogger(LOGGER).setLevel(logging.INFO)  # a change reaches the worker next call
    assert enabled() == (True, True)


def test_parent_lowering_a_level_lets_those_records_through(capture: Capture) -> None:
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    chatty = task(name="chatty", run_in="process")(_chatter)
    chatty()
    assert capture.lines == [f"{LOGGER} WARNING hi there", f"{LOGGER} INFO details"]


def test_exceptions_logged_in_a_worker_arrive_with_their_traceback(capture: Capture) -> None:
    @task(run_in="process")
    def fails_quietly() -> None:
        try:
            1 / 0  # noqa: B018 - the point is the ZeroDivisionError
        except ZeroDivisionError:
            logging.getLogger(LOGGER).exception("could not divide")

    fails_quietly()
    [line] = capture.lines
    assert line.startswith(f"{LOGGER} ERROR could not divide\nTraceback")
    assert "ZeroDivisionError: division by zero" in line


def test_structured_logging_names_the_process_task_of_a_library_record() -> None:
    out = io.StringIO()

    @task(name="reporter", run_in="process")
    def reporter() -> str:
        get_context().logger.info("step one")
        return get_context().run_id

    undo = enable_structured_logging(stream=out)
    try:
        run_id = reporter()
    finally:
        undo()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    step = next(line for line in lines if line.get("message") == "step one")
    assert (step["task"], step["run_id"], step["logger"]) == (
        "reporter",
        run_id,
        "auto_workflow.run.reporter",
    )

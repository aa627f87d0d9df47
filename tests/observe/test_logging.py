"""auto_workflow.logging: opt-in task outcome lines, JSON or readable; nothing at import."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from auto_workflow import flow, task
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.logging import enable_pretty_logging, enable_structured_logging


@task
def ok(x: int) -> int:
    return x


@task
def broken() -> int:
    raise ValueError("bad input")


def test_structured_logging_writes_one_json_object_per_task_outcome() -> None:
    out = io.StringIO()
    undo = enable_structured_logging(stream=out)
    try:

        @flow
        def pipeline() -> list[int]:
            return [ok(1), broken()]

        with pytest.raises(TaskExecutionError):
            pipeline.run()
    finally:
        undo()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    tasks = sorted((line["event"], line["task"]) for line in lines)
    assert tasks == [("task_err", "broken"), ("task_ok", "ok")]
    assert {line["logger"] for line in lines} == {"auto_workflow.tasks"}
    good = next(line for line in lines if line["event"] == "task_ok")
    assert (good["node"], good["attempts"], good["flow"]) == ("ok:0", 1, "pipeline")
    assert isinstance(good["duration_ms"], float)
    bad = next(line for line in lines if line["event"] == "task_err")
    assert "bad input" in bad["error"]


def test_undo_removes_the_handler_and_stops_the_lines() -> None:
    out = io.StringIO()
    library = logging.getLogger("auto_workflow")
    before = list(library.handlers)
    enable_structured_logging(stream=out)()
    ok(1)
    assert out.getvalue() == ""
    assert library.handlers == before


def test_pretty_logging_replaces_structured_logging() -> None:
    json_out, text_out = io.StringIO(), io.StringIO()
    enable_structured_logging(stream=json_out)
    undo = enable_pretty_logging(stream=text_out)
    try:
        ok(2)
    finally:
        undo()
    assert json_out.getvalue() == ""
    assert "auto_workflow.tasks: task_ok ok (ok:direct)" in text_out.getvalue()


def test_other_library_records_become_json_with_their_message() -> None:
    out = io.StringIO()
    undo = enable_structured_logging(stream=out)
    try:
        logging.getLogger("auto_workflow.something").warning("careful: %s", "x")
    finally:
        undo()
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["level"], line["message"]) == ("WARNING", "careful: x")


def test_importing_the_logging_module_configures_nothing_and_shadows_nothing() -> None:
    probe = (
        "import logging, auto_workflow.logging as aw\n"
        "assert logging.getLogger is not None and logging.__name__ == 'logging'\n"
        "assert not logging.getLogger('auto_workflow').handlers\n"
        "assert not logging.getLogger().handlers\n"
        "import auto_workflow._core._calls as c\n"
        "assert c.logging.__name__ == 'logging'\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)

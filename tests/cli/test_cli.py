"""The command line, driven as a user drives it: in subprocesses, in a scratch directory.

Each test writes small flow modules into ``tmp_path`` and runs ``python -m auto_workflow``
there with an environment free of ``AUTO_WORKFLOW_*`` (and of rich's terminal switches)
unless the test sets them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import runpy
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from auto_workflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", re.MULTILINE)

FLOWS = textwrap.dedent(
    '''
    """Flows for the CLI tests."""
    import asyncio
    import sys
    from pathlib import Path

    from auto_workflow import fan_out, flow, get_context, task

    CONSTANT = 7
    _ATTEMPTS = {"flaky": 0}


    @task
    def plus_one(x: int) -> int:
        print("hello from a task")
        return x + 1


    @task(retries=2)
    def boom(x: int) -> int:
        raise ValueError(f"bad value {x}")


    @task
    def bad2(x: int) -> int:
        raise KeyError("nope")


    @task
    def read_params() -> dict:
        return dict(get_context().params)


    @task
    def as_set(x: int) -> set:
        return {x}


    @task(retries=1)
    def flaky() -> str:
        _ATTEMPTS["flaky"] += 1
        if _ATTEMPTS["flaky"] == 1:
            raise ConnectionError("first attempt fails")
        return "ok"


    @task(cache_ttl=60)
    def square(x: int) -> int:
        return x * x


    @task
    async def nap(i: int) -> int:
        await asyncio.sleep(0.15)
        return i


    @task
    async def forever(marker: str) -> None:
        Path(marker).write_text("started")
        await asyncio.sleep(60)


    @flow
    def add(x: int = 1):
        """Add one to x.

        More text that list does not show.
        """
        return {"sum": plus_one(x), "items": [x, "two"]}


    @flow(name="param-echo")
    def echo_params():
        return read_params()


    @flow
    def needs(n: int, *, label: str):
        return [plus_one(n), label]


    @flow
    def setty():
        return as_set(1)


    @flow
    def failing():
        a = plus_one(1)
        return [a, plus_one(boom(a))]


    @flow
    def two_failures():
        return [boom(1), bad2(2), plus_one(3), plus_one(boom(4))]


    @flow
    def same_failure_twice():
        return [bad2(1), bad2(1)]


    @flow
    def summary():
        first = square(3)
        again = square.after(first)(3)
        return [flaky(), first, again]


    @flow
    def naps(n: int = 4):
        return fan_out(nap, list(range(n)))


    @flow
    def endless(marker: str):
        return forever(marker)


    @task
    def odd_one_out(i: int) -> int:
        if i == 110:
            raise ValueError("110 is odd")
        return i


    @flow
    def many():
        return fan_out(odd_one_out, range(120))


    @flow
    def empty():
        return {"nothing": "ran"}


    @flow
    def body_raises():
        raise RuntimeError("the body is broken")
    '''
)

PROCESS_FLOW = textwrap.dedent(
    """
    from auto_workflow import flow, task
    from helpers import square  # a sibling module

    @task(run_in="process")
    def remote_square(x: int) -> int:
        print("printed in a worker")
        return square(x)

    @flow
    def squares(n: int = 3):
        '''Squares, in worker processes.'''
        return [remote_square(i) for i in range(n)]
    """
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch directory holding the test flow modules."""
    (tmp_path / "flows.py").write_text(FLOWS)
    (tmp_path / "broken.py").write_text("x = (\n")
    (tmp_path / "needs_dep.py").write_text("import not_a_real_dependency\n")
    (tmp_path / "plain.py").write_text("VALUE = 1\n")
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "json.py").write_text("VALUE = 1\n")  # in the cwd it would shadow json
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "helpers.py").write_text("def square(x):\n    return x * x\n")
    (sub / "procs.py").write_text(PROCESS_FLOW)
    return tmp_path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "PYTHONPATH"):
        env.pop(name, None)
    env.update(extra)
    return env


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auto_workflow", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_flows(work: Path) -> dict[str, Any]:
    return runpy.run_path(str(work / "flows.py"))


def summary_rows(stderr: str) -> dict[str, list[str]]:
    """The plain summary table's rows by node id."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["task", "status"])
    rows = {}
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5:
            rows[cells[0]] = cells[1:]
    return rows


# -- run -------------------------------------------------------------------------------------


def test_run_prints_only_the_json_result_on_stdout(work: Path) -> None:
    done = cli(work, "run", "flows.py:add", "--arg", "x=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == json.dumps({"sum": 3, "items": [2, "two"]}, indent=2) + "\n"
    assert "hello from a task" in done.stderr  # what tasks print stays off stdout


def test_params_reach_get_context(work: Path) -> None:
    params = {"day": "2026-01-31", "n": [1, 2]}
    done = cli(work, "run", "flows.py:param-echo", "--params", json.dumps(params))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == params


def test_arg_values_reach_the_flow_function_as_json_or_text(work: Path) -> None:
    done = cli(work, "run", "flows.py:needs", "--arg", "n=41", "--arg", "label=a b")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [42, "a b"]
    quoted = cli(work, "run", "flows.py:needs", "--arg", "n=1", "--arg", 'label="7"')
    assert json.loads(quoted.stdout) == [2, "7"]


def test_a_result_that_is_not_json_is_printed_as_its_repr(work: Path) -> None:
    done = cli(work, "run", "flows.py:setty")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{1}\n"


def test_a_failing_flow_exits_1_with_one_paragraph_naming_the_task(work: Path) -> None:
    done = cli(work, "run", "flows.py:failing")
    assert done.returncode == 1
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "flow 'failing' failed: task 'boom' (boom:1) failed after 3 attempt(s): "
        "ValueError: bad value 2"
    )
    assert "Traceback" not in done.stderr


def test_verbose_adds_the_traceback(work: Path) -> None:
    done = cli(work, "run", "flows.py:failing", "--verbose")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise ValueError(f"bad value {x}")' in done.stderr


def test_aggregate_names_every_failed_task(work: Path) -> None:
    done = cli(work, "run", "flows.py:two_failures", "--failure-policy", "aggregate")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    head = next(i for i, line in enumerate(lines) if "flow 'two_failures' failed:" in line)
    assert "3 tasks failed, 3 distinct failures; 1 downstream task(s) skipped" in lines[head]
    listed = lines[head + 1 :]
    assert len(listed) == 3
    for part in ("failed after 3 attempt(s): ValueError: bad value 1 [boom:0]", "[bad2:1]"):
        assert any(part in line for line in listed)
    assert "ValueError: bad value 4 [boom:3]" in listed[-1]


def test_two_identical_failures_are_counted_once_each(work: Path) -> None:
    done = cli(work, "run", "flows.py:same_failure_twice", "--failure-policy", "aggregate")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "2 tasks failed, all the same way" in lines[-2]
    assert lines[-1].startswith("  2 x task 'bad2' failed after 1 attempt(s): KeyError")
    assert "[bad2:0, bad2:1]" in lines[-1]


def test_continue_prints_the_result_with_errors_and_exits_1(work: Path) -> None:
    done = cli(work, "run", "flows.py:two_failures", "--failure-policy", "continue")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result[0]["type"] == "RetryExhaustedError"
    assert result[0]["error"].startswith("task 'boom' failed after 3 attempt(s)")
    assert result[1]["type"] == "TaskExecutionError"
    assert result[2] == 4
    assert result[3]["type"] == "UpstreamFailedError"
    lines = done.stderr.strip().splitlines()
    assert any(
        "finished with failures (failure_policy=continue): 3 tasks failed" in line for line in lines
    )
    assert "task 'boom' failed after 3 attempt(s): ValueError: bad value 4 [boom:3]" in lines[-1]


def test_a_flow_body_that_raises_exits_1(work: Path) -> None:
    done = cli(work, "run", "flows.py:body_raises")
    assert done.returncode == 1
    assert "could not be built: RuntimeError: the body is broken" in done.stderr
    assert "Traceback" not in done.stderr


def test_max_concurrency_bounds_the_run(work: Path) -> None:
    done = cli(work, "run", "flows.py:naps", "--max-concurrency", "1", "--arg", "n=3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [0, 1, 2]
    starts = [m.start() for m in re.finditer(r"task nap:\d started", done.stderr)]
    ends = [m.start() for m in re.finditer(r"task nap:\d succeeded", done.stderr)]
    assert len(starts) == len(ends) == 3
    assert starts[1] > ends[0]  # one at a time
    assert starts[2] > ends[1]


def test_file_targets_import_siblings_and_run_process_tasks(work: Path) -> None:
    done = cli(work, "run", "sub/procs.py:squares")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [0, 1, 4]
    assert "printed in a worker" in done.stderr


def test_the_etl_example_runs_via_the_cli(tmp_path: Path) -> None:
    database = tmp_path / "orders.db"
    target = f"{ROOT / 'examples' / 'etl.py'}:etl"
    done = cli(tmp_path, "run", target, "--arg", "rows=20", "--arg", f"database={database}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["loaded"] > 0
    assert summary_rows(done.stderr)["load:2"][:2] == ["succeeded", "2"]


def test_ctrl_c_cancels_the_run_and_exits_130(work: Path) -> None:
    marker = work / "started"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auto_workflow",
            "run",
            "flows.py:endless",
            "--arg",
            f"marker={marker}",
        ],
        cwd=work,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the task never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert "interrupted; the run was cancelled" in err
    assert summary_rows(err)["forever:0"][0] == "cancelled"
    assert "Traceback" not in err


# -- bad usage -------------------------------------------------------------------------------

BAD_USAGE = [
    (["run", "nosuch.mod:f"], "no module named 'nosuch.mod'"),
    (["run", "missing.py:f"], "file not found: 'missing.py'"),
    (["run", "broken.py:f"], "cannot import 'broken.py': SyntaxError: '(' was never closed"),
    (["run", "needs_dep:f"], "No module named 'not_a_real_dependency'"),
    (["run", "flows.py:nope"], "has no flow named 'nope'; flows there: add, echo_params, needs"),
    (["run", "plain.py:f"], "'plain.py' defines no @flow"),
    (["run", "flows.py:plus_one"], "'flows.py:plus_one' is a @task, not a @flow"),
    (["run", "flows.py:CONSTANT"], "is an object of type 'int', not a @flow"),
    (["run", "flows.py"], "must look like package.module:flow or path/to/file.py:flow"),
    (["run", "shadow/json.py:f"], "a module of that name is already imported"),
    (["run", "flows.py:add", "--params", "{bad"], "argument --params: not valid JSON"),
    (["run", "flows.py:add", "--params", "[1]"], "argument --params: must be a JSON object"),
    (["run", "flows.py:add", "--max-concurrency", "0"], "--max-concurrency: must be a positive"),
    (["run", "flows.py:add", "--max-concurrency", "-2"], "--max-concurrency: must be a positive"),
    (["run", "flows.py:add", "--max-concurrency", "1.5"], "--max-concurrency: must be a positive"),
    (["run", "flows.py:add", "--failure-policy", "sometimes"], "invalid choice: 'sometimes'"),
    (["run", "flows.py:add", "--arg", "y=1"], "has no parameter 'y'; its parameters: x=1"),
    (["run", "flows.py:add", "--arg", "x"], "argument --arg: expected NAME=VALUE"),
    (["run", "flows.py:add", "--arg", "x=1", "--arg", "x=2"], "--arg x is given twice"),
    (["run", "flows.py:needs", "--arg", "n=1"], "needs 'label': pass --arg label=VALUE"),
    (["describe", "flows.py:needs"], "needs 'n', 'label'"),
    (["graph", "flows.py:add", "--format", "png"], "argument --format: invalid choice: 'png'"),
    (["list", "flows.py:add"], "list takes a module or a .py file, not a flow target"),
    (["list", "nosuch"], "no module named 'nosuch'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("args", "message"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_bad_usage_exits_2_naming_what_is_wrong(work: Path, args: list[str], message: str) -> None:
    done = cli(work, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_an_import_error_shows_its_traceback_with_verbose(work: Path) -> None:
    done = cli(work, "run", "needs_dep:f", "--verbose")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "import not_a_real_dependency" in done.stderr


def test_an_invalid_log_level_is_a_usage_error(work: Path) -> None:
    done = cli(work, "list", "flows.py", AUTO_WORKFLOW_LOG_LEVEL="LOUD")
    assert done.returncode == 2
    assert "AUTO_WORKFLOW_LOG_LEVEL" in done.stderr
    assert "must be one of" in done.stderr


# -- describe, graph, list -------------------------------------------------------------------


def test_describe_prints_flow_describe_as_json(work: Path) -> None:
    done = cli(work, "describe", "flows.py:needs", "--arg", "n=1", "--arg", "label=x")
    assert done.returncode == 0, done.stderr
    expected = load_flows(work)["needs"].describe(n=1, label="x")
    assert json.loads(done.stdout) == expected
    assert expected["count"] == 1


@pytest.mark.parametrize("fmt", ["dot", "json", "mermaid"])
def test_graph_prints_each_format(work: Path, fmt: str) -> None:
    done = cli(work, "graph", "flows.py:failing", "--format", fmt)
    assert done.returncode == 0, done.stderr
    failing = load_flows(work)["failing"]
    if fmt == "json":
        assert json.loads(done.stdout) == failing.export_graph()
        return
    exported = failing.export_dot() if fmt == "dot" else failing.export_mermaid()
    assert done.stdout == exported
    assert done.stdout.startswith("digraph" if fmt == "dot" else "flowchart")


def test_list_shows_the_flows_of_a_file_and_of_a_module(work: Path) -> None:
    by_file = cli(work, "list", "flows.py")
    by_module = cli(work, "list", "flows")
    assert by_file.returncode == by_module.returncode == 0
    lines = by_file.stdout.splitlines()
    assert lines[0].split() == ["flows.py:add", "Add", "one", "to", "x."]
    assert "flows.py:echo_params (flow 'param-echo')" in by_file.stdout
    assert len(lines) == 13
    assert by_module.stdout.splitlines()[0].startswith("flows:add ")


def test_list_of_a_module_without_flows_says_so_and_exits_0(work: Path) -> None:
    done = cli(work, "list", "plain.py")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no @flow in 'plain.py'" in done.stderr


# -- progress, logging, summary --------------------------------------------------------------


def test_plain_progress_lines_go_to_stderr_when_not_a_terminal(work: Path) -> None:
    done = cli(work, "run", "flows.py:add")
    assert done.returncode == 0
    assert re.search(r"INFO +auto_workflow\.cli: flow 'add' started \(run \w+\)", done.stderr)
    assert "auto_workflow.cli: task plus_one:0 started" in done.stderr
    assert "auto_workflow.cli: task plus_one:0 succeeded in" in done.stderr
    assert "auto_workflow.cli: flow 'add' succeeded in" in done.stderr


def test_the_summary_lists_status_attempts_and_cache_of_each_task(work: Path) -> None:
    done = cli(work, "run", "flows.py:summary")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["ok", 9, 9]
    rows = summary_rows(done.stderr)
    assert rows["square:0"] == ["succeeded", "1", rows["square:0"][2], "no"]
    assert rows["square:1"] == ["cached", "0", rows["square:1"][2], "yes"]
    assert rows["flaky:2"][:2] == ["succeeded", "2"]
    assert "flow 'summary' succeeded in" in done.stderr
    assert "3 task(s): 3 done (1 cached), 0 failed, 0 skipped" in done.stderr


def test_the_summary_marks_skipped_tasks(work: Path) -> None:
    done = cli(work, "run", "flows.py:failing")
    rows = summary_rows(done.stderr)
    assert rows["plus_one:0"][0] == "succeeded"
    assert rows["boom:1"][:2] == ["failed", "3"]
    assert rows["plus_one:2"][0] == "skipped"


def test_a_long_summary_shows_failures_and_counts_the_other_successes(work: Path) -> None:
    done = cli(work, "run", "flows.py:many", "--failure-policy", "continue")
    assert done.returncode == 1
    rows = summary_rows(done.stderr)
    assert len(rows) == 100
    assert rows["odd_one_out:110"][0] == "failed"
    assert "... and 20 more task(s): 20 succeeded" in done.stderr


def test_a_flow_without_tasks_runs(work: Path) -> None:
    done = cli(work, "run", "flows.py:empty")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"nothing": "ran"}
    assert "0 task(s)" in done.stderr


def test_disabling_structured_logs_silences_every_log_line(work: Path) -> None:
    done = cli(work, "run", "flows.py:summary", AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS="1")
    assert done.returncode == 0
    assert not LOG_LINE.search(done.stderr), done.stderr
    assert "auto_workflow" not in done.stderr  # not even the library's retry line
    assert json.loads(done.stdout) == ["ok", 9, 9]
    assert "flaky:2" in summary_rows(done.stderr)


def test_log_level_warning_hides_info_lines(work: Path) -> None:
    done = cli(work, "run", "flows.py:failing", AUTO_WORKFLOW_LOG_LEVEL="WARNING")
    assert done.returncode == 1
    levels = {m.group(1) for m in LOG_LINE.finditer(done.stderr)}
    assert levels == {"WARNING", "ERROR"}
    assert "task boom:1 attempt 1 failed" in done.stderr


def run_on_a_terminal(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, stdout, terminal output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auto_workflow", *args],
        cwd=cwd,
        env=clean_env(TERM="xterm", COLUMNS="100", **env),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while select.select([master], [], [], 30)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_the_live_display_and_a_rich_summary(work: Path) -> None:
    code, out, screen = run_on_a_terminal(work, "run", "flows.py:naps", "--max-concurrency", "2")
    assert code == 0, screen
    assert json.loads(out) == [0, 1, 2, 3]
    assert "\x1b[?25l" in screen  # the live display hid the cursor while it ran
    assert re.search(r"running: nap:\d", screen)  # it named the running tasks
    assert "total 4" in screen
    assert "auto_workflow.cli:" not in screen  # no plain progress lines
    assert "┏" in screen  # the summary is a rich table
    assert "status" in screen
    assert len(re.findall(r"nap:\d .*succeeded", screen)) == 4


def test_a_terminal_without_rich_gets_plain_output(work: Path, tmp_path: Path) -> None:
    fake = tmp_path / "no_rich" / "rich"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    code, out, screen = run_on_a_terminal(work, "run", "flows.py:add", PYTHONPATH=str(fake.parent))
    assert code == 0, screen
    assert json.loads(out)["sum"] == 2
    assert "auto_workflow.cli: task plus_one:0 started" in screen
    assert "┏" not in screen


# -- entry points ----------------------------------------------------------------------------


def test_help_works_through_python_m_and_the_console_script(work: Path) -> None:
    by_module = cli(work, "--help")
    assert by_module.returncode == 0
    for command in ("run", "describe", "graph", "list"):
        assert command in by_module.stdout
    script = Path(sys.executable).parent / "auto-workflow"
    by_script = subprocess.run(
        [str(script), "run", "flows:add", "--arg", "x=5"],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert by_script.returncode == 0, by_script.stderr  # a module target from the cwd
    assert json.loads(by_script.stdout)["sum"] == 6


def test_importing_the_cli_attaches_no_log_handler_and_imports_no_rich(work: Path) -> None:
    code = (
        "import logging, sys, auto_workflow.cli; "
        "print(logging.getLogger('auto_workflow').handlers, logging.getLogger().handlers, "
        "'rich' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True
    )
    assert done.stdout == "[] [] False\n"


def test_main_returns_exit_codes_and_removes_its_log_handler(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path])
    handlers = list(logging.getLogger("auto_workflow").handlers)
    try:
        assert main(["--help"]) == 0
        assert main(["list", str(work / "missing.py")]) == 2
        assert main(["describe", f"{work / 'flows.py'}:add"]) == 0
    finally:
        sys.modules.pop("flows", None)
    captured = capsys.readouterr()
    assert '"flow": "add"' in captured.out
    assert "file not found" in captured.err
    assert logging.getLogger("auto_workflow").handlers == handlers


CHATTY = """
print("module import print")
from auto_workflow import flow, task

@task
def one() -> int:
    print("task print")
    return 1

@flow
def chatty():
    print("building graph")
    return one()
"""


@pytest.mark.parametrize(
    "command",
    [
        ["run", "chatty.py:chatty"],
        ["describe", "chatty.py:chatty"],
        ["graph", "chatty.py:chatty", "--format", "json"],
        ["graph", "chatty.py:chatty", "--format", "dot"],
        ["list", "chatty.py"],
    ],
    ids=lambda c: " ".join(c[:1] + c[2:]),
)
def test_prints_from_user_code_never_reach_stdout(work: Path, command: list[str]) -> None:
    (work / "chatty.py").write_text(CHATTY)
    done = cli(work, *command)
    assert done.returncode == 0, done.stderr
    assert "print" not in done.stdout
    assert "building graph" not in done.stdout
    assert "module import print" in done.stderr
    if command[0] in ("describe", "run") or command[-1] == "json":
        json.loads(done.stdout)  # stdout is exactly the result


def test_a_long_summary_keeps_failures_and_counts_every_other_status() -> None:
    from auto_workflow._cli._output import Status, TaskRecord
    from auto_workflow._cli._output import summary_rows as rows_of

    records = [TaskRecord(f"t:{i}", "t", Status.SKIPPED) for i in range(3000)]
    records[2500] = TaskRecord("t:2500", "t", Status.FAILED)
    records += [TaskRecord(f"ok:{i}", "ok", Status.SUCCEEDED) for i in range(5)]
    rows, left_out = rows_of(records, limit=10)
    assert len(rows) == 10
    assert rows[-1][:2] == ["t:2500", "failed"]  # kept, in build order
    assert left_out == {"skipped": 2990, "succeeded": 5}  # 2999 skipped, 9 of them shown


def test_graph_warns_when_mermaid_would_refuse_the_graph(work: Path) -> None:
    (work / "big.py").write_text(
        "from auto_workflow import flow, task\n"
        "@task\n"
        "def one(i: int) -> int:\n"
        "    return i\n"
        "@task\n"
        "def total(*xs: int) -> int:\n"
        "    return sum(xs)\n"
        "@flow\n"
        "def big():\n"
        "    return total(*[one(i) for i in range(600)])\n"
    )
    done = cli(work, "graph", "big.py:big", "--format", "mermaid")
    assert done.returncode == 0
    assert done.stdout.startswith("flowchart")
    assert "this graph has 600 edges" in done.stderr
    small = cli(work, "graph", "flows.py:add", "--format", "mermaid")
    assert "edges" not in small.stderr


@pytest.mark.parametrize("module", ["auto_workflow", "auto_workflow.cli"])
def test_both_module_paths_run_the_same_command_line(work: Path, module: str) -> None:
    # `python -m auto_workflow.cli` once did nothing and exited 0: a silent success.
    ok = subprocess.run(
        [sys.executable, "-m", module, "run", "flows.py:failing"],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 1
    assert "boom" in ok.stderr


def test_run_structured_logs_writes_one_json_object_per_task_outcome(work: Path) -> None:
    done = cli(work, "run", "flows.py:failing", "--structured-logs")
    assert done.returncode == 1
    assert json.loads(done.stdout or "null") is None  # a failed run prints no result
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    outcomes = [line for line in lines if line.get("logger") == "auto_workflow.tasks"]
    by_event = sorted((line["event"], line["task"]) for line in outcomes)
    assert by_event == [("task_err", "boom"), ("task_ok", "plus_one")]
    err = next(line for line in outcomes if line["event"] == "task_err")
    assert err["attempts"] == 3  # boom has retries=2
    assert "boom" in err["error"]
    assert isinstance(err["duration_ms"], float)
    assert err["node"] == "boom:1"


def test_structured_logs_are_silenced_by_the_disable_variable(work: Path) -> None:
    done = cli(
        work,
        "run",
        "flows.py:add",
        "--structured-logs",
        AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS="1",
    )
    assert done.returncode == 0
    assert not [line for line in done.stderr.splitlines() if line.startswith("{")]

"""The command line tells the truth, safely: bounded failure summaries, escaped untrusted
text, modules that end the program at import, unprintable results, fan-out progress and
graph exports with non-ASCII names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from auto_workflow import fan_out, flow, subscribe, task
from auto_workflow._cli._output import RunProgress, Snapshot

FLOWS = textwrap.dedent(
    """
    from auto_workflow import fan_out, flow, task


    @task
    def items(n: int) -> list[int]:
        return list(range(n))


    @task
    def check(x: int) -> int:
        if x % 10 == 3:
            raise ValueError("multiple of ten plus three")
        return x


    @task
    def distinct(x: int) -> int:
        raise ValueError(f"failure number {x}")


    @flow
    def many_same() -> list[int]:
        return fan_out(check, items(1000))


    @flow
    def many_distinct() -> list[int]:
        return fan_out(distinct, list(range(30)))


    evil = task(name="evil\\x1b[2J\\nINFO forged")(lambda: "\\x1b[31mred\\x1b[0m")


    @task
    def evil_error() -> int:
        raise ValueError("bad\\x1b[1A\\rINFO: all good")


    @flow
    def evil_names() -> str:
        return evil()


    @flow
    def evil_failure() -> int:
        return evil_error()


    class Unreprable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")


    class Ansi:
        def __repr__(self) -> str:
            return "\\x1b[31mansi\\x1b[0m"


    @task
    def unreprable() -> object:
        return Unreprable()


    @task
    def ansi() -> object:
        return Ansi()


    @task
    def huge_int() -> int:
        return 10**5000


    @task
    def huge_str() -> str:
        return "x" * 100_000_000


    @task
    def a_set() -> set:
        return {1}


    @flow
    def f_unreprable() -> object:
        return unreprable()


    @flow
    def f_ansi() -> object:
        return ansi()


    @flow
    def f_huge_int() -> int:
        return huge_int()


    @flow
    def f_huge_str() -> str:
        return huge_str()


    @flow
    def f_set() -> set:
        return a_set()


    @task
    def count_errors(values: list) -> int:
        return sum(isinstance(v, Exception) for v in values)


    @flow
    def handled() -> int:
        return count_errors(fan_out(check, items(20), return_exceptions=True))
    """
)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "auto_workflow", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "truth.py").write_text(FLOWS)
    return tmp_path


def _failure_block(stderr: str, flow_name: str, outcome: str = "failed") -> list[str]:
    lines = stderr.rstrip().splitlines()
    head = max(i for i, line in enumerate(lines) if f"flow {flow_name!r} {outcome}:" in line)
    return lines[head:]


def test_many_identical_failures_print_one_line(work: Path) -> None:
    done = _cli(work, "run", "truth.py:many_same", "--failure-policy", "aggregate")
    assert done.returncode == 1
    block = _failure_block(done.stderr, "many_same")
    assert "100 tasks failed, all the same way" in block[0]
    assert len(block) == 2
    assert block[1].startswith("  100 x task 'check' failed after 1 attempt(s): ValueError")
    assert "[check:5, check:15, check:25, ...]" in block[1]
    assert max(len(line) for line in block) < 400
    assert "ExceptionGroup" not in done.stderr
    assert "TaskExecutionError(" not in done.stderr


def test_many_distinct_failures_are_bounded_with_and_n_more(work: Path) -> None:
    done = _cli(work, "run", "truth.py:many_distinct", "--failure-policy", "continue")
    assert done.returncode == 1
    block = _failure_block(
        done.stderr, "many_distinct", "finished with failures (failure_policy=continue)"
    )
    assert "30 tasks failed, 30 distinct failures" in block[0]
    assert len(block) == 22
    assert block[-1].startswith("  and 10 more distinct failure(s) (10 task(s))")


def test_control_characters_in_names_errors_and_results_are_escaped(work: Path) -> None:
    for target in ("truth.py:evil_names", "truth.py:evil_failure", "truth.py:f_ansi"):
        done = _cli(work, "run", target)
        assert "\x1b" not in done.stdout + done.stderr, target
        assert "\r" not in done.stdout + done.stderr, target
        forged = [line for line in done.stderr.splitlines() if line.startswith("INFO")]
        assert forged == [], target
    done = _cli(work, "run", "truth.py:evil_failure")
    assert "bad\\x1b[1A\\rINFO: all good" in done.stderr


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
        ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
        ("raise SystemExit('bye')\n", "sys.exit('bye')"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ],
)
def test_a_module_that_ends_the_program_at_import_is_a_usage_error(
    tmp_path: Path, body: str, said: str
) -> None:
    (tmp_path / "quits.py").write_text(body)
    for target in ("quits.py:main", "quits:main"):
        done = _cli(tmp_path, "run", target)
        assert done.returncode == 2, (target, done.stderr)
        assert said in done.stderr
        assert "while being imported" in done.stderr
        assert done.stdout == ""


@pytest.mark.parametrize(
    ("target", "marker"),
    [
        ("truth.py:f_unreprable", "its repr raised RuntimeError: no repr for you"),
        ("truth.py:f_huge_int", "bits; its repr raised ValueError"),
        ("truth.py:f_huge_str", "100,000,000 characters; it is"),
    ],
)
def test_an_unprintable_result_is_a_bounded_placeholder_and_exit_0(
    work: Path, target: str, marker: str
) -> None:
    done = _cli(work, "run", target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<result not shown: ")
    assert marker in done.stdout
    assert len(done.stdout) < 1000
    assert "Traceback" not in done.stderr


def test_json_says_when_a_result_is_not_json(work: Path) -> None:
    done = _cli(work, "run", "truth.py:f_set", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == {"not_json": True, "type": "builtins.set", "repr": "{1}"}
    assert "the result is not JSON" in done.stderr


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def same(x: int) -> int:
    return x


@flow
def dynamic() -> list[int]:
    return fan_out(same, numbers(25))


def test_live_progress_counts_fan_out_children_when_it_expands() -> None:
    progress = RunProgress("dynamic", log=False)
    seen: list[Snapshot] = []

    def on_start(payload: dict[str, Any]) -> None:
        if payload["task"] == "same" and not seen:
            seen.append(progress.snapshot())

    subscribe("task_started", on_start)
    with progress.watch():
        assert dynamic.run(max_concurrency=1) == list(range(25))
    assert seen[0].total == 26  # the source and every child, before the first child ended


def test_graph_exports_keep_non_ascii_and_escape_quotes() -> None:
    @task(name='café "au" \\lait\nnoir')
    def drink() -> int:
        return 1

    @flow(name="menü")
    def menu() -> int:
        return drink()

    dot = menu.export_dot()
    assert 'digraph "menü" {' in dot
    assert '"café \\"au\\" \\\\lait\\nnoir:0"' in dot
    assert "\\u00e9" not in dot
    mermaid = menu.export_mermaid()
    assert "café #quot;au#quot;" in mermaid
    assert "\n" not in mermaid.splitlines()[1]
    assert "#10;noir" in mermaid


def test_handled_fan_out_failures_are_a_success_that_shows_them(work: Path) -> None:
    done = _cli(work, "run", "truth.py:handled", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"  # check:3 and check:13 failed; the consumer saw both
    assert "flow 'handled' succeeded" in done.stderr
    assert ", 2 failed, 0 skipped" in done.stderr  # the summary still shows them
    assert "finished with failures" not in done.stderr

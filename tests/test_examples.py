"""The examples are real flows: they run as scripts and give the expected results."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_etl_example_runs_as_a_script_and_leaves_nothing_behind(tmp_path: Path) -> None:
    temp, work = tmp_path / "tmp", tmp_path / "work"
    temp.mkdir()
    work.mkdir()
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "etl.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=work,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    summary = json.loads(out.stdout)
    assert summary["loaded"] > 0
    assert set(summary["per_currency"]) <= {"EUR", "USD"}
    assert list(temp.iterdir()) == []  # its scratch database is gone
    assert list(work.iterdir()) == []


def test_etl_example_loads_every_valid_row_after_a_retry(tmp_path: Path) -> None:
    module: dict[str, Any] = runpy.run_path(str(EXAMPLES / "etl.py"))
    etl = module["etl"]
    rows = module["extract"].fn(30)
    valid = [r for r in map(module["clean"].fn, rows) if r is not None]
    summary = etl.run(30, database=str(tmp_path / "orders.db"))
    assert summary["loaded"] == len(valid)
    expected: dict[str, float] = {}
    for row in valid:
        expected[row["currency"]] = expected.get(row["currency"], 0) + row["amount"]
    assert summary["per_currency"] == {k: round(v, 2) for k, v in expected.items()}
    described = etl.describe(30, database=str(tmp_path / "x.db"))
    assert [n["task"] for n in described["nodes"]] == ["extract", "clean", "load", "summarise"]
    assert described["nodes"][1]["kind"] == "fanout"


def _report(folder: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "report.py"), str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_report_example_reuses_every_result_in_its_second_run_and_next_process(
    tmp_path: Path,
) -> None:
    first = _report(tmp_path)
    assert first["tasks_reused"] == {"first_run": 0, "second_run": 8}
    again = _report(tmp_path)  # a new process, the same folder
    assert again["tasks_reused"] == {"first_run": 8, "second_run": 8}
    assert again["report"] == first["report"]
    regions = first["report"]["regions"]
    assert set(regions) == {"north", "south", "east", "west"}
    assert first["report"]["total_revenue"] == round(sum(r["revenue"] for r in regions.values()), 2)
    artifacts = list((tmp_path / "artifacts").glob("*.json"))
    assert len(artifacts) == 4  # one JSON artifact per region, written once (plus checksums)

"""examples/csv_to_postgres.py runs as a script against the test cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from servers import Postgres

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "csv_to_postgres.py"


def _run(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_example_loads_the_csv_and_queries_it_back(
    postgres_cluster: Postgres, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_CONNECTORS")}
    env |= {
        "AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__KIND": "postgres",
        "AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__DSN": "secret://EXAMPLE_DSN",
        "EXAMPLE_DSN": postgres_cluster.dsn,
    }
    done = _run(env, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["loaded"] == 1000
    assert set(summary["revenue"]) == {"EUR", "USD"}
    assert postgres_cluster.password not in done.stdout + done.stderr
    again = json.loads(_run(env, tmp_path).stdout)  # replaces the rows, never duplicates
    assert again == summary


def test_without_a_warehouse_it_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_CONNECTORS")}
    done = _run(env, tmp_path)
    assert done.returncode == 2
    assert "AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__DSN" in done.stderr

"""A sales report whose results survive the process: run it twice, the second run is free.

Each region's rows are loaded once and persisted as a JSON artifact; the per-region
summaries are cached in a filesystem result cache. Both live in one folder (default
``.aw_report``, or the first command-line argument), so a second run, in this process or
in another one, reuses every result instead of recomputing it.

Run it: ``python examples/report.py [FOLDER]`` prints the report and how many tasks each
of its two runs reused. The command line runs the flow with the configured backends:
``AUTO_WORKFLOW_RESULT_CACHE=filesystem auto-workflow run examples/report.py:report``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from auto_workflow import flow, subscribe, task
from auto_workflow.artifacts import ArtifactRef, FilesystemArtifactStore, get_store, set_store
from auto_workflow.cache import FilesystemResultCache, set_result_cache

REGIONS = ("north", "south", "east", "west")


@task(cache_ttl=24 * 3600, persist=True)
def load_region(region: str, rows: int) -> list[dict[str, Any]]:
    """Stands in for an expensive extract: deterministic synthetic sales for one region."""
    rng = random.Random(f"{region}:{rows}")
    return [
        {"order": i, "amount": round(rng.uniform(5, 500), 2), "returned": rng.random() < 0.1}
        for i in range(rows)
    ]


@task(cache_ttl=24 * 3600)
def summarise(region: str, orders: ArtifactRef) -> dict[str, Any]:
    """Revenue and return rate of one region, read from its persisted rows."""
    rows = get_store().get(orders)
    kept = [r["amount"] for r in rows if not r["returned"]]
    return {
        "region": region,
        "orders": len(rows),
        "revenue": round(sum(kept), 2),
        "return_rate": round(1 - len(kept) / len(rows), 3),
    }


@task
def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole report: every region, the total and the best region."""
    best = max(parts, key=lambda p: p["revenue"])
    return {
        "regions": {p["region"]: p for p in parts},
        "total_revenue": round(sum(p["revenue"] for p in parts), 2),
        "best_region": best["region"],
    }


@flow
def report(rows: int = 2000) -> dict[str, Any]:
    """Load every region (persisted), summarise each (cached), combine."""
    return combine([summarise(region, load_region(region, rows)) for region in REGIONS])


def use_folder(folder: Path) -> None:
    """Keep cached results and artifacts (as JSON) under ``folder``."""
    set_result_cache(FilesystemResultCache(folder / "cache"))
    set_store(FilesystemArtifactStore(folder / "artifacts", serializer="json"))


def main(folder: Path) -> dict[str, Any]:
    use_folder(folder)
    reused: list[str] = []
    subscribe("task_cached", lambda name, payload: reused.append(payload["node"]))
    first = report.run()
    reused_first = len(reused)
    second = report.run()
    assert second == first
    return {
        "report": first,
        "tasks_reused": {"first_run": reused_first, "second_run": len(reused) - reused_first},
    }


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".aw_report")
    print(json.dumps(main(target), indent=2))

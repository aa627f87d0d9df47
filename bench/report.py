"""Benchmark of the HTML run report: render time, file size, and time to open in Chromium.

    .venv/bin/python bench/report.py               # 10k and 100k tasks
    .venv/bin/python bench/report.py --sizes 1000  # any sizes
    .venv/bin/python bench/report.py --check       # exit 1 if a target is missed

Each size is a synthetic run shaped like a real one: a few setup tasks, one dynamic fan-out
holding almost all the calls (run 32 at a time; 1% fail with a traceback, 2% retry once,
5% come from the cache), and a skipped tail behind it; plus, at the largest size, a static
"wide" run of the same size without a fan-out, whose graph must fold calls by task name.

Measured: ``render_report`` wall time (best of 3), the page's size, and in headless
Chromium (when one is installed) the time from navigation to the page's script having
drawn everything, then the time to filter the task table by text, to sort it, and to
redraw the timeline after scrolling it, which is what "usable" means at 100k tasks.
Targets: 10k opens in < 2 s; 100k renders in < 3 s into < 15 MB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from auto_workflow._history._records import (
    AttemptRecord,
    ErrorRecord,
    RunRecord,
    RunStatus,
    TaskRecord,
    TaskStatus,
)
from auto_workflow._history._report import render_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "history"))
import browser as cdp

T0 = 1_733_500_000.0
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "/srv/etl/step{k}.py", line {10 + k}, in step{k}\n    do_step_{k}()\n'
        for k in range(12)
    )
    + "ValueError: bad row\n"
)
TARGET_OPEN_10K_MS = 2000
TARGET_RENDER_100K_S = 3.0
TARGET_SIZE_100K_MB = 15.0


def _child(index: int, item: int, start: float, barrier: str) -> tuple[TaskRecord, float]:
    """One fan-out child and its end time (seconds from T0)."""
    length = 0.02 + (item * 7919 % 100) / 1000
    kind = item % 100
    node = f"enrich:{index}"
    common: dict[str, Any] = {
        "node": node,
        "task": "enrich",
        "index": index,
        "fanout": barrier,
        "item": item,
    }
    if kind == 0:
        error = ErrorRecord(type="ValueError", message=f"bad row {item}", traceback=TRACEBACK)
        return TaskRecord(
            status=TaskStatus.FAILED,
            attempts=1,
            started_at=T0 + start,
            ended_at=T0 + start + length,
            error=error,
            **common,
        ), start + length
    if kind in (1, 2):
        first = ErrorRecord(type="TimeoutError", message="timed out after 0.1 s")
        log = (
            AttemptRecord(
                number=1, started_at=T0 + start, ended_at=T0 + start + length, error=first
            ),
            AttemptRecord(
                number=2, started_at=T0 + start + 2 * length, ended_at=T0 + start + 3 * length
            ),
        )
        end = start + 3 * length
        return TaskRecord(
            status=TaskStatus.SUCCEEDED,
            attempts=2,
            started_at=T0 + start,
            ended_at=T0 + end,
            attempt_log=log,
            **common,
        ), end
    if kind < 8:
        return TaskRecord(
            status=TaskStatus.CACHED, started_at=T0 + start, ended_at=T0 + start + 0.001, **common
        ), start + 0.001
    return TaskRecord(
        status=TaskStatus.SUCCEEDED,
        attempts=1,
        started_at=T0 + start,
        ended_at=T0 + start + length,
        **common,
    ), start + length


def fanout_run(n: int, width: int = 32) -> RunRecord:
    """Setup, one fan-out of ``n - 6`` children run ``width`` at a time, a skipped tail."""
    head = [
        TaskRecord(
            node="extract:0",
            task="extract",
            index=0,
            status=TaskStatus.SUCCEEDED,
            attempts=1,
            started_at=T0,
            ended_at=T0 + 1.0,
        ),
        TaskRecord(
            node="plan:1",
            task="plan",
            index=1,
            status=TaskStatus.SUCCEEDED,
            attempts=1,
            started_at=T0 + 1.0,
            ended_at=T0 + 1.5,
            upstream=("extract:0",),
        ),
    ]
    free = [1.5] * width
    children = []
    for item in range(n - 6):
        lane = item % width
        child, free[lane] = _child(3 + item, item, free[lane], "fanout:2")
        children.append(child)
    end = max(free)
    barrier = TaskRecord(
        node="fanout:2",
        task="fan_out(enrich)",
        index=2,
        kind="fanout",
        status=TaskStatus.FAILED,
        started_at=T0 + 1.5,
        ended_at=T0 + end,
        upstream=("plan:1",),
    )
    k = n - 3
    tail = [
        TaskRecord(
            node=f"{name}:{k + j}",
            task=name,
            index=k + j,
            status=TaskStatus.SKIPPED,
            upstream=(up,),
        )
        for j, (name, up) in enumerate(
            [
                ("aggregate", "fanout:2"),
                ("publish", f"aggregate:{k}"),
                ("notify", f"publish:{k + 1}"),
            ]
        )
    ]
    return RunRecord(
        run_id=f"bench-{n}",
        flow="bench_etl",
        status=RunStatus.FAILED,
        started_at=T0,
        ended_at=T0 + end + 0.01,
        host="bench",
        params={"n": n},
        tasks=(*head, barrier, *children, *tail),
    )


def wide_run(n: int, width: int = 32) -> RunRecord:
    """``n - 1`` static calls of ``inc`` (16 task names) feeding one ``total``: no fan-out."""
    tasks, free = [], [0.0] * width
    for i in range(n - 1):
        lane, name = i % width, f"inc{i % 16}"
        start, free[lane] = free[lane], free[lane] + 0.01
        tasks.append(
            TaskRecord(
                node=f"{name}:{i}",
                task=name,
                index=i,
                attempts=1,
                status=TaskStatus.SUCCEEDED,
                started_at=T0 + start,
                ended_at=T0 + free[lane],
            )
        )
    end = max(free)
    tasks.append(
        TaskRecord(
            node=f"total:{n - 1}",
            task="total",
            index=n - 1,
            attempts=1,
            status=TaskStatus.SUCCEEDED,
            started_at=T0 + end,
            ended_at=T0 + end + 0.01,
            upstream=tuple(t.node for t in tasks),
        )
    )
    return RunRecord(
        run_id=f"wide-{n}",
        flow="bench_wide",
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        ended_at=T0 + end + 0.02,
        tasks=tuple(tasks),
    )


def time_render(run: RunRecord) -> tuple[float, str]:
    """Best of 3 ``render_report`` wall times, and the page."""
    best, page = float("inf"), ""
    for _ in range(3):
        began = time.perf_counter()
        page = render_report(run)
        best = min(best, time.perf_counter() - began)
    return best, page


_INTERACT = """(async () => {
  const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  const input = document.getElementById('task-search');
  let t = performance.now();
  input.value = 'enrich[4'; input.dispatchEvent(new Event('input'));
  await new Promise(r => setTimeout(r, 130)); await frame();
  const filter = performance.now() - t - 120;
  t = performance.now();
  document.querySelector('#table .thead [data-key=dur]').click(); await frame();
  const sort = performance.now() - t;
  const scroll = document.querySelector('.gantt-scroll');
  t = performance.now();
  if (scroll) {
    scroll.scrollTop = scroll.scrollHeight / 2; scroll.dispatchEvent(new Event('scroll'));
  }
  await frame();
  const gantt = performance.now() - t;
  return {filter, sort, gantt, rows: window.__report.shownRows()};
})()"""


def time_open(path: Path, page: cdp.Page) -> dict[str, float]:
    """Navigation to fully drawn (ms), then the cost of a filter, a sort and a scroll."""
    page.goto(path.as_uri(), timeout=60)
    page.wait_for("window.__report && window.__report.ready", timeout=60)
    opened = page.evaluate("window.__report.readyAt")
    interact = page.evaluate(_INTERACT, timeout=60)
    errors = page.errors()
    if errors:
        raise RuntimeError(f"the page reported errors: {errors[:3]}")
    return {"open_ms": opened, **interact}


def measure(run: RunRecord, label: str, page: cdp.Page | None, folder: Path) -> dict[str, float]:
    seconds, html = time_render(run)
    path = folder / f"{label}.html"
    path.write_text(html, encoding="utf-8")
    row = {"render_s": seconds, "size_mb": len(html.encode()) / 1e6}
    if page is not None:
        row.update(time_open(path, page))
    return row


def _print(label: str, row: dict[str, float]) -> None:
    parts = [f"{label:>12}", f"render {row['render_s']:.2f} s", f"size {row['size_mb']:.2f} MB"]
    if "open_ms" in row:
        parts += [
            f"open {row['open_ms']:.0f} ms",
            f"filter {row['filter']:.0f} ms",
            f"sort {row['sort']:.0f} ms",
            f"gantt scroll {row['gantt']:.0f} ms",
        ]
    print("  ".join(parts), flush=True)


def _missed(results: dict[str, dict[str, float]]) -> list[str]:
    missed = []
    ten, hundred = results.get("fanout-10000"), results.get("fanout-100000")
    if ten and ten.get("open_ms", 0) > TARGET_OPEN_10K_MS:
        missed.append(f"10k opens in {ten['open_ms']:.0f} ms > {TARGET_OPEN_10K_MS} ms")
    if hundred and hundred["render_s"] > TARGET_RENDER_100K_S:
        missed.append(f"100k renders in {hundred['render_s']:.2f} s > {TARGET_RENDER_100K_S} s")
    if hundred and hundred["size_mb"] > TARGET_SIZE_100K_MB:
        missed.append(f"100k page is {hundred['size_mb']:.1f} MB > {TARGET_SIZE_100K_MB} MB")
    return missed


def _runs(sizes: list[int]) -> list[tuple[str, RunRecord]]:
    runs = [(f"fanout-{n}", fanout_run(n)) for n in sizes]
    return [*runs, (f"wide-{max(sizes)}", wide_run(max(sizes)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        binary = cdp.find_chromium()
        if binary is None:
            print("no Chromium found: measuring render time and size only")
        with cdp.Browser.start(binary) if binary else _nothing() as browser:
            page = browser.new_page() if browser else None
            for label, run in _runs(sizes):
                results[label] = measure(run, label, page, Path(tmp))
                _print(label, results[label])
    missed = _missed(results)
    for line in missed:
        print("MISSED:", line)
    return 1 if args.check and missed else 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())

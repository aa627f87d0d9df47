"""Turn the children's measurements into the printed report and the target verdicts."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from _work import BIG_CHAIN_MB, SLEEP_SECONDS, THREAD_CONCURRENCY, TINY_WORKERS

OVERHEAD_CASES = ("wide", "chain", "dynamic", "layered")
"""Trivial tasks: what is measured is the cost per task (µs), ours against asyncio."""

WALL_CASES = ("thread_sleep", "process", "process_tiny")
"""Real work off the loop: what is measured is wall seconds, ours against the baseline."""

LATENCY_CASES = ("chain", "layered")
"""Shapes where each task waits for the last: the engine's done -> ready -> start path."""

MEMORY_CASES = ("big_chain",)
"""Large results: what is measured is peak RSS, ours against plain function calls."""

CACHE_CASES = ("cache",)
"""Every call a memory-cache hit: measured against the same graph with the task running."""

MAX_OVERHEAD_RATIO = 2.0
MAX_CACHE_HIT_RATIO = 1.0
MAX_SEAMS_RATIO = 1.05
MAX_FLATNESS = 1.5
FLATNESS_MAX_N = 100_000
"""The round-1 sizes: at 1M a run is memory-bound (asyncio's own µs/task triples), and
``wide`` 1M has a target of its own."""
MAX_RSS_RATIO = 1.5
RSS_TARGET_N = 100_000
MAX_THREAD_SLEEP_SECONDS = 0.12
MAX_PROCESS_RATIO = 1.05
MAX_LATENCY_RATIO = 1.0
WIDE_BIG_N = 1_000_000
MAX_WIDE_BIG_RATIO = 0.35
MAX_WIDE_BIG_RSS_MB = 350.0
MAX_TINY_PROCESS_RATIO = 1.2
MAX_BIG_CHAIN_RSS_MB = 150.0


@dataclass(frozen=True, slots=True)
class Job:
    """One child run: a case at a size by one implementation (ours, asyncio or loop)."""

    case: str
    size: str
    impl: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    seconds: float
    rss_mb: float
    digest: str


@dataclass(frozen=True, slots=True)
class Failure:
    error: str


Outcome = Measurement | Failure


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    met: bool | None
    """None when nothing was measured for this target in this run."""
    detail: str


@dataclass(frozen=True, slots=True)
class Row:
    """Ours and the baseline for one (case, size), when both ran and agree."""

    case: str
    size: str
    ours: Measurement
    base: Measurement

    @property
    def n(self) -> int:
        return size_n(self.size)

    @property
    def ratio(self) -> float:
        return self.ours.seconds / self.base.seconds

    @property
    def rss_ratio(self) -> float:
        return self.ours.rss_mb / self.base.rss_mb

    def us_per_task(self, m: Measurement) -> float:
        return m.seconds / self.n * 1e6


def size_n(size: str) -> int:
    """The task count of a size token (``"10x100"`` is 1000)."""
    layers, sep, width = size.partition("x")
    return int(layers) * int(width) if sep else int(size)


def render(outcomes: Mapping[Job, Outcome], *, work: int, header: str) -> tuple[str, bool]:
    """The whole report, and whether any target was missed (a failed run counts)."""
    failures = _failures(outcomes)
    rows = _rows(outcomes, failures)
    overhead = [r for r in rows if r.case in OVERHEAD_CASES]
    wall = [r for r in rows if r.case in WALL_CASES]
    memory = [r for r in rows if r.case in MEMORY_CASES]
    cached = _pairs(rows, outcomes, CACHE_CASES, "uncached")
    bare = _pairs(rows, outcomes, ("wide",), "bare")
    verdicts = _verdicts(overhead, wall, cached, failures)
    verdicts.insert(3, _seams_verdict(bare))
    verdicts[1:1] = [_latency_verdict(overhead), _wide_big_verdict(overhead)]
    verdicts.append(_memory_verdict(memory))
    parts = [header]
    if overhead:
        parts += ["", "Per-task overhead (trivial async tasks)", _overhead_table(overhead)]
    loop = _loop_table(overhead, outcomes)
    if loop:
        parts += ["", "chain against a plain `await` loop (information, no target)", loop]
    if wall:
        parts += ["", "Wall clock (real work in threads / processes)", _wall_table(wall)]
        parts += _wall_notes(wall, work)
    if memory:
        title = f"A chain of large results (each a fresh {BIG_CHAIN_MB} MB) against plain calls"
        parts += ["", title, _memory_table(memory)]
    if bare:
        title = "Unused seams (events, middleware, tracing) against a build without them"
        parts += ["", title, _bare_table(bare)]
    if cached:
        title = "Cache hits (memory backend) against running the trivial task (uncached)"
        parts += ["", title, _cache_table(cached)]
    parts += ["", "Targets", *(_verdict_line(v) for v in verdicts)]
    if failures:
        parts += ["", "Failed runs", *(f"  {j.case} {j.size} {j.impl}: {e}" for j, e in failures)]
    missed = bool(failures) or any(v.met is False for v in verdicts)
    return "\n".join(parts), missed


def _failures(outcomes: Mapping[Job, Outcome]) -> list[tuple[Job, str]]:
    found = [(job, o.error) for job, o in outcomes.items() if isinstance(o, Failure)]
    for job, outcome in outcomes.items():
        base = outcomes.get(Job(job.case, job.size, "asyncio"))
        if job.impl == "asyncio" or not isinstance(base, Measurement):
            continue
        if isinstance(outcome, Measurement) and outcome.digest != base.digest:
            found.append((job, "result differs from the asyncio baseline's"))
    return found


def _rows(outcomes: Mapping[Job, Outcome], failures: list[tuple[Job, str]]) -> list[Row]:
    failed = {(j.case, j.size) for j, _ in failures}
    rows = []
    for job, outcome in outcomes.items():
        base = outcomes.get(Job(job.case, job.size, "asyncio"))
        if job.impl != "ours" or (job.case, job.size) in failed:
            continue
        if isinstance(outcome, Measurement) and isinstance(base, Measurement):
            rows.append(Row(job.case, job.size, outcome, base))
    return rows


# -- tables ---------------------------------------------------------------------------------


def _overhead_table(rows: list[Row]) -> str:
    headers = ["case", "N", "ours µs/task", "asyncio µs/task", "ours/asyncio"]
    headers += ["ours RSS MB", "asyncio RSS MB", "RSS ratio"]
    body = [
        [
            r.case,
            _size_label(r.size),
            f"{r.us_per_task(r.ours):.2f}",
            f"{r.us_per_task(r.base):.2f}",
            f"{r.ratio:.2f}",
            f"{r.ours.rss_mb:.1f}",
            f"{r.base.rss_mb:.1f}",
            f"{r.rss_ratio:.2f}",
        ]
        for r in rows
    ]
    return _table(headers, body)


def _loop_table(rows: list[Row], outcomes: Mapping[Job, Outcome]) -> str:
    body = []
    for r in rows:
        loop = outcomes.get(Job(r.case, r.size, "loop"))
        if isinstance(loop, Measurement):
            loop_us = loop.seconds / r.n * 1e6
            ratio = f"{r.ours.seconds / loop.seconds:.1f}"
            body.append(
                [_size_label(r.size), f"{r.us_per_task(r.ours):.2f}", f"{loop_us:.2f}", ratio]
            )
    if not body:
        return ""
    return _table(["N", "ours µs/task", "await-loop µs/task", "ours/loop"], body)


def _wall_table(rows: list[Row]) -> str:
    headers = ["case", "calls", "ours s", "baseline s", "ours/baseline"]
    headers += ["ours RSS MB", "baseline RSS MB", "RSS ratio"]
    body = [
        [
            r.case,
            str(r.n),
            f"{r.ours.seconds:.3f}",
            f"{r.base.seconds:.3f}",
            f"{r.ratio:.3f}",
            f"{r.ours.rss_mb:.1f}",
            f"{r.base.rss_mb:.1f}",
            f"{r.rss_ratio:.2f}",
        ]
        for r in rows
    ]
    return _table(headers, body)


def _memory_table(rows: list[Row]) -> str:
    headers = ["links", "ours s", "plain s", "ours RSS MB", "plain RSS MB", "RSS ratio"]
    body = [
        [
            str(r.n),
            f"{r.ours.seconds:.3f}",
            f"{r.base.seconds:.3f}",
            f"{r.ours.rss_mb:.1f}",
            f"{r.base.rss_mb:.1f}",
            f"{r.rss_ratio:.2f}",
        ]
        for r in rows
    ]
    return _table(headers, body)


def _pairs(
    rows: list[Row], outcomes: Mapping[Job, Outcome], cases: tuple[str, ...], impl: str
) -> list[tuple[Row, Measurement]]:
    """Each row of ``cases`` with its measurement by the variant ``impl`` of our side."""
    pairs = []
    for r in rows:
        other = outcomes.get(Job(r.case, r.size, impl))
        if r.case in cases and isinstance(other, Measurement):
            pairs.append((r, other))
    return pairs


def _bare_table(pairs: list[tuple[Row, Measurement]]) -> str:
    headers = ["N", "ours µs/task", "without seams µs/task", "ours/without"]
    body = [
        [
            _size_label(r.size),
            f"{r.us_per_task(r.ours):.2f}",
            f"{r.us_per_task(b):.2f}",
            f"{r.ours.seconds / b.seconds:.3f}",
        ]
        for r, b in pairs
    ]
    return _table(headers, body)


def _cache_table(pairs: list[tuple[Row, Measurement]]) -> str:
    headers = ["N", "hit µs/task", "uncached µs/task", "hit/uncached", "asyncio µs/task"]
    body = [
        [
            _size_label(r.size),
            f"{r.us_per_task(r.ours):.2f}",
            f"{r.us_per_task(u):.2f}",
            f"{r.ours.seconds / u.seconds:.2f}",
            f"{r.us_per_task(r.base):.2f}",
        ]
        for r, u in pairs
    ]
    return _table(headers, body)


def _wall_notes(rows: list[Row], work: int) -> list[str]:
    notes = []
    if any(r.case == "thread_sleep" for r in rows):
        notes.append(
            f"  thread_sleep: time.sleep({SLEEP_SECONDS}) per call, max_concurrency="
            f"{THREAD_CONCURRENCY}; baseline asyncio.to_thread\n  on a "
            f"ThreadPoolExecutor({THREAD_CONCURRENCY}) default executor + "
            f"Semaphore({THREAD_CONCURRENCY})."
        )
    if any(r.case == "process" for r in rows):
        notes.append(
            f"  process: pure-Python loop of {work:,} iterations per call (~0.2 s here);\n"
            "  baseline ProcessPoolExecutor().map. Both pools were warmed before timing (one "
            "call per\n  worker), so worker start-up is excluded on both sides."
        )
    if any(r.case == "process_tiny" for r in rows):
        notes.append(
            f"  process_tiny: N calls of `i * i` on {TINY_WORKERS} worker processes, one flow "
            f"(fan_out); baseline\n  ProcessPoolExecutor({TINY_WORKERS}).map. Warmed as for "
            "process; what is measured is the pool itself."
        )
    return notes


def _table(headers: list[str], body: list[list[str]]) -> str:
    """Columns padded to fit; text columns (the first) left, numbers right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def _size_label(size: str) -> str:
    n = _short(size_n(size))
    return f"{n} ({size})" if "x" in size else n


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# -- targets --------------------------------------------------------------------------------


def _verdicts(
    overhead: list[Row],
    wall: list[Row],
    cached: list[tuple[Row, Measurement]],
    failures: list[tuple[Job, str]],
) -> list[Verdict]:
    broken = {j.case for j, _ in failures}
    verdicts = [_overhead_verdict(overhead), _flatness_verdict(overhead), _rss_verdict(overhead)]
    verdicts += [_thread_verdict(wall), _process_verdict(wall), _tiny_process_verdict(wall)]
    verdicts.append(_cache_verdict(cached))
    if broken:
        note = f"runs failed: {', '.join(sorted(broken))} (see below)"
        verdicts.append(Verdict("every run completed with the right result", False, note))
    return verdicts


def _overhead_verdict(rows: list[Row]) -> Verdict:
    target = f"ours <= {MAX_OVERHEAD_RATIO:g}x asyncio per task, every case and size"
    if not rows:
        return Verdict(target, None, "not measured")
    worst = max(rows, key=lambda r: r.ratio)
    detail = f"worst {worst.ratio:.2f}x ({worst.case} {_size_label(worst.size)})"
    return Verdict(target, worst.ratio <= MAX_OVERHEAD_RATIO, detail)


def _latency_verdict(rows: list[Row]) -> Verdict:
    target = f"chain and layered <= {MAX_LATENCY_RATIO:g}x asyncio per task, every size"
    mine = [r for r in rows if r.case in LATENCY_CASES]
    if not mine:
        return Verdict(target, None, "not measured")
    detail = ", ".join(f"{r.case} {_size_label(r.size)} {r.ratio:.2f}x" for r in mine)
    return Verdict(target, all(r.ratio <= MAX_LATENCY_RATIO for r in mine), detail)


def _wide_big_verdict(rows: list[Row]) -> Verdict:
    target = (
        f"wide {_short(WIDE_BIG_N)}: <= {MAX_WIDE_BIG_RATIO:g}x asyncio and "
        f"<= {MAX_WIDE_BIG_RSS_MB:g} MB peak RSS"
    )
    row = next((r for r in rows if r.case == "wide" and r.n >= WIDE_BIG_N), None)
    if row is None:
        return Verdict(target, None, "not measured")
    met = row.ratio <= MAX_WIDE_BIG_RATIO and row.ours.rss_mb <= MAX_WIDE_BIG_RSS_MB
    detail = f"{row.ratio:.2f}x, {row.ours.rss_mb:.0f} MB (asyncio {row.base.rss_mb:.0f} MB)"
    return Verdict(target, met, detail)


def _memory_verdict(rows: list[Row]) -> Verdict:
    target = f"a chain of {BIG_CHAIN_MB} MB results peaks <= {MAX_BIG_CHAIN_RSS_MB:g} MB RSS"
    if not rows:
        return Verdict(target, None, "not measured")
    detail = ", ".join(
        f"{r.n} links: {r.ours.rss_mb:.0f} MB (plain calls {r.base.rss_mb:.0f} MB)" for r in rows
    )
    return Verdict(target, all(r.ours.rss_mb <= MAX_BIG_CHAIN_RSS_MB for r in rows), detail)


def _flatness_verdict(rows: list[Row]) -> Verdict:
    target = (
        f"cost per task flat: µs/task at largest / smallest size <= {MAX_FLATNESS:g} "
        f"(sizes up to {_short(FLATNESS_MAX_N)})"
    )
    spans = []
    for case in OVERHEAD_CASES:
        mine = sorted(
            (r for r in rows if r.case == case and r.n <= FLATNESS_MAX_N), key=lambda r: r.n
        )
        if len(mine) >= 2:
            spans.append((case, mine[0], mine[-1], _flatness(mine[0], mine[-1])))
    if not spans:
        return Verdict(target, None, "needs two sizes of a case")
    detail = ", ".join(
        f"{case} {f:.2f} ({_short(lo.n)}->{_short(hi.n)}; asyncio {_base_flatness(lo, hi):.2f})"
        for case, lo, hi, f in spans
    )
    return Verdict(target, all(f <= MAX_FLATNESS for *_, f in spans), detail)


def _flatness(lo: Row, hi: Row) -> float:
    return hi.us_per_task(hi.ours) / lo.us_per_task(lo.ours)


def _base_flatness(lo: Row, hi: Row) -> float:
    return hi.us_per_task(hi.base) / lo.us_per_task(lo.base)


def _rss_verdict(rows: list[Row]) -> Verdict:
    target = f"peak RSS at N >= {_short(RSS_TARGET_N)} <= {MAX_RSS_RATIO:g}x the asyncio baseline"
    big = [r for r in rows if r.n >= RSS_TARGET_N]
    if not big:
        return Verdict(target, None, "not measured")
    detail = ", ".join(f"{r.case} {r.rss_ratio:.2f}x" for r in big)
    return Verdict(target, all(r.rss_ratio <= MAX_RSS_RATIO for r in big), detail)


def _thread_verdict(rows: list[Row]) -> Verdict:
    target = f"thread_sleep wall <= {MAX_THREAD_SLEEP_SECONDS:g} s"
    return _wall_verdict(
        rows, "thread_sleep", target, lambda r: r.ours.seconds <= MAX_THREAD_SLEEP_SECONDS
    )


def _process_verdict(rows: list[Row]) -> Verdict:
    target = f"process wall within {MAX_PROCESS_RATIO - 1:.0%} of a raw ProcessPoolExecutor"
    return _wall_verdict(rows, "process", target, lambda r: r.ratio <= MAX_PROCESS_RATIO)


def _tiny_process_verdict(rows: list[Row]) -> Verdict:
    target = (
        f"process_tiny <= {MAX_TINY_PROCESS_RATIO:g}x a raw ProcessPoolExecutor({TINY_WORKERS}).map"
    )
    return _wall_verdict(rows, "process_tiny", target, lambda r: r.ratio <= MAX_TINY_PROCESS_RATIO)


def _wall_verdict(rows: list[Row], case: str, target: str, ok: Callable[[Row], bool]) -> Verdict:
    row = next((r for r in rows if r.case == case), None)
    if row is None:
        return Verdict(target, None, "not measured")
    detail = f"ours {row.ours.seconds:.3f} s, baseline {row.base.seconds:.3f} s ({row.ratio:.3f}x)"
    return Verdict(target, ok(row), detail)


def _cache_verdict(pairs: list[tuple[Row, Measurement]]) -> Verdict:
    target = (
        f"a flow of memory-cache hits costs <= {MAX_CACHE_HIT_RATIO:g}x the asyncio program "
        "running the task"
    )
    if not pairs:
        return Verdict(target, None, "not measured")
    worst = max(pairs, key=lambda pair: pair[0].ratio)
    row, uncached = worst
    detail = (
        f"every call a hit / asyncio: {row.ratio:.2f}x (/ the same flow uncached, "
        f"for information: {row.ours.seconds / uncached.seconds:.2f}x)"
    )
    return Verdict(target, row.ratio <= MAX_CACHE_HIT_RATIO, detail)


def _seams_verdict(pairs: list[tuple[Row, Measurement]]) -> Verdict:
    target = f"unused events/middleware/tracing cost <= {MAX_SEAMS_RATIO - 1:.0%} (wide)"
    if not pairs:
        return Verdict(target, None, "not measured")
    ratios = [(r.ours.seconds / b.seconds, r) for r, b in pairs]
    worst, row = max(ratios, key=lambda x: x[0])
    detail = f"worst {worst:.3f}x ({_size_label(row.size)})"
    return Verdict(target, worst <= MAX_SEAMS_RATIO, detail)


def _verdict_line(v: Verdict) -> str:
    mark = {True: "met   ", False: "MISSED", None: "n/a   "}[v.met]
    indent = " " * 11
    detail = textwrap.fill(v.detail, width=100, initial_indent=indent, subsequent_indent=indent)
    return f"  [{mark}] {v.target}\n{detail}"

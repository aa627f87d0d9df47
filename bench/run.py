"""Benchmark auto_workflow against hand-written asyncio: ``python bench/run.py``.

Every (case, size, implementation) runs in a fresh interpreter (``bench/_ours.py`` or
``bench/_baseline.py``), so each peak-RSS figure belongs to one case. The report goes to
stdout and to ``bench/results/latest.txt``; see ``bench/README.md`` for cases and targets.

The children run with the run history off (``AUTO_WORKFLOW_HISTORY=off``, every other
``AUTO_WORKFLOW_*`` variable removed): these are the engine's figures, and a benchmark
must not write into the developer's own history. ``bench/history.py`` measures what the
history adds.

Options: ``--quick`` (smallest size of each case), ``--cases wide,chain``, ``--sizes
1k,10k,10x100`` and ``--check`` (exit 1 if a target is missed; otherwise always exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from _report import (
    OVERHEAD_CASES,
    Failure,
    Job,
    Measurement,
    Outcome,
    render,
    size_n,
)
from _work import TINY_WORKERS, spin

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "latest.txt"

DEFAULT_SIZES: dict[str, tuple[str, ...]] = {
    "wide": ("1000", "10000", "100000", "1000000"),
    "chain": ("1000", "10000", "100000"),
    "dynamic": ("1000", "10000", "100000"),
    "layered": ("10x50", "20x50", "10x100", "100x100", "50x200", "100x1000"),
    "thread_sleep": ("64",),
    "process": ("16",),
    "process_tiny": ("2000",),
    "big_chain": ("50",),
    "cache": ("10000",),
}
SCALABLE = frozenset(OVERHEAD_CASES)
"""Cases whose size ``--sizes`` sets; the wall-clock cases have fixed sizes."""

CHILD_ENV = {"AUTO_WORKFLOW_HISTORY": "off"}
"""Set in every child: engine figures, without the history's fixed cost per run."""

CASE_ENV = {"process_tiny": {"AUTO_WORKFLOW_PROCESS_POOL_MAX_WORKERS": str(TINY_WORKERS)}}
"""Set in the children of one case only."""

SCRIPTS = {
    "ours": "_ours.py",
    "asyncio": "_baseline.py",
    "loop": "_baseline.py",
    "uncached": "_ours.py",
    "bare": "_ours.py",
}
VARIANTS = {"loop": "loop", "uncached": "uncached", "bare": "bare"}
"""Implementations run through a variant of a script (``chain/loop``, ``cache/uncached``)."""

PROCESS_CALL_SECONDS = 0.2
CHILD_TIMEOUT = 600.0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    plan = _plan(args.cases, args.sizes, quick=args.quick)
    work = _calibrate() if any(case == "process" for case, _ in plan) else 0
    outcomes: dict[Job, Outcome] = {}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for case, size in plan:
        for impl in _impls(case, size):
            job = Job(case, size, impl)
            outcomes[job] = _run_child(job, work)
            _progress(job, outcomes[job])
    header = _header(time.perf_counter() - started, load_before)
    text, missed = render(outcomes, work=work, header=header)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n")
    print(f"\n(written to {RESULTS.relative_to(BENCH.parent)})")
    return 1 if args.check and missed else 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest size of each case")
    parser.add_argument(
        "--cases",
        type=_csv,
        default=list(DEFAULT_SIZES),
        help=f"comma-separated subset of: {','.join(DEFAULT_SIZES)}",
    )
    parser.add_argument(
        "--sizes",
        type=_csv,
        help="sizes for the scalable cases, e.g. 1k,10k or 10x100 (layers x width); "
        "layered takes a plain N as N/100 layers of 100",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in DEFAULT_SIZES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {','.join(DEFAULT_SIZES)}")
    if args.sizes is not None:
        try:
            args.sizes = [_size_token(s) for s in args.sizes]
        except ValueError as exc:
            parser.error(str(exc))
    return args


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _size_token(text: str) -> str:
    """``"10k"`` -> ``"10000"``; ``"10x100"`` stays; anything else is a ValueError."""
    layers, sep, width = text.lower().partition("x")
    if sep:
        return f"{_count(layers)}x{_count(width)}"
    return str(_count(text))


def _count(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"bad size {text!r}: use a count like 1000 or 10k, or 10x100")
    return int(digits) * scale


def _plan(cases: list[str], sizes: list[str] | None, *, quick: bool) -> list[tuple[str, str]]:
    plan: list[tuple[str, str]] = []
    for case in cases:
        chosen = list(DEFAULT_SIZES[case])
        if sizes is not None and case in SCALABLE:
            chosen = [_fit(case, s) for s in sizes]
        if quick:
            chosen = [min(chosen, key=size_n)]
        plan.extend((case, size) for size in chosen)
    return plan


def _fit(case: str, size: str) -> str:
    """A ``--sizes`` token in the form ``case`` takes (``layered`` wants layers x width)."""
    if case != "layered" and "x" in size:
        layers, _, width = size.partition("x")
        return str(int(layers) * int(width))
    if case == "layered" and "x" not in size:
        return f"{max(1, int(size) // 100)}x100"
    return size


def _impls(case: str, size: str) -> tuple[str, ...]:
    extra = {"chain": ("loop",), "cache": ("uncached",), "wide": ("bare",)}.get(case, ())
    if case == "wide" and size_n(size) > SEAMS_MAX_N:
        extra = ()  # one run each at 1M: the 5 % it looks for would be lost in the noise
    return ("ours", "asyncio", *extra)


SEAMS_MAX_N = 100_000
"""The largest ``wide`` measured against the build without seams (``wide/bare``)."""


def _reps(job: Job) -> int:
    # Small sizes finish in milliseconds, where one scheduler hiccup is a large share:
    # more repetitions there, and the best is kept.
    if job.case in FIXED_REPS:
        return FIXED_REPS[job.case]
    n = size_n(job.size)
    return 9 if n <= 1_000 else 3 if n <= 10_000 else 2 if n <= 100_000 else 1


FIXED_REPS = {"big_chain": 3, "process_tiny": 9}
"""Cases whose size says nothing about how long one run takes."""


def _child_env(job: Job) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    return {**env, **CHILD_ENV, **CASE_ENV.get(job.case, {})}


def _run_child(job: Job, work: int) -> Outcome:
    command = [sys.executable, str(BENCH / SCRIPTS[job.impl]), job.case, job.size]
    command += ["--reps", str(_reps(job)), "--work", str(work)]
    if job.impl in VARIANTS:
        command += ["--variant", VARIANTS[job.impl]]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
            env=_child_env(job),
        )
    except subprocess.TimeoutExpired:
        return Failure(f"timed out after {CHILD_TIMEOUT:g} s")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return Failure(lines[-1])
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Measurement(seconds=data["seconds"], rss_mb=data["rss_mb"], digest=data["digest"])


def _progress(job: Job, outcome: Outcome) -> None:
    what = f"  {job.case:<13}{job.size:>9}  {job.impl:<8}"
    if isinstance(outcome, Failure):
        print(f"{what} FAILED: {outcome.error}", file=sys.stderr)
    else:
        print(f"{what} {outcome.seconds:9.4f} s  {outcome.rss_mb:7.1f} MB", file=sys.stderr)


def _calibrate() -> int:
    """Loop iterations of :func:`spin` that take about PROCESS_CALL_SECONDS here."""
    probe = 200_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        spin(probe)
        best = min(best, time.perf_counter() - start)
    return max(1, round(probe * PROCESS_CALL_SECONDS / best))


def _header(elapsed: float, load_before: float) -> str:
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    # Other processes competing for the CPUs make every number noisier; say how busy it was.
    load = f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    return (
        f"auto_workflow benchmark, {when}; {python}; {machine}; took {elapsed:.0f} s\n"
        f"{load} (this run's own children included)\n"
        "Each (case, size, implementation) ran in a fresh subprocess. Time = best of 9 runs "
        "at N <= 1k,\n3 up to 10k, 2 up to 100k, 1 above; gc on. Ours = build + run the "
        "flow, run history off\n(bench/history.py measures the history); asyncio = the whole "
        "hand-written program incl. asyncio.run.\nRSS = peak ru_maxrss of that subprocess "
        "after its runs (interpreter included, nothing subtracted)."
    )


if __name__ == "__main__":
    sys.exit(main())

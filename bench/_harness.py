"""The child side of the benchmark: time one (case, size, implementation) in this process.

``run.py`` starts one fresh interpreter per measurement, e.g.
``python bench/_ours.py wide 10000 --reps 3``, so the peak RSS reported is that case's own.
The child prints one JSON line: the best time over the repetitions (each one the full work:
building and running the flow, or the whole asyncio program), every repetition's time, the
peak RSS of this process after the runs (``ru_maxrss``, nothing subtracted) and a digest of
the result. It exits non-zero if the result differs from the plain-Python reference.

``gc`` stays enabled; a collection runs between repetitions, outside the timed region.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from _work import Params, reference

Prepare = Callable[[Params, ExitStack], Callable[[], Any]]
"""Sets a case up (outside the timed region) and returns the thunk to time.

Resources it opens (pools) go on the ``ExitStack`` and are closed after the measurement.
"""


def main(cases: Mapping[str, Prepare], argv: Sequence[str] | None = None) -> None:
    """Measure ``cases[CASE]`` (or ``cases["CASE/VARIANT"]``) and print the JSON line."""
    args = _parse(argv, sorted({key.partition("/")[0] for key in cases}))
    key = args.case if args.variant is None else f"{args.case}/{args.variant}"
    if key not in cases:
        sys.exit(f"no implementation for {key!r} here")
    params = Params.parse(args.size, args.work)
    with ExitStack() as stack:
        run = cases[key](params, stack)
        times, value = _time(run, args.reps)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    expected = reference(args.case, params)
    if value != expected:
        sys.exit(f"{key} {args.size}: wrong result {_show(value)}, expected {_show(expected)}")
    report = {
        "seconds": min(times),
        "times": times,
        "rss_mb": rss_mb,
        "digest": hashlib.sha256(repr(value).encode()).hexdigest()[:16],
    }
    print(json.dumps(report))


def _parse(argv: Sequence[str] | None, names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=names)
    parser.add_argument("size", help='task count ("1000") or layers x width ("10x100")')
    parser.add_argument("--variant", help="an alternative implementation of the case")
    parser.add_argument("--reps", type=int, default=1, help="repetitions; the best is kept")
    parser.add_argument("--work", type=int, default=0, help="loop iterations per process call")
    return parser.parse_args(argv)


def _time(run: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    """Wall seconds of each of ``reps`` calls of ``run``, and the last call's result."""
    times: list[float] = []
    value: Any = None
    for _ in range(reps):
        value = None  # drop the previous result before measuring the next run's memory
        gc.collect()
        start = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - start)
    return times, value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."

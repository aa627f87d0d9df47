"""Run history on vs off: wide and dynamic fan-outs of trivial tasks, one process per case.

    python bench/history.py [--sizes 10000 100000] [--processes 3]

Each measurement runs in a fresh interpreter (so peak RSS is its own), with the history in
a temp directory; each interpreter takes the best of three runs. For every case,
``--processes`` interpreters with the history off and as many with it on run in turn
(off, on, off, on, ...), so a burst of load elsewhere on the machine hits both sides.
It prints, per case, the best µs per task and the lowest peak RSS of each side, their
ratios (targets: time <= 1.3x, RSS <= 1.2x; see docs/history.md), and what the history
added per task in µs ("+µs").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CASE = """
import json, os, resource, sys, time
from auto_workflow import fan_out, flow, task

@task
def noop(x: int) -> int:
    return x

@task
def source(n: int) -> list[int]:
    return list(range(n))

@flow
def wide(n: int) -> list[int]:
    return fan_out(noop, list(range(n)))

@flow
def dynamic(n: int) -> list[int]:
    return fan_out(noop, source(n))

shape, n, on = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "on"
chosen = wide if shape == "wide" else dynamic
chosen.run(50, history=on)
seconds = float("inf")
for _ in range(3):  # best of three: this box is noisy
    start = time.perf_counter()
    chosen.run(n, history=on)
    seconds = min(seconds, time.perf_counter() - start)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"us": seconds * 1e6 / n, "rss": rss}))
"""


def _case(shape: str, n: int, on: bool, path: str) -> dict[str, float]:
    env = {"AUTO_WORKFLOW_HISTORY_PATH": path, "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # to measure another checkout with the same command
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    out = subprocess.run(
        [sys.executable, "-c", CASE, shape, str(n), "on" if on else "off"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _measure(shape: str, n: int, processes: int, home: str) -> tuple[dict[str, float], ...]:
    """Best time and lowest peak RSS of each side, over ``processes`` interpreters each."""
    best = {False: {"us": float("inf"), "rss": float("inf")}, True: {}}
    best[True] = dict(best[False])
    for attempt in range(processes):
        for on in (False, True):
            path = f"{home}/{shape}-{n}-{'on' if on else 'off'}-{attempt}.sqlite"
            got = _case(shape, n, on, path)
            for key in ("us", "rss"):
                best[on][key] = min(best[on][key], got[key])
    return best[False], best[True]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--shapes", nargs="+", default=["wide", "dynamic"])
    parser.add_argument("--processes", type=int, default=3, help="interpreters per side")
    args = parser.parse_args()
    print(
        f"{'case':<16}{'off µs':>9}{'on µs':>9}{'+µs':>7}{'time x':>8}"
        f"{'off MB':>9}{'on MB':>8}{'RSS x':>7}"
    )
    with tempfile.TemporaryDirectory() as home:
        for shape in args.shapes:
            for n in args.sizes:
                off, on = _measure(shape, n, args.processes, home)
                print(
                    f"{shape + ' ' + str(n):<16}{off['us']:>9.2f}{on['us']:>9.2f}"
                    f"{on['us'] - off['us']:>7.2f}{on['us'] / off['us']:>8.2f}"
                    f"{off['rss']:>9.0f}{on['rss']:>8.0f}{on['rss'] / off['rss']:>7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

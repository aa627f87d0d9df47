"""Our process pool against ``pebble.ProcessPool``: reliability scenarios and speed.

``python bench/process_pools.py`` (pebble is optional: ``pip install pebble``; without it
only our pool and the raw ``ProcessPoolExecutor`` run). ``--reps N`` sets the repetitions.

Speed: 2,000 tiny calls (``i * i``) on 2 workers, each implementation in a fresh child
interpreter (best of the repetitions, peak RSS of the child), ratios against a raw
``ProcessPoolExecutor(2).map`` measured in the same run:

* ``ours/flow``: one flow, ``fan_out`` of a ``run_in="process"`` task (what users write);
* ``ours/pool``: ``asyncio.gather`` of 2,000 ``ProcessPool.run`` calls (the pool alone);
* ``pebble/schedule``: 2,000 ``pool.schedule`` futures, one per call (what a per-call
  timeout needs, so what the engine would do with pebble);
* ``pebble/map``: ``pool.map`` (one future for all).

Reliability: the scenarios of ``tests/execution`` run through a small adapter per pool,
each printed as pass or fail with what was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _work import TINY_WORKERS, tiny
from auto_workflow import fan_out, flow, task
from auto_workflow._core._context import RunContext
from auto_workflow._execution._process import (
    ProcessPool,
    get_process_pool,
    shutdown_process_pool,
)
from auto_workflow._execution._protocol import Call

try:
    import pebble  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # optional: the comparison runs without it
    pebble = None

N = 2000
IMPLS = ("raw", "ours/flow", "ours/pool", "pebble/schedule", "pebble/map")

tiny_task = task(run_in="process")(tiny)


@flow
def tinies(n: int) -> list[int]:
    return fan_out(tiny_task, range(n))


def _call(fn: Callable[..., Any], *args: Any) -> Call:
    ctx = RunContext(run_id="bench", flow_name=None)
    return Call(fn, args, {}, "t", ctx.for_attempt("t", "t#0", 1))


# -- speed: one implementation per child -------------------------------------------------------


Prepared = tuple[Callable[[], list[int]], Callable[[], None]]  # (the work, the clean-up)


def _prepare(impl: str) -> Prepared:
    """The timed work of ``impl`` on a warmed pool (one call per worker first)."""
    if impl == "raw":
        raw = ProcessPoolExecutor(TINY_WORKERS)
        list(raw.map(tiny, range(TINY_WORKERS)))
        return (lambda: list(raw.map(tiny, range(N)))), raw.shutdown
    if impl == "ours/flow":
        get_process_pool(TINY_WORKERS)
        tinies.run(TINY_WORKERS)
        return (lambda: tinies.run(N)), shutdown_process_pool
    if impl == "ours/pool":
        ours = ProcessPool(TINY_WORKERS)

        async def gather(n: int) -> list[int]:
            return list(await asyncio.gather(*(ours.run(_call(tiny, i)) for i in range(n))))

        asyncio.run(gather(TINY_WORKERS))
        return (lambda: asyncio.run(gather(N))), ours.shutdown
    peb = pebble.ProcessPool(max_workers=TINY_WORKERS)
    [f.result() for f in [peb.schedule(tiny, (i,)) for i in range(TINY_WORKERS)]]

    def stop() -> None:
        peb.stop()
        peb.join(5)

    if impl == "pebble/schedule":
        return (lambda: [f.result() for f in [peb.schedule(tiny, (i,)) for i in range(N)]]), stop
    return (lambda: list(peb.map(tiny, range(N)).result())), stop


def _child(impl: str, reps: int) -> None:
    run, close = _prepare(impl)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - start)
        assert value == [i * i for i in range(N)], f"{impl} returned the wrong values"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    close()
    print(json.dumps({"seconds": best, "rss_mb": rss}))


def _measure(impl: str, reps: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", impl, "--reps", str(reps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    data: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def speed(reps: int) -> list[str]:
    impls = [i for i in IMPLS if pebble is not None or not i.startswith("pebble")]
    results: dict[str, dict[str, float]] = {}
    for _ in range(2):  # two rounds in rotation: a busy spell hits every implementation
        for impl in impls:
            m = _measure(impl, reps)
            if impl not in results or m["seconds"] < results[impl]["seconds"]:
                results[impl] = m
    raw = results["raw"]["seconds"]
    lines = [f"{'implementation':<16} {'seconds':>8} {'/ raw':>6} {'peak RSS MB':>12}"]
    for impl in impls:
        m = results[impl]
        lines.append(
            f"{impl:<16} {m['seconds']:8.3f} {m['seconds'] / raw:6.2f} {m['rss_mb']:12.1f}"
        )
    return lines


# -- reliability scenarios ------------------------------------------------------------------------


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def spin(path: str) -> None:
    with open(path, "a") as beat:
        beat.write(f"{os.getpid()}\n")
        beat.flush()
        while True:
            sum(range(20_000))
            beat.write(".")
            beat.flush()


def die(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def mark_then_nap(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


class Ours:
    name = "ours"

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPool(workers)

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        async def bounded() -> Any:
            # As the engine does: the clock starts when the call does (on_start).
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(None) as scope:

                def started() -> None:
                    if timeout is not None:
                        scope.reschedule(loop.time() + timeout)

                return await self.pool.run(_call(fn, *args), started)

        return bounded()

    def close(self) -> None:
        self.pool.shutdown()


class Pebble:
    name = "pebble"

    def __init__(self, workers: int) -> None:
        self.pool = pebble.ProcessPool(max_workers=workers)

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        return asyncio.wrap_future(self.pool.schedule(fn, args, timeout=timeout))

    def close(self) -> None:
        self.pool.stop()
        self.pool.join(5)


Pool = Ours | Pebble


def _grows(path: Path) -> bool:
    size = path.stat().st_size
    time.sleep(0.4)
    return path.stat().st_size != size


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def timeout_kills_runaway(pool: Pool, tmp: Path) -> str:
    beat = tmp / "beat"
    await pool.run(nap, 0)
    try:
        await pool.run(spin, str(beat), timeout=0.5)
    except TimeoutError as exc:
        seen = type(exc).__name__
    else:
        return "FAIL: no timeout"
    pid = int(beat.read_text().splitlines()[0])
    if _grows(beat) or _alive(pid):
        return f"FAIL: {seen}, but the runaway work goes on"
    return f"pass ({seen}; worker killed)"


async def crash_fails_only_its_call(pool: Pool, tmp: Path) -> str:
    marker = tmp / "dead"
    crashed, bystander = await asyncio.gather(
        pool.run(die, str(marker)), pool.run(nap, 0.5), return_exceptions=True
    )
    if not isinstance(crashed, BaseException) or isinstance(bystander, BaseException):
        return f"FAIL: crash -> {crashed!r}, bystander -> {bystander!r}"
    return f"pass ({type(crashed).__name__}; bystander fine)"


async def pool_heals(pool: Pool, tmp: Path) -> str:
    marker = tmp / "dead2"
    await asyncio.gather(pool.run(die, str(marker)), return_exceptions=True)
    pids = await asyncio.gather(pool.run(nap, 0.3), pool.run(nap, 0.3))
    dead = int(marker.read_text())
    if len(set(pids)) != 2 or dead in pids:
        return f"FAIL: after a crash, calls ran on {pids} (dead {dead})"
    return "pass (two live workers again)"


async def cancel_kills_running(pool: Pool, tmp: Path) -> str:
    beat = tmp / "beat2"
    running = asyncio.ensure_future(pool.run(spin, str(beat)))
    while not beat.exists():  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(0.02)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await asyncio.sleep(0.2)
    pid = int(beat.read_text().splitlines()[0])
    if _grows(beat) or _alive(pid):
        return "FAIL: the cancelled call goes on running"
    await pool.run(nap, 0)
    return "pass (worker killed; pool serves the next call)"


async def sigint_spares_workers(pool: Pool, tmp: Path) -> str:
    marker = tmp / "pid"
    call = asyncio.ensure_future(pool.run(mark_then_nap, str(marker), 0.5))
    while not marker.exists():  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    os.kill(int(marker.read_text()), signal.SIGINT)  # what Ctrl-C sends the whole group
    try:
        await call
    except BaseException as exc:  # noqa: BLE001 - reporting what the pool did
        return f"FAIL: Ctrl-C reached the worker: {type(exc).__name__}"
    return "pass (workers ignore SIGINT; the parent decides what to cancel)"


async def timeout_starts_with_the_call(pool: Pool, tmp: Path) -> str:
    first = asyncio.ensure_future(pool.run(nap, 0.6))
    await asyncio.sleep(0.05)
    try:
        await asyncio.gather(first, pool.run(nap, 0.1, timeout=0.3))
    except TimeoutError:
        return "FAIL: a call timed out while it waited for a worker"
    return "pass (waiting for a worker does not use up the timeout)"


async def unpicklable_argument(pool: Pool, tmp: Path) -> str:
    try:
        await pool.run(nap, threading.Lock())
    except Exception as exc:  # noqa: BLE001 - reporting what the pool did
        return f"pass ({type(exc).__name__}: {str(exc)[:60]})"
    return "FAIL: no error"


async def closure_runs(pool: Pool, tmp: Path) -> str:
    offset = 41

    def add(x: int) -> int:
        return x + offset

    try:
        value = await pool.run(add, 1)
    except Exception as exc:  # noqa: BLE001 - reporting what the pool did
        return f"FAIL: {type(exc).__name__}: {str(exc)[:60]}"
    return "pass" if value == 42 else f"FAIL: {value!r}"


SCENARIOS = {
    "timeout kills runaway work": (timeout_kills_runaway, 2),
    "a crash fails only its call": (crash_fails_only_its_call, 2),
    "the pool heals after a crash": (pool_heals, 2),
    "cancelling a running call kills it": (cancel_kills_running, 2),
    "Ctrl-C (SIGINT) spares the workers": (sigint_spares_workers, 2),
    "timeout counts from the call's start": (timeout_starts_with_the_call, 1),
    "an unpicklable argument is an error": (unpicklable_argument, 2),
    "a local function (closure) runs": (closure_runs, 1),
}


def reliability(tmp: Path) -> list[str]:
    kinds: list[type[Ours] | type[Pebble]] = [Ours] if pebble is None else [Ours, Pebble]
    return [
        f"{title:<40} {kind.name:<7} {_scenario(kind, scenario, workers, tmp)}"
        for title, (scenario, workers) in SCENARIOS.items()
        for kind in kinds
    ]


def _scenario(
    kind: type[Ours] | type[Pebble],
    scenario: Callable[[Pool, Path], Awaitable[str]],
    workers: int,
    tmp: Path,
) -> str:
    where = tmp / f"{kind.name}-{scenario.__name__}"
    where.mkdir()
    pool = kind(workers)
    try:
        return asyncio.run(asyncio.wait_for(scenario(pool, where), 30))
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a failed one
        return f"FAIL: {type(exc).__name__}: {exc}"
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.reps)
        return
    version = "not installed" if pebble is None else pebble.__version__
    print(f"pebble {version}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    print(f"\n{N:,} tiny calls on {TINY_WORKERS} workers (best of {args.reps}, two rounds)")
    print("\n".join(speed(args.reps)))
    print("\nReliability scenarios")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(reliability(Path(tmp))))


if __name__ == "__main__":
    main()

"""auto_workflow's side of each benchmark case; run by ``run.py`` in a fresh process.

Each timed call is ``some_flow.run(...)``: building the graph and running it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Any

import _harness
from _work import (
    LAYER_MODULO,
    SLEEP_SECONDS,
    THREAD_CONCURRENCY,
    TINY_WORKERS,
    Params,
    big_chain_summary,
    link,
    spin,
    tiny,
)
from auto_workflow import fan_out, flow, task
from auto_workflow._core import _build, _calls, _runner
from auto_workflow._core._calls import _bounded
from auto_workflow._core._model import RunIn
from auto_workflow._execution._process import get_process_pool
from auto_workflow._execution._protocol import Call


@task
async def inc(x: int) -> int:
    return x + 1


@task(cache_ttl=3600)
async def inc_cached(x: int) -> int:
    return x + 1


@task
async def total(xs: list[int]) -> int:
    return sum(xs)


@task
async def source(n: int) -> list[int]:
    return list(range(n))


@task
async def seed(i: int) -> int:
    return i


@task
async def add(a: int, b: int) -> int:
    return (a + b) % LAYER_MODULO


@task(run_in="thread")
def nap(i: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return i


# Wraps the shared module-level function rather than decorating one here, so that this side
# and the raw ProcessPoolExecutor ship the very same function (pickled by reference).
spin_task = task(run_in="process")(spin)
tiny_task = task(run_in="process")(tiny)
link_task = task(name="link")(link)


@flow
def wide(n: int) -> int:
    return total(fan_out(inc, range(n)))


@flow
def wide_cached(n: int) -> int:
    return total(fan_out(inc_cached, range(n)))


@flow
def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = inc(x)
    return x


@flow
def dynamic(n: int) -> int:
    return total(fan_out(inc, source(n)))


@flow
def layered(layers: int, width: int) -> list[int]:
    layer = [seed(i) for i in range(width)]
    for _ in range(layers - 1):
        layer = [add(layer[i], layer[(i + 1) % width]) for i in range(width)]
    return layer


@flow
def naps(n: int) -> list[int]:
    return fan_out(nap, range(n))


@flow
def spins(n: int, work: int) -> list[int]:
    return fan_out(spin_task, [work] * n)


@flow
def tinies(n: int) -> list[int]:
    return fan_out(tiny_task, range(n))


@flow
def big_chain(n: int) -> bytes:
    value = None
    for i in range(n):
        value = link_task(value, i)
    return value


def _wide(p: Params, _: ExitStack) -> Callable[[], Any]:
    return partial(wide.run, p.n)


def _cache(p: Params, _: ExitStack) -> Callable[[], Any]:
    wide_cached.run(p.n)  # fills the (default, in-memory) cache: every timed call is a hit
    return partial(wide_cached.run, p.n)


def _wide_bare(p: Params, _: ExitStack) -> Callable[[], Any]:
    _compile_out_unused_seams()
    return partial(wide.run, p.n)


def _compile_out_unused_seams() -> None:
    """Patch the engine as if events, middleware and tracing did not exist.

    What is left is what a build without those seams would run: no "anyone subscribed?",
    "any middleware or tracer?" checks per task and per run. Metrics stay: the in-memory
    default records by default, so they are in use, not an unused seam. (Since round 2 a
    call nothing wraps skips these functions anyway, the question being asked once per
    run: what is left to compare is the per-run part.)
    """

    async def call(self: Any, node: Any, args: Any, kwargs: Any) -> Any:
        return (await self.calls.call(node.task, node, args, kwargs))[0]

    async def attempt(self: Any, task: Any, node: Any, n: int, args: Any, kwargs: Any) -> Any:
        if task.options.run_in is RunIn.ASYNC:
            return await self._inline_attempt(task, node, n, args, kwargs)
        call_ = Call(task.fn, args, kwargs, task.name, self.base.for_attempt(task.name, "", n))
        return await _bounded(self.executor(task.options.run_in).run(call_), task.options.timeout)

    async def observe_flow(calls: Any, runner: Any) -> None:
        token = _build._building.set(None)
        try:
            await runner.run()
        finally:
            _build._building.reset(token)

    _runner.FlowRunner._call = call  # type: ignore[method-assign]
    _calls.CallRunner._attempt = attempt  # type: ignore[method-assign]
    _build._observe_flow = observe_flow


def _chain(p: Params, _: ExitStack) -> Callable[[], Any]:
    return partial(chain.run, p.n)


def _dynamic(p: Params, _: ExitStack) -> Callable[[], Any]:
    return partial(dynamic.run, p.n)


def _layered(p: Params, _: ExitStack) -> Callable[[], Any]:
    return partial(layered.run, p.layers, p.width)


def _thread_sleep(p: Params, _: ExitStack) -> Callable[[], Any]:
    return partial(naps.run, p.n, max_concurrency=THREAD_CONCURRENCY)


def _process(p: Params, _: ExitStack) -> Callable[[], Any]:
    # Warm-up outside the timed region: one call per worker starts every worker of the
    # shared process pool (default size: one per CPU), which later runs reuse.
    spins.run(os.cpu_count() or 1, 1)
    return partial(spins.run, p.n, p.work)


def _process_tiny(p: Params, _: ExitStack) -> Callable[[], Any]:
    get_process_pool(TINY_WORKERS)  # the shared pool, at the baseline's size
    tinies.run(TINY_WORKERS)  # warm-up: start every worker, outside the timed region
    return partial(tinies.run, p.n)


def _big_chain(p: Params, _: ExitStack) -> Callable[[], Any]:
    def program() -> tuple[int, int]:
        return big_chain_summary(big_chain.run(p.n))

    return program


CASES: dict[str, _harness.Prepare] = {
    "wide": _wide,
    "wide/bare": _wide_bare,
    "cache": _cache,
    "cache/uncached": _wide,  # the same graph with the trivial task actually running
    "chain": _chain,
    "dynamic": _dynamic,
    "layered": _layered,
    "thread_sleep": _thread_sleep,
    "process": _process,
    "process_tiny": _process_tiny,
    "big_chain": _big_chain,
}

if __name__ == "__main__":
    _harness.main(CASES)

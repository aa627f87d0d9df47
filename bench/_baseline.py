"""The hand-written side of each case: plain asyncio (or a raw process pool), no library.

Written the way an engineer would without a workflow library: one ``asyncio`` Task per node,
each awaiting its parents' tasks and then calling the function. Each timed call is the whole
program, ``asyncio.run`` included, as ``Flow.run`` includes it on the other side.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
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


async def inc(x: int) -> int:
    return x + 1


async def source(n: int) -> list[int]:
    return list(range(n))


async def seed(i: int) -> int:
    return i


async def add(a: int, b: int) -> int:
    return (a + b) % LAYER_MODULO


def nap(i: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return i


async def wide(n: int) -> int:
    parts = await asyncio.gather(*(inc(i) for i in range(n)))
    return sum(parts)


async def _inc_after(previous: asyncio.Task[int]) -> int:
    return await inc(await previous)


async def chain(n: int) -> int:
    async with asyncio.TaskGroup() as tg:
        step = tg.create_task(inc(0))
        for _ in range(n - 1):
            step = tg.create_task(_inc_after(step))
    return step.result()


async def chain_loop(n: int) -> int:
    """Not a DAG at all: the floor for ``chain``, shown for information."""
    x = 0
    for _ in range(n):
        x = await inc(x)
    return x


async def dynamic(n: int) -> int:
    items = await source(n)
    parts = await asyncio.gather(*(inc(x) for x in items))
    return sum(parts)


async def _add_after(a: asyncio.Task[int], b: asyncio.Task[int]) -> int:
    return await add(await a, await b)


async def layered(layers: int, width: int) -> list[int]:
    async with asyncio.TaskGroup() as tg:
        layer = [tg.create_task(seed(i)) for i in range(width)]
        for _ in range(layers - 1):
            layer = [
                tg.create_task(_add_after(layer[i], layer[(i + 1) % width])) for i in range(width)
            ]
    return [t.result() for t in layer]


async def _nap_bounded(slots: asyncio.Semaphore, i: int) -> int:
    async with slots:
        return await asyncio.to_thread(nap, i)


async def naps(n: int) -> list[int]:
    # asyncio.run shuts the default executor down when the program ends.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(THREAD_CONCURRENCY))
    slots = asyncio.Semaphore(THREAD_CONCURRENCY)
    return await asyncio.gather(*(_nap_bounded(slots, i) for i in range(n)))


def _run(main: Callable[..., Any], *args: int) -> Callable[[], Any]:
    def program() -> Any:
        return asyncio.run(main(*args))

    return program


def _wide(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(wide, p.n)


def _chain(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(chain, p.n)


def _chain_loop(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(chain_loop, p.n)


def _dynamic(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(dynamic, p.n)


def _layered(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(layered, p.layers, p.width)


def _thread_sleep(p: Params, _: ExitStack) -> Callable[[], Any]:
    return _run(naps, p.n)


def _process(p: Params, stack: ExitStack) -> Callable[[], Any]:
    pool = stack.enter_context(ProcessPoolExecutor())  # default max_workers: one per CPU
    workers = os.cpu_count() or 1
    list(pool.map(spin, [1] * workers))  # warm-up outside the timed region, as on our side

    def program() -> list[int]:
        return list(pool.map(spin, [p.work] * p.n))

    return program


def _process_tiny(p: Params, stack: ExitStack) -> Callable[[], Any]:
    pool = stack.enter_context(ProcessPoolExecutor(TINY_WORKERS))
    list(pool.map(tiny, range(TINY_WORKERS)))  # warm-up outside the timed region

    def program() -> list[int]:
        return list(pool.map(tiny, range(p.n)))

    return program


def _big_chain(p: Params, _: ExitStack) -> Callable[[], Any]:
    """Plain function calls: each value dropped as soon as the next one exists."""

    def program() -> tuple[int, int]:
        value = None
        for i in range(p.n):
            value = link(value, i)
        assert value is not None
        return big_chain_summary(value)

    return program


CASES: dict[str, _harness.Prepare] = {
    "wide": _wide,
    "cache": _wide,  # the same program: the cache case's result is wide's
    "chain": _chain,
    "chain/loop": _chain_loop,
    "dynamic": _dynamic,
    "layered": _layered,
    "thread_sleep": _thread_sleep,
    "process": _process,
    "process_tiny": _process_tiny,
    "big_chain": _big_chain,
}

if __name__ == "__main__":
    _harness.main(CASES)

"""The work both sides of the benchmark do, and the values each case must produce.

Reference values are computed in plain Python (no event loop, no library), so a child that
skipped work or computed something else fails its check instead of reporting a fast time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SLEEP_SECONDS = 0.05
"""How long each ``thread_sleep`` call blocks its thread."""

THREAD_CONCURRENCY = 32
"""``max_concurrency`` of the ``thread_sleep`` case (and the baseline's pool and semaphore)."""

LAYER_MODULO = 1009
"""``layered`` nodes return ``(a + b) % LAYER_MODULO`` so the ints stay small."""

BIG_CHAIN_MB = 20
"""Each link of ``big_chain`` returns a fresh value of this many MB."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    """The size of one case: ``n`` tasks, and for ``layered`` its layers x width."""

    n: int
    layers: int = 0
    width: int = 0
    work: int = 0
    """Loop iterations of one ``process`` call (see :func:`spin`)."""

    @classmethod
    def parse(cls, size: str, work: int = 0) -> Params:
        """``"1000"`` -> n=1000; ``"10x100"`` -> 10 layers of 100 (n=1000)."""
        layers, sep, width = size.partition("x")
        if not sep:
            return cls(n=int(size), work=work)
        n_layers, n_width = int(layers), int(width)
        return cls(n=n_layers * n_width, layers=n_layers, width=n_width, work=work)


def spin(iterations: int) -> int:
    """CPU-bound pure-Python work: the sum of the squares below ``iterations``.

    Shared by both sides of the ``process`` case so they pickle and run the same function.
    """
    total = 0
    for i in range(iterations):
        total += i * i
    return total


TINY_WORKERS = 2
"""Worker processes on both sides of the ``process_tiny`` case."""


def tiny(i: int) -> int:
    """A call that costs next to nothing: ``process_tiny`` measures the pool, not the work."""
    return i * i


def link(previous: bytes | None, i: int) -> bytes:
    """One link of ``big_chain``: a fresh BIG_CHAIN_MB value, its pages really written
    (``bytes(n)`` would stay untouched calloc memory and never show in the RSS)."""
    return bytes([i % 256]) * (BIG_CHAIN_MB << 20)


def big_chain_summary(value: bytes) -> tuple[int, int]:
    """What both sides of ``big_chain`` return: the last value's length and first byte
    (the value itself is 20 MB: its repr would dwarf what is measured)."""
    return len(value), value[0]


def _sum_of_squares(k: int) -> int:
    return (k - 1) * k * (2 * k - 1) // 6


def _layered(p: Params) -> list[int]:
    layer = list(range(p.width))
    for _ in range(p.layers - 1):
        layer = [(layer[i] + layer[(i + 1) % p.width]) % LAYER_MODULO for i in range(p.width)]
    return layer


def reference(case: str, p: Params) -> Any:
    """What ``case`` at size ``p`` must return, on either side."""
    if case in ("wide", "dynamic", "cache"):
        return p.n * (p.n + 1) // 2  # sum of inc(i) for i < n
    if case == "chain":
        return p.n
    if case == "layered":
        return _layered(p)
    if case == "thread_sleep":
        return list(range(p.n))
    if case == "process":
        return [_sum_of_squares(p.work)] * p.n
    if case == "process_tiny":
        return [tiny(i) for i in range(p.n)]
    if case == "big_chain":
        return (BIG_CHAIN_MB << 20, (p.n - 1) % 256)
    raise ValueError(f"unknown case {case!r}")

"""The functions both sides of the Dask benchmark run (importable by the workers)."""

from __future__ import annotations


def inc(x: int) -> int:
    return x + 1


def total(xs: list[int]) -> int:
    return sum(xs)


def source(n: int) -> list[int]:
    return list(range(n))

"""Checked by mypy (see pyproject), not run: @task keeps signatures for type checkers."""

from __future__ import annotations

from typing import assert_type

from auto_workflow import Flow, TaskDefinition, fan_out, flow, task
from auto_workflow.artifacts import ArtifactRef, get_store


@task(persist=True)
def build_report(n: int) -> dict[str, list[int]]:
    return {"rows": list(range(n))}


@task(persist=True, cache_ttl=60)
async def build_async(n: int) -> list[int]:
    return list(range(n))


@task
def count_rows(ref: ArtifactRef) -> int:
    return len(get_store().get(ref)["rows"])


@task
def add(a: int, b: int) -> int:
    return a + b


@task(retries=2, run_in="thread")
async def fetch(url: str) -> bytes:
    return url.encode()


def check() -> None:
    assert_type(add(1, 2), int)
    assert_type(fetch("x"), bytes)
    assert_type(fan_out(fetch, ["a", "b"]), list[bytes])
    assert_type(add.with_options(priority=3)(1, 2), int)
    plain: TaskDefinition[[int, int], int] = add
    assert_type(plain(3, 4), int)
    assert_type(build_report(3), ArtifactRef)  # persist=True: the task returns a ref
    assert_type(build_async(3), ArtifactRef)
    assert_type(count_rows(build_report(3)), int)


async def check_async() -> None:
    assert_type(await fetch.run_async("x"), bytes)
    assert_type(await add.run_async(1, 2), int)


@flow
def pipeline(n: int) -> tuple[int, bytes]:
    return add(n, 1), fetch("x")


def check_flow() -> None:
    assert_type(pipeline, Flow[tuple[int, bytes]])
    assert_type(pipeline.run(3), tuple[int, bytes])
    assert_type(pipeline(3), tuple[int, bytes])


async def check_flow_async() -> None:
    assert_type(await pipeline.run_async(3), tuple[int, bytes])

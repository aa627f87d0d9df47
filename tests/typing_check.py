"""Checked by mypy (see pyproject), not run: @task keeps signatures for type checkers, and a
user module written with the public auto-workflow package's names (aliases, one-argument
subscribers, Config as a mapping, task option attributes) is clean under --strict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_type

from auto_workflow import Flow, RunContext, TaskDefinition, fan_out, flow, task
from auto_workflow.artifacts import (
    ArtifactRef,
    FileSystemArtifactStore,
    InMemoryArtifactStore,
    get_store,
)
from auto_workflow.cache import FileSystemResultCache, InMemoryResultCache
from auto_workflow.config import DEFAULTS, Config, load_config
from auto_workflow.context import reset_context, set_context
from auto_workflow.events import emit, subscribe
from auto_workflow.exceptions import CycleDetectedError, InvalidGraphError, TaskExecutionError
from auto_workflow.fanout import fan_out as fan_out_too
from auto_workflow.logging import enable_pretty_logging, enable_structured_logging
from auto_workflow.secrets import DummyVaultSecrets
from auto_workflow.tracing import DummyTracer, set_tracer


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


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


@task(retries=3, retry_on=(ConnectionError, TimeoutError), retry_backoff_max=30.0)
def download(url: str) -> bytes:
    return url.encode()


@task(retries=3, retry_on=transient)
async def upload(data: bytes) -> int:
    return len(data)


def check() -> None:
    assert_type(add(1, 2), int)
    assert_type(fetch("x"), bytes)
    assert_type(fan_out(fetch, ["a", "b"]), list[bytes])
    assert_type(fan_out(fetch, ["a"], return_exceptions=True), list[bytes | TaskExecutionError])
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


# -- the public auto-workflow package's names, as a user module would use them -----------


def on_event(payload: dict[str, object]) -> None:
    print(payload["event"])


def on_named_event(name: str, payload: dict[str, object]) -> None:
    print(name)


def check_aliases() -> None:
    store: FileSystemArtifactStore = FileSystemArtifactStore(".aw_artifacts", serializer="json")
    memory: InMemoryArtifactStore = InMemoryArtifactStore()
    assert_type(memory.put(1), ArtifactRef)
    assert_type(store.put({"a": 1}), ArtifactRef)
    assert_type(ArtifactRef("abc").store, str | None)
    assert_type(InMemoryResultCache().get("k", None), Any)
    FileSystemResultCache(".aw_cache")
    set_tracer(DummyTracer())
    assert_type(DummyVaultSecrets("APP_").get("TOKEN"), str | None)
    assert_type(fan_out_too(fetch, ["a"]), list[bytes])
    subscribe("task_succeeded", on_event)
    subscribe("task_failed", on_named_event)
    emit("batch_loaded", {"rows": 3})
    undo = enable_structured_logging()
    undo()
    enable_pretty_logging("DEBUG")()
    reset_context(set_context(RunContext(run_id="r", flow_name=None)))
    error: InvalidGraphError = CycleDetectedError("loop")
    assert isinstance(error, ValueError)


def check_config_mapping() -> None:
    cfg: Config = load_config()
    assert_type(cfg["max_dynamic_tasks"], int)
    assert_type(cfg["result_cache"], str)
    assert_type(cfg["result_cache_max_entries"], int | None)
    assert_type(DEFAULTS["artifact_serializer"], str)
    assert_type(dict(cfg), dict[str, str | int | float | None])
    assert_type(cfg["durable"], bool)
    assert_type(cfg["history_retention"], float | None)
    mapping: Mapping[str, object] = cfg
    assert "log_level" in mapping


def check_task_attributes() -> None:
    assert_type(fetch.retries, int)
    assert_type(download("x"), bytes)
    assert_type(upload(b"x"), int)
    assert download.retry_on == (ConnectionError, TimeoutError)
    assert_type(download.retry_backoff_max, float | None)
    assert_type(fetch.timeout, float | None)
    assert_type(fetch.name, str)
    assert_type(fetch.tags, frozenset[str])
    assert fetch.run_in == "thread"

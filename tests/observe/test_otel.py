"""The OpenTelemetry adapter, against the real SDK and its in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from auto_workflow import flow, task
from auto_workflow.exceptions import TaskExecutionError
from auto_workflow.integrations.otel import OpenTelemetryTracer
from auto_workflow.tracing import Tracer, set_tracer

SECRET = "secret-value-123"


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A private provider (the global one is never set) with no background threads."""
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def exporter(provider: TracerProvider) -> InMemorySpanExporter:
    """Spans finished by the default tracer, in the order they ended."""
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer: Tracer = OpenTelemetryTracer(provider)  # mypy: it satisfies the protocol
    set_tracer(tracer)
    return memory


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    """Finished spans grouped by name, each group in start order."""
    groups: dict[str, list[ReadableSpan]] = {}
    for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0):
        groups.setdefault(span.name, []).append(span)
    return groups


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def is_child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None, f"{span.name} has no parent"
    return bool(
        span.context.trace_id == parent.context.trace_id
        and span.parent.span_id == parent.context.span_id
    )


def recorded_text(span: ReadableSpan) -> str:
    """Everything a span carries as text: name, attributes, events, status."""
    parts = [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
    parts += [f"{event.name} {dict(event.attributes or {})!r}" for event in span.events]
    return "\n".join(parts)


def run_retried_flow() -> None:
    """A flow of two tasks; ``check`` fails its first attempt with the secret in the message."""
    attempts: list[int] = []

    @task
    def load(token: str) -> str:
        return token.upper()

    @task(retries=1)
    def check(value: str) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError(f"rejected {value} and {SECRET}")
        return len(value)

    @flow(name="pipeline")
    def pipeline(token: str) -> Any:
        return check(load(token))

    assert pipeline.run(SECRET) == len(SECRET)


def test_task_spans_nest_under_the_flow_span_one_per_attempt(
    exporter: InMemorySpanExporter,
) -> None:
    run_retried_flow()
    spans = by_name(exporter)
    assert sorted(spans) == ["flow pipeline", "task check", "task load"]
    [flow_span] = spans["flow pipeline"]
    assert flow_span.parent is None
    task_spans = spans["task load"] + spans["task check"]
    assert len(task_spans) == 3
    assert all(is_child_of(span, flow_span) for span in task_spans)
    first, second = spans["task check"]
    assert attrs(first)["auto_workflow.task.attempt"] == 1
    assert attrs(second)["auto_workflow.task.attempt"] == 2


def test_span_attributes_name_the_flow_task_attempt_and_result(
    exporter: InMemorySpanExporter,
) -> None:
    run_retried_flow()
    spans = by_name(exporter)
    flow_attrs = attrs(spans["flow pipeline"][0])
    assert flow_attrs["auto_workflow.flow.name"] == "pipeline"
    assert isinstance(flow_attrs["auto_workflow.flow.run_id"], str)
    assert flow_attrs["auto_workflow.flow.run_id"]
    assert flow_attrs["auto_workflow.flow.result"] == "success"
    load_attrs = attrs(spans["task load"][0])
    assert load_attrs["auto_workflow.task.name"] == "load"
    assert str(load_attrs["auto_workflow.task.node"]).startswith("load")
    assert load_attrs["auto_workflow.task.attempt"] == 1
    assert load_attrs["auto_workflow.task.result"] == "success"
    assert "error.type" not in load_attrs


def test_failed_attempt_has_error_type_and_status_without_the_message(
    exporter: InMemorySpanExporter,
) -> None:
    run_retried_flow()
    failed, retried = by_name(exporter)["task check"]
    assert attrs(failed)["auto_workflow.task.result"] == "failure"
    assert attrs(failed)["error.type"] == "ValueError"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError"
    assert failed.events == ()
    assert attrs(retried)["auto_workflow.task.result"] == "success"
    assert retried.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(retried)


def test_no_argument_value_or_message_reaches_any_span(exporter: InMemorySpanExporter) -> None:
    run_retried_flow()
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    for span in spans:
        text = recorded_text(span)
        assert SECRET not in text, span.name
        assert SECRET.upper() not in text, span.name


def test_record_exceptions_opts_in_to_exception_events(provider: TracerProvider) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer(OpenTelemetryTracer(provider, record_exceptions=True))
    run_retried_flow()
    failed, retried = by_name(exporter)["task check"]
    [event] = failed.events
    assert event.name == "exception"
    assert SECRET in str(dict(event.attributes or {}))  # the opt-in records the message
    assert failed.status.description == "ValueError"
    assert retried.events == ()


def test_failing_flow_span_has_result_failure_and_error_type(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    def broken(token: str) -> None:
        raise RuntimeError(f"cannot use {token}")

    @flow(name="doomed")
    def doomed() -> Any:
        return broken(SECRET)

    with pytest.raises(TaskExecutionError):
        doomed.run()
    spans = by_name(exporter)
    [flow_span] = spans["flow doomed"]
    [task_span] = spans["task broken"]
    assert attrs(flow_span)["auto_workflow.flow.result"] == "failure"
    assert attrs(flow_span)["error.type"] == "auto_workflow.exceptions.TaskExecutionError"
    assert flow_span.status.status_code is StatusCode.ERROR
    assert flow_span.status.description == "auto_workflow.exceptions.TaskExecutionError"
    assert attrs(task_span)["error.type"] == "RuntimeError"
    assert is_child_of(task_span, flow_span)
    assert all(SECRET not in recorded_text(span) for span in (flow_span, task_span))


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_thread_and_process_task_spans_nest_under_the_flow(
    exporter: InMemorySpanExporter, mode: str
) -> None:
    @task(run_in=mode)
    def double(x: int) -> int:
        return x * 2

    @flow(name=f"in_{mode}")
    def pipeline() -> Any:
        return [double(1), double(2)]

    assert pipeline.run() == [2, 4]
    spans = by_name(exporter)
    [flow_span] = spans[f"flow in_{mode}"]
    task_spans = spans["task double"]
    assert len(task_spans) == 2
    assert all(is_child_of(span, flow_span) for span in task_spans)
    assert {attrs(span)["auto_workflow.task.result"] for span in task_spans} == {"success"}


def test_direct_task_call_has_a_task_span_without_a_flow_parent(
    exporter: InMemorySpanExporter,
) -> None:
    @task
    def alone(x: int) -> int:
        return x + 1

    assert alone(1) == 2
    [span] = exporter.get_finished_spans()
    assert span.name == "task alone"
    assert span.parent is None
    assert attrs(span)["auto_workflow.task.attempt"] == 1
    assert attrs(span)["auto_workflow.task.result"] == "success"


def test_cancelled_task_span_is_not_an_error(exporter: InMemorySpanExporter) -> None:
    @task
    async def slow() -> None:
        await asyncio.sleep(30)

    @task
    async def fails_soon() -> None:
        await asyncio.sleep(0.05)
        raise KeyError("boom")

    @flow(name="cancels")
    def cancels() -> Any:
        return [slow(), fails_soon()]

    with pytest.raises(TaskExecutionError):
        cancels.run()
    [span] = by_name(exporter)["task slow"]
    assert attrs(span)["auto_workflow.task.result"] == "cancelled"
    assert "error.type" not in attrs(span)
    assert span.status.status_code is StatusCode.UNSET


async def test_span_reraises_the_same_exception_and_passes_other_names_through(
    provider: TracerProvider,
) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = OpenTelemetryTracer(provider)
    error = KeyError("k")
    with pytest.raises(KeyError) as caught:
        async with tracer.span("custom", step=3, what=("a", "b")):
            raise error
    assert caught.value is error
    [span] = exporter.get_finished_spans()
    assert span.name == "custom"
    assert attrs(span) == {
        "auto_workflow.step": 3,
        "auto_workflow.what": "('a', 'b')",
        "auto_workflow.result": "failure",
        "error.type": "KeyError",
    }


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_auto_workflow_does_not_import_opentelemetry() -> None:
    done = run_python(
        "import sys, auto_workflow, auto_workflow.tracing\n"
        "assert 'opentelemetry' not in sys.modules, 'opentelemetry imported'\n"
        "assert 'auto_workflow.integrations.otel' not in sys.modules\n"
    )
    assert done.returncode == 0, done.stderr


def test_adapter_without_opentelemetry_names_the_extra() -> None:
    done = run_python(
        "import sys\nsys.modules['opentelemetry'] = None\nimport auto_workflow.integrations.otel\n"
    )
    assert done.returncode != 0
    assert "auto-workflow[otel]" in done.stderr


def test_a_continue_run_with_failures_marks_the_flow_span_failed() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from auto_workflow import flow, task
    from auto_workflow.integrations.otel import OpenTelemetryTracer
    from auto_workflow.tracing import set_tracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer(OpenTelemetryTracer(provider))

    @task
    def quickfail() -> int:
        raise KeyError("x")

    @flow
    def cont() -> Any:
        return quickfail()

    cont.run(failure_policy="continue")
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "flow cont"]
    assert span.attributes is not None
    assert span.attributes["auto_workflow.flow.result"] == "failure"
    assert span.attributes["error.type"] == "auto_workflow.exceptions.AggregateTaskError"

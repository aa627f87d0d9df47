"""The public surface changes only on purpose, and importing the library has no side effects."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import auto_workflow

EXPECTED_TOP_LEVEL = {
    "FailurePolicy",
    "Flow",
    "RunContext",
    "TaskDefinition",
    "fan_out",
    "flow",
    "get_context",
    "subscribe",
    "task",
}

PUBLIC_MODULES = {
    "auto_workflow.artifacts": {
        "get_store",
        "set_store",
        "ArtifactRef",
        "MemoryArtifactStore",
        "FilesystemArtifactStore",
    },
    "auto_workflow.cache": {
        "get_result_cache",
        "set_result_cache",
        "ResultCache",
        "MemoryResultCache",
        "FilesystemResultCache",
        "CacheKeyReport",
    },
    "auto_workflow.context": {"get_context"},
    "auto_workflow.fanout": {"fan_out"},
    "auto_workflow.cli": {"main"},
    "auto_workflow.tracing": {"set_tracer", "get_tracer"},
    "auto_workflow.middleware": {"register", "clear"},
    "auto_workflow.events": {"subscribe", "unsubscribe", "EVENT_NAMES"},
    "auto_workflow.integrations.otel": {"OpenTelemetryTracer"},
    "auto_workflow.integrations.prometheus": {"PrometheusMetrics"},
    "auto_workflow.metrics_provider": {
        "set_metrics_provider",
        "get_metrics_provider",
        "InMemoryMetrics",
    },
    "auto_workflow.config": {"load_config", "reload_config"},
    "auto_workflow.secrets": {
        "secret",
        "set_secrets_provider",
        "EnvSecrets",
        "StaticMappingSecrets",
    },
    "auto_workflow.exceptions": {
        "AutoWorkflowError",
        "TaskExecutionError",
        "TimeoutError",
        "RetryExhaustedError",
        "AggregateTaskError",
        "ArtifactNotFoundError",
        "InvalidKeyError",
        "CacheKeyWarning",
        "CorruptEntryWarning",
    },
}


def test_top_level_exports_are_pinned() -> None:
    assert set(auto_workflow.__all__) == EXPECTED_TOP_LEVEL
    for name in auto_workflow.__all__:
        assert getattr(auto_workflow, name) is not None


@pytest.mark.parametrize(("module", "names"), sorted(PUBLIC_MODULES.items()))
def test_public_module_paths_keep_working(module: str, names: set[str]) -> None:
    mod = importlib.import_module(module)
    exported = set(mod.__all__)
    assert names <= exported
    for name in exported:
        assert hasattr(mod, name), f"{module}.__all__ names missing {name}"


def test_fanout_module_is_the_same_function() -> None:
    from auto_workflow.fanout import fan_out

    assert fan_out is auto_workflow.fan_out


def test_error_tree_has_one_root_and_builtin_bases() -> None:
    from auto_workflow import exceptions as ex

    for name in ex.__all__:
        root = ex.AutoWorkflowWarning if name.endswith("Warning") else ex.AutoWorkflowError
        assert issubclass(getattr(ex, name), root)
    assert issubclass(ex.AutoWorkflowWarning, UserWarning)
    assert issubclass(ex.InvalidKeyError, ValueError)
    assert issubclass(ex.TimeoutError, TimeoutError)
    assert issubclass(ex.TimeoutError, ex.TaskExecutionError)
    assert issubclass(ex.ArtifactNotFoundError, KeyError)
    assert issubclass(ex.PlaceholderMisuseError, TypeError)


def test_errors_survive_pickling() -> None:
    import pickle

    from auto_workflow.exceptions import AggregateTaskError, RetryExhaustedError

    err = RetryExhaustedError("load", ValueError("x"), 3)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.task_name, copy.attempts, str(copy)) == ("load", 3, str(err))
    agg = pickle.loads(pickle.dumps(AggregateTaskError([err])))
    assert agg.errors[0].task_name == "load"


def test_importing_has_no_side_effects() -> None:
    probe = """
import json, logging, sys, threading
before = set(threading.enumerate())
import auto_workflow, auto_workflow.artifacts, auto_workflow.cache, auto_workflow.tracing
import auto_workflow.middleware, auto_workflow.events, auto_workflow.metrics_provider
import auto_workflow.config, auto_workflow.secrets, auto_workflow.cli
lib = logging.getLogger("auto_workflow")
print(json.dumps({
    "threads": len(set(threading.enumerate()) - before),
    "handlers": len(lib.handlers) + len(logging.getLogger().handlers),
    "multiprocessing": "multiprocessing.pool" in sys.modules,
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stderr == ""
    assert json.loads(out.stdout) == {"threads": 0, "handlers": 0, "multiprocessing": False}

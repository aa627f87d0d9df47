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
        "FsspecArtifactStore",
        "InMemoryArtifactStore",
        "FileSystemArtifactStore",
    },
    "auto_workflow.cache": {
        "get_result_cache",
        "set_result_cache",
        "ResultCache",
        "MemoryResultCache",
        "FilesystemResultCache",
        "FsspecResultCache",
        "InMemoryResultCache",
        "FileSystemResultCache",
        "CacheKeyReport",
    },
    "auto_workflow.context": {"get_context", "set_context", "reset_context", "use_context"},
    "auto_workflow.fanout": {"fan_out"},
    "auto_workflow.cli": {"main"},
    "auto_workflow.tracing": {"set_tracer", "get_tracer", "DummyTracer"},
    "auto_workflow.middleware": {"register", "clear"},
    "auto_workflow.events": {"subscribe", "unsubscribe", "emit", "EVENT_NAMES"},
    "auto_workflow.logging": {"enable_structured_logging", "enable_pretty_logging"},
    "auto_workflow.integrations.otel": {"OpenTelemetryTracer"},
    "auto_workflow.integrations.prometheus": {"PrometheusMetrics"},
    "auto_workflow.metrics_provider": {
        "set_metrics_provider",
        "get_metrics_provider",
        "InMemoryMetrics",
    },
    "auto_workflow.config": {"load_config", "reload_config", "Config", "DEFAULTS"},
    "auto_workflow.secrets": {
        "secret",
        "set_secrets_provider",
        "EnvSecrets",
        "StaticMappingSecrets",
        "DummyVaultSecrets",
    },
    "auto_workflow.connectors": {
        "get",
        "register_profile",
        "profiles",
        "load_profiles",
        "close_all",
        "reload",
        "Kind",
        "Profile",
        "PostgresConnector",
        "StorageConnector",
        "ConnectorError",
        "ProfileError",
        "MissingExtraError",
        "DatabaseError",
        "TransientError",
        "QueryTimeoutError",
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
        "EventNameWarning",
        "ContextError",
        "CycleDetectedError",
        "InvalidGraphError",
    },
}

ALIASES = [
    # (module, the public auto-workflow package's name, our name for the same object)
    ("auto_workflow.artifacts", "FileSystemArtifactStore", "FilesystemArtifactStore"),
    ("auto_workflow.artifacts", "InMemoryArtifactStore", "MemoryArtifactStore"),
    ("auto_workflow.cache", "FileSystemResultCache", "FilesystemResultCache"),
    ("auto_workflow.cache", "InMemoryResultCache", "MemoryResultCache"),
    ("auto_workflow.tracing", "DummyTracer", "NullTracer"),
    ("auto_workflow.secrets", "DummyVaultSecrets", "EnvSecrets"),
]


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


@pytest.mark.parametrize(("module", "alias", "ours"), ALIASES, ids=[a[1] for a in ALIASES])
def test_an_alias_is_the_same_object_and_exported(module: str, alias: str, ours: str) -> None:
    mod = importlib.import_module(module)
    assert getattr(mod, alias) is getattr(mod, ours)
    assert alias in mod.__all__


def test_config_defaults_is_a_read_only_mapping_of_the_defaults() -> None:
    from auto_workflow.config import DEFAULTS

    assert DEFAULTS["max_dynamic_tasks"] == 100_000
    assert DEFAULTS["result_cache"] == "memory"
    assert dict(DEFAULTS)["artifact_serializer"] == "pickle"
    with pytest.raises(TypeError):
        DEFAULTS["result_cache"] = "filesystem"  # type: ignore[index]


def test_cycle_and_invalid_graph_errors_are_value_errors() -> None:
    from auto_workflow.exceptions import AutoWorkflowError, CycleDetectedError, InvalidGraphError

    assert issubclass(CycleDetectedError, InvalidGraphError)
    assert issubclass(InvalidGraphError, ValueError)
    assert issubclass(InvalidGraphError, AutoWorkflowError)


def test_a_dummy_vault_reads_prefixed_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from auto_workflow.secrets import DummyVaultSecrets, secret, set_secrets_provider

    monkeypatch.setenv("APP_TOKEN", "t0k")
    set_secrets_provider(DummyVaultSecrets("APP_"))
    try:
        assert secret("TOKEN") == "t0k"
    finally:
        set_secrets_provider(DummyVaultSecrets())
    assert DummyVaultSecrets().get("APP_TOKEN") == "t0k"


def test_set_context_makes_get_context_work_until_reset() -> None:
    from auto_workflow import RunContext, get_context
    from auto_workflow.context import reset_context, set_context
    from auto_workflow.exceptions import ContextError

    token = set_context(RunContext(run_id="r1", flow_name="manual"))
    try:
        assert get_context().run_id == "r1"
    finally:
        reset_context(token)
    with pytest.raises(ContextError):
        get_context()
    with pytest.raises(TypeError, match="takes a RunContext"):
        set_context("r1")  # type: ignore[arg-type]


def test_get_context_outside_a_run_is_a_runtime_error_as_in_the_public_package() -> None:
    from auto_workflow import get_context

    with pytest.raises(RuntimeError, match="outside a run"):
        get_context()


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

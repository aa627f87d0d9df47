"""Configuration: defaults <- pyproject.toml <- environment, validated with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from auto_workflow._core._config import Config, find_pyproject, load_config


def _project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f"[project]\nname = 'x'\n\n[tool.auto_workflow]\n{table}"
    )
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    return nested


def test_every_config_key_is_validated() -> None:
    from dataclasses import fields

    from auto_workflow._core._config import _VALIDATORS

    assert set(_VALIDATORS) == {f.name for f in fields(Config)}


def test_defaults_without_pyproject_or_environment(tmp_path: Path) -> None:
    assert load_config(cwd=tmp_path, environ={}) == Config()
    assert Config().max_dynamic_tasks >= 100_000


def test_nearest_parent_pyproject_overrides_defaults(tmp_path: Path) -> None:
    nested = _project(tmp_path, "max_dynamic_tasks = 50\nresult_cache = 'filesystem'\n")
    assert find_pyproject(nested) == tmp_path / "pyproject.toml"
    config = load_config(cwd=nested, environ={})
    assert config.max_dynamic_tasks == 50
    assert config.result_cache == "filesystem"
    assert config.artifact_store == "memory"


def test_environment_overrides_pyproject(tmp_path: Path) -> None:
    nested = _project(tmp_path, "max_dynamic_tasks = 50\n")
    env = {"AUTO_WORKFLOW_MAX_DYNAMIC_TASKS": "7", "AUTO_WORKFLOW_LOG_LEVEL": "debug"}
    config = load_config(cwd=nested, environ=env)
    assert config.max_dynamic_tasks == 7
    assert config.log_level == "DEBUG"


def test_non_numeric_number_names_key_and_source(tmp_path: Path) -> None:
    env = {"AUTO_WORKFLOW_PROCESS_POOL_MAX_WORKERS": "many"}
    with pytest.raises(ValueError, match="process_pool_max_workers") as info:
        load_config(cwd=tmp_path, environ=env)
    assert "AUTO_WORKFLOW_PROCESS_POOL_MAX_WORKERS" in str(info.value)
    assert "positive integer" in str(info.value)


def test_unknown_backend_lists_allowed_values(tmp_path: Path) -> None:
    nested = _project(tmp_path, "artifact_store = 's3'\n")
    with pytest.raises(ValueError, match="artifact_store") as info:
        load_config(cwd=nested, environ={})
    message = str(info.value)
    assert "pyproject.toml" in message
    assert "'memory'" in message
    assert "'filesystem'" in message


def test_unknown_key_in_pyproject_is_rejected(tmp_path: Path) -> None:
    nested = _project(tmp_path, "max_dynamic_task = 5\n")
    with pytest.raises(ValueError, match="unknown config key 'max_dynamic_task'"):
        load_config(cwd=nested, environ={})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AUTO_WORKFLOW_MAX_DYNAMIC_TASKS", "0"),
        ("AUTO_WORKFLOW_ARTIFACT_SERIALIZER", "yaml"),
        ("AUTO_WORKFLOW_LOG_LEVEL", "loud"),
        ("AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES", "-3"),
        ("AUTO_WORKFLOW_BLOCKING_WARNING_MS", "-1"),
        ("AUTO_WORKFLOW_BLOCKING_WARNING_MS", "soon"),
        ("AUTO_WORKFLOW_BLOCKING_WARNING_MS", "nan"),
    ],
)
def test_invalid_environment_values(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        load_config(cwd=tmp_path, environ={key: value})


def test_the_blocking_warning_threshold_is_milliseconds_and_zero_is_off(tmp_path: Path) -> None:
    assert Config().blocking_warning_ms == 100.0
    env = {"AUTO_WORKFLOW_BLOCKING_WARNING_MS": "250"}
    assert load_config(cwd=tmp_path, environ=env).blocking_warning_ms == 250.0
    assert (
        load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_BLOCKING_WARNING_MS": "0"})[
            "blocking_warning_ms"
        ]
        == 0.0
    )
    nested = _project(tmp_path, "blocking_warning_ms = 12.5\n")
    assert load_config(cwd=nested, environ={}).blocking_warning_ms == 12.5
    (tmp_path / "bad").mkdir()
    nested = _project(tmp_path / "bad", "blocking_warning_ms = true\n")
    with pytest.raises(ValueError, match="milliseconds >= 0"):
        load_config(cwd=nested, environ={})


def test_optional_numbers_accept_none(tmp_path: Path) -> None:
    env = {"AUTO_WORKFLOW_RESULT_CACHE_MAX_ENTRIES": "none"}
    assert load_config(cwd=tmp_path, environ=env).result_cache_max_entries is None


def test_public_module_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from auto_workflow import config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTO_WORKFLOW_MAX_DYNAMIC_TASKS", "12")
    try:
        assert config.reload_config().max_dynamic_tasks == 12
        assert config.get_config().max_dynamic_tasks == 12
    finally:
        monkeypatch.delenv("AUTO_WORKFLOW_MAX_DYNAMIC_TASKS")
        config.reload_config()


def test_a_misspelt_environment_variable_warns_with_a_suggestion(tmp_path: Path) -> None:
    from auto_workflow.exceptions import AutoWorkflowWarning

    with pytest.warns(
        AutoWorkflowWarning, match=r"_RESULT_CACH is ignored; did you mean .*_CACHE\?"
    ):
        config = load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_RESULT_CACH": "filesystem"})
    assert config == Config()  # ignored, and the run goes on
    with pytest.warns(AutoWorkflowWarning, match=r"AUTO_WORKFLOW_HOME is ignored\. Known"):
        load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_HOME": "/x"})
    quiet = {"AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS": "1", "OTHER_TOOL_X": "y"}
    assert load_config(cwd=tmp_path, environ=quiet) == Config()


def test_config_is_a_read_only_mapping_with_typed_values(tmp_path: Path) -> None:
    cfg = load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_MAX_DYNAMIC_TASKS": "7"})
    assert cfg["max_dynamic_tasks"] == 7
    assert "result_cache" in cfg
    assert "nope" not in cfg
    assert dict(cfg)["max_dynamic_tasks"] == 7
    assert list(cfg) == [
        "log_level",
        "max_dynamic_tasks",
        "artifact_store",
        "artifact_store_path",
        "artifact_serializer",
        "result_cache",
        "result_cache_path",
        "result_cache_max_entries",
        "process_pool_max_workers",
        "history",
        "history_path",
        "history_retention",
        "history_keep_runs",
        "durable",
        "executor",
        "dask_address",
        "blocking_warning_ms",
    ]
    assert len(cfg) == 17
    assert cfg.get("result_cache_max_entries", 5) is None
    with pytest.raises(KeyError, match="did you mean 'max_dynamic_tasks'"):
        cfg["max_dynamic_task"]
    with pytest.raises(TypeError):
        cfg["log_level"] = "DEBUG"  # type: ignore[index]
    assert cfg == load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_MAX_DYNAMIC_TASKS": "7"})


def test_a_validation_error_points_to_the_migration_page(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be one of .*docs/migrating\.md"):
        load_config(cwd=tmp_path, environ={"AUTO_WORKFLOW_RESULT_CACHE": "redis"})
    (tmp_path / "pyproject.toml").write_text("[tool.auto_workflow]\nresult_cach = 'memory'\n")
    with pytest.raises(ValueError, match=r"unknown config key .*docs/migrating\.md"):
        load_config(cwd=tmp_path, environ={})

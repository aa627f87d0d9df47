"""Profiles: pyproject.toml overlaid by the environment, validated, errors that say what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from auto_workflow import connectors
from auto_workflow.config import load_config
from auto_workflow.connectors import Kind, ProfileError, load_profiles

PYPROJECT = """
[tool.auto_workflow]
max_dynamic_tasks = 5

[tool.auto_workflow.connectors.warehouse]
kind = "postgres"
dsn = "secret://WAREHOUSE_DSN"
max_size = 8

[tool.auto_workflow.connectors.lake]
kind = "fsspec"
url = "memory://lake"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return tmp_path


def test_profiles_come_from_pyproject_with_defaults(project: Path) -> None:
    found = load_profiles(cwd=project, environ={})
    assert set(found) == {"warehouse", "lake"}
    warehouse = found["warehouse"]
    assert warehouse.kind is Kind.POSTGRES
    assert warehouse["dsn"] == "secret://WAREHOUSE_DSN"
    assert (warehouse["max_size"], warehouse["min_size"], warehouse["timeout"]) == (8, 1, 30.0)
    assert "connectors.warehouse" in warehouse.source


def test_environment_variables_overlay_fields_and_add_profiles(project: Path) -> None:
    env = {
        "AUTO_WORKFLOW_CONNECTORS__WAREHOUSE__MAX_SIZE": "3",
        "AUTO_WORKFLOW_CONNECTORS__SCRATCH__KIND": "fsspec",
        "AUTO_WORKFLOW_CONNECTORS__SCRATCH__URL": "memory://scratch",
    }
    found = load_profiles(cwd=project, environ=env)
    assert found["warehouse"]["max_size"] == 3
    assert found["scratch"]["url"] == "memory://scratch"
    assert "AUTO_WORKFLOW_CONNECTORS__SCRATCH__*" in found["scratch"].source


def test_the_connectors_table_and_variables_are_not_unknown_config_keys(project: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config(
            cwd=project, environ={"AUTO_WORKFLOW_CONNECTORS__LAKE__URL": "memory://x"}
        )
    assert config.max_dynamic_tasks == 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "mysql", "dsn": "x"}, r"'kind' is 'mysql'; valid kinds: 'postgres', 'fsspec'"),
        ({"kind": "postgres"}, r"needs the field 'dsn'"),
        ({"kind": "postgres", "dsn": "x", "pool": 3}, r"unknown field 'pool'.*valid fields"),
        ({"kind": "postgres", "dsn": "x", "max_size": "lots"}, r"'max_size'='lots' must be"),
        ({"kind": "postgres", "dsn": "x", "min_size": 5, "max_size": 2}, r"larger than"),
        ({"kind": "postgres", "dsn": "x", "timeout": 0}, r"'timeout'=0 must be a number"),
        ({"kind": "postgres", "dsn": "x", "max_size": "secret://N"}, r"cannot be a secret"),
    ],
)
def test_a_bad_profile_names_the_profile_and_the_field(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        connectors.register_profile("warehouse", **fields)  # type: ignore[arg-type]
    assert "'warehouse'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_bad_profile_in_pyproject_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.auto_workflow.connectors.w]\nkind = "postgres"\ndsn = "x"\nmax_size = 0\n'
    )
    with pytest.raises(ProfileError, match=r"connectors\.w\] in .*pyproject.toml"):
        load_profiles(cwd=tmp_path, environ={})


def test_an_unknown_profile_lists_the_known_ones() -> None:
    connectors.register_profile("lake", kind="fsspec", url="memory://x")
    with pytest.raises(ProfileError, match=r"no connector profile 'lakes'; known profiles: 'lake'"):
        connectors.get("lakes")


def test_a_malformed_variable_says_how_to_write_it() -> None:
    with pytest.raises(ProfileError, match=r"<NAME>__<FIELD>"):
        load_profiles(environ={"AUTO_WORKFLOW_CONNECTORS__WAREHOUSE": "x"})


def test_importing_connectors_imports_no_driver_and_reads_nothing() -> None:
    probe = """
import json, sys, threading
import auto_workflow.connectors
from auto_workflow._connectors._registry import _REGISTRY
print(json.dumps({
    "drivers": sorted(set(sys.modules) & {"psycopg", "psycopg_pool", "fsspec", "adlfs"}),
    "threads": threading.active_count(),
    "loaded": _REGISTRY.loaded,
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == {"drivers": [], "threads": 1, "loaded": None}

"""Every engine test runs twice: with the run history on (each call goes by the journal,
``FlowRunner._run_recorded_node``) and with it off, where calls that nothing wraps take the
runner's straight line (``FlowRunner._run_bares``). The two paths must behave alike."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from auto_workflow.config import reload_config


@pytest.fixture(autouse=True, params=["recorded", "straight"])
def engine_path(request: pytest.FixtureRequest, isolated_history: Path) -> Iterator[str]:
    """``recorded``: the history on (the default); ``straight``: ``AUTO_WORKFLOW_HISTORY=off``."""
    saved = os.environ.get("AUTO_WORKFLOW_HISTORY")
    os.environ["AUTO_WORKFLOW_HISTORY"] = "sqlite" if request.param == "recorded" else "off"
    reload_config()
    yield request.param
    if saved is None:
        os.environ.pop("AUTO_WORKFLOW_HISTORY", None)
    else:
        os.environ["AUTO_WORKFLOW_HISTORY"] = saved
    reload_config()

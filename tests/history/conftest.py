"""Fixtures for the run history tests: a history file in ``tmp_path``, writers on it, and a
headless Chromium for the pages the history renders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import Browser, chromium_or_skip

from auto_workflow._history._store import HistoryStore
from auto_workflow._history._writer import HistoryWriter, WriterOptions


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh headless Chromium for one test (skipped without one, failed on CI)."""
    binary = chromium_or_skip()
    with Browser.start(binary) as started:
        yield started


@pytest.fixture
def history_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite"


@pytest.fixture
def make_writer(history_path: Path) -> Iterator[Callable[..., HistoryWriter]]:
    """Writers on ``history_path`` (or another path), all closed after the test."""
    made: list[HistoryWriter] = []

    def make(path: Path | None = None, **options: object) -> HistoryWriter:
        writer = HistoryWriter(path or history_path, WriterOptions(**options))  # type: ignore[arg-type]
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close()


@pytest.fixture
def store(history_path: Path) -> HistoryStore:
    return HistoryStore(history_path)

"""Fixtures for the history tests: a headless Chromium for the pages they render."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser import Browser, chromium_or_skip


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh headless Chromium for one test (skipped without one, failed on CI)."""
    binary = chromium_or_skip()
    with Browser.start(binary) as started:
        yield started

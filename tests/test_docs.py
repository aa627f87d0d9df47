"""The documentation's examples run: every ```python block of a page, in order, as a script.

The pages are docs/*.md and the README; a block that is not meant to run is not ```python.

Each page runs in a fresh interpreter in an empty working directory, so examples cannot
lean on the test process or on each other, and files they write land in a temporary place.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: Path) -> str:
    """The page's python blocks joined into one script."""
    return "\n\n".join(m.group(1) for m in _BLOCK.finditer(page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    script = python_blocks(page)
    assert script.strip(), f"{page.name} has no python example"
    (tmp_path / "example.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_WORKFLOW_")}
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{page.name} examples failed:\n{done.stderr}"


def test_a_failing_example_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("text\n\n```python\nassert 1 == 2\n```\n\n```toml\nx = 1\n```\n")
    assert python_blocks(page) == "assert 1 == 2\n"

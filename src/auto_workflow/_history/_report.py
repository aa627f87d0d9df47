"""A self-contained HTML report of one recorded run.

:func:`render_report` turns a :class:`RunRecord` into one HTML page: its CSS and scripts are
inline, so it opens from ``file://`` and makes no network request. The run itself travels as
one JSON document (see :mod:`._report_data`) inside ``<script type="application/json">``,
and the page's own script builds everything from it with ``textContent`` and canvas calls.

Invariants:

- User text (task names, params, error messages, tracebacks) appears in the page only inside
  that JSON document, where ``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e``
  and ``\\u0026``. So no ``</script>`` or ``<!--`` in a task name can end the script
  element early, and nothing in the data is ever parsed as HTML.
- :func:`write_report` replaces the target all at once: a reader sees the old file or the
  new one, never half of one.

The graph layout is dagre (``report_assets/dagre.min.js``, from the npm package
``@dagrejs/dagre`` 3.1.4, MIT licence, copyright (c) 2012-2014 Chris Pettitt; the licence
text is ``report_assets/dagre.LICENSE``). The file is vendored unchanged; only its
``sourceMappingURL`` comment is left out when it is inlined, so that no tool looks for a
map file beside the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from auto_workflow._history._records import RunRecord
from auto_workflow._history._report_data import report_data

__all__ = ["Served", "embed_json", "render_report", "served_data", "write_report"]

_ASSETS = ("report.html", "report.css", "report.js", "dagre.min.js")
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def embed_json(value: Any) -> str:
    """``value`` as compact JSON that is safe to place inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` only occur inside JSON strings, where their ``\\u`` escapes mean
    the same to ``JSON.parse``; without them, no HTML parser can see a tag in the text.

    Raises:
        ValueError: ``value`` holds NaN or an infinity, which JSON cannot carry.
        TypeError: ``value`` holds something other than JSON types.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_JSON_ESCAPES)


def _strip_source_map(script: str) -> str:
    lines = script.splitlines()
    return "\n".join(line for line in lines if not line.startswith("//# sourceMappingURL="))


@cache
def _assets() -> dict[str, str]:
    """The page's template, style and scripts, read once from the package."""
    folder = resources.files("auto_workflow._history").joinpath("report_assets")
    texts = {name: folder.joinpath(name).read_text(encoding="utf-8") for name in _ASSETS}
    texts["dagre.min.js"] = _strip_source_map(texts["dagre.min.js"])
    for name in ("report.css", "report.js", "dagre.min.js"):
        if "</script" in texts[name].lower() or "</style" in texts[name].lower():
            raise RuntimeError(f"report asset {name} would end its inline element early")
    return texts


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """How the local UI serves a report page (``auto-workflow ui``), not a file.

    ``runs_url`` is the runs list the page links back to. With ``poll_url`` (the run's
    summary, see ``_ui``) and ``data_url`` (its report data), the page is live: every
    ``every_ms`` it fetches the summary, and when its ``sig`` differs from the one the page
    was drawn from, it fetches the data and draws itself again. It stops once the run ended.
    The page may then fetch from its own origin only (``connect-src 'self'``).
    """

    runs_url: str
    poll_url: str | None = None
    data_url: str | None = None
    sig: str = ""
    every_ms: int = 1000

    def __post_init__(self) -> None:
        if (self.poll_url is None) != (self.data_url is None):
            raise ValueError("a live page needs both poll_url and data_url")
        if self.every_ms < 100:
            raise ValueError(f"every_ms must be at least 100; got {self.every_ms}")


def served_data(run: RunRecord, served: Served | None) -> dict[str, Any]:
    """The report data of ``run``, with the UI's links when it is served (see :class:`Served`)."""
    data = report_data(run)
    if served is not None:
        data["ui"] = {
            "runs": served.runs_url,
            "poll": served.poll_url,
            "data": served.data_url,
            "sig": served.sig,
            "every": served.every_ms,
        }
    return data


def render_report(run: RunRecord, *, served: Served | None = None) -> str:
    """The report of ``run`` as one self-contained HTML page.

    Args:
        run: a recorded run, finished or still running.
        served: How the local UI serves it (links back, live updates), or ``None`` for a
            file.

    Returns:
        The page's HTML text. It needs no other file; a file fetches nothing when opened,
        a live page only its own server's JSON.
    """
    assets = _assets()
    parts = {
        "/*STYLE*/": assets["report.css"],
        "/*DAGRE*/": assets["dagre.min.js"],
        "/*SCRIPT*/": assets["report.js"],
        "/*DATA*/": embed_json(served_data(run, served)),
    }
    page = assets["report.html"]
    if served is not None and served.poll_url is not None:
        page = page.replace("connect-src 'none'", "connect-src 'self'", 1)
    for marker, text in parts.items():
        head, _, tail = page.partition(marker)
        page = head + text + tail
    return page


def write_report(run: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write the report of ``run`` to ``path`` (folders made as needed), all or nothing.

    The page goes to a temporary file in the same folder first, then replaces ``path``.

    Returns:
        The absolute path written.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(run).encode("utf-8")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with open(fd, "wb") as file:
            file.write(page)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        # An error or an interrupt: the old report (if any) stays, the temp file goes.
        Path(temp).unlink(missing_ok=True)
        raise
    return target

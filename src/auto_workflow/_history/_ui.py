"""The local web view of the run history (``auto-workflow ui``), on the standard library.

Routes (``GET`` only; anything else is 405):

- ``/``: the runs list, newest first; ``?flow=F&status=S&page=N`` filters and pages it.
- ``/runs/<id>``: one run's report (:func:`~._report.render_report`), live while it runs.
- ``/api/runs/<id>``: the run's summary as JSON: status, counts and ``sig`` (what a live
  page polls, about 200 bytes).
- ``/api/runs/<id>/data``: the run's report data as JSON (what a live page redraws from).

Why no dependency: the UI is a handful of read-only pages and two JSON endpoints, read from a
SQLite file for one person's browser. ``http.server.ThreadingHTTPServer`` does that, so the
command works wherever the library is installed; a live page polls a small endpoint every
second instead of holding a stream open (server-sent events), which needs nothing more.

Invariants:

- Read-only. Nothing is served from disk: every response is built here, and a path that is
  not one of the routes above is 404. A run id is one percent-decoded path segment, looked
  up exactly.
- Bound to a loopback address it needs no token, but the ``Host`` header must name a
  loopback host (so a web page on another origin cannot read it by DNS rebinding). Bound
  to any other address it needs a token; with a token, every request must carry it
  (``?token=``, ``X-Auth-Token`` or ``Authorization: Bearer``), compared with
  :func:`hmac.compare_digest`, or it is answered 401. Links in the pages carry it on.
- User text (flow names, run ids, params) reaches the runs list only through
  :func:`html.escape`, and the report page only inside its JSON document.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import ipaddress
import json
import logging
import math
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from auto_workflow._history._errors import HistoryError
from auto_workflow._history._records import RunStatus, RunSummary
from auto_workflow._history._report import Served, render_report, served_data
from auto_workflow._history._store import HistoryStore

__all__ = [
    "DEFAULT_PORT",
    "PAGE_SIZE",
    "Headers",
    "Response",
    "UIApp",
    "UIServer",
    "is_loopback",
    "run_sig",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8765
PAGE_SIZE = 50
"""Runs per page of the runs list."""

_MAX_ID = 512
_MAX_PAGE = 1_000_000
_RUN = re.compile(r"/runs/([^/]{1,2048})")
_API = re.compile(r"/api/runs/([^/]{1,2048})(/data)?")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
_ORDER = ("failed", "running", "cancelled", "succeeded", "cached", "skipped")
_META_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "base-uri 'none'"
)
_LIST_CSP = _META_CSP + "; frame-ancestors 'none'"  # (a <meta> policy cannot say this)
_REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"


def is_loopback(host: str) -> bool:
    """True if ``host`` (a name or an address) only reaches this machine."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def run_sig(status: str, counts: Mapping[str, int]) -> str:
    """What a live page compares to know the run changed: its status and task counts."""
    return status + ";" + ",".join(f"{k}={counts[k]}" for k in sorted(counts))


class Headers(Protocol):
    """A request's headers (``email.message.Message`` or a dict): looked up by name."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Response:
    """One answer: status, body and its type, and headers of its own."""

    status: int
    body: bytes
    content_type: str = _HTML
    headers: tuple[tuple[str, str], ...] = ()
    csp: str = _LIST_CSP


def _text(status: HTTPStatus, message: str) -> Response:
    page = _page(
        status.phrase,
        f'<main class="error-page"><h1>{status.value} {status.phrase}'
        f"</h1><p>{html.escape(message)}</p></main>",
    )
    return Response(status.value, page.encode())


def _json(value: Any) -> Response:
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return Response(200, body, _JSON)


@cache
def _style() -> str:
    folder = resources.files("auto_workflow._history").joinpath("report_assets")
    return folder.joinpath("runs.css").read_text(encoding="utf-8")


def _page(title: str, body: str, *, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{_META_CSP}">'
        f'<link rel="icon" href="data:,">{meta}<title>{html.escape(title)}</title>'
        f"<style>{_style()}</style></head><body>{body}</body></html>"
    )


@dataclass(frozen=True, slots=True)
class _Filters:
    """The runs list's query: which runs, which page."""

    flow: str | None = None
    status: RunStatus | None = None
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> _Filters:
        """From ``?flow=&status=&page=`` (empty means any). ValueError when malformed."""
        status = query.get("status") or None
        page = query.get("page") or "1"
        if not page.isdigit() or not 1 <= int(page) <= _MAX_PAGE:
            raise ValueError(f"page must be a number from 1 to {_MAX_PAGE}")
        if status is not None and status not in {s.value for s in RunStatus}:
            raise ValueError(f"status must be one of {', '.join(s.value for s in RunStatus)}")
        return cls(
            query.get("flow") or None, None if status is None else RunStatus(status), int(page)
        )


@dataclass(slots=True)
class UIApp:
    """The routes over one history store, as plain calls: a request target and its
    headers in, a :class:`Response` out (the HTTP handler only moves bytes)."""

    store: HistoryStore
    token: str | None = None
    poll_ms: int = 1000
    page_size: int = PAGE_SIZE

    def handle(self, target: str, headers: Headers) -> Response:
        """Answer one ``GET``."""
        parts = urlsplit(target)
        try:
            query = {k: v[0] for k, v in parse_qs(parts.query, max_num_fields=20).items()}
        except ValueError:  # more fields than any page takes
            return _text(HTTPStatus.BAD_REQUEST, "too many query parameters")
        denied = self._denied(query, headers)
        if denied is not None:
            return denied
        try:
            return self._route(parts.path, query)
        except HistoryError as exc:
            logger.warning("the UI cannot read the run history: %s", exc)
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"cannot read the run history: {exc}")

    def _denied(self, query: Mapping[str, str], headers: Headers) -> Response | None:
        if self.token is None:
            if is_loopback(_hostname(headers.get("Host") or "")):
                return None
            return _text(HTTPStatus.FORBIDDEN, "this server answers to localhost only")
        given = query.get("token") or headers.get("X-Auth-Token") or _bearer(headers)
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return Response(
            401,
            b"401 Unauthorized: this server needs its token (?token=...)\n",
            "text/plain; charset=utf-8",
            (("WWW-Authenticate", 'Bearer realm="auto-workflow ui"'),),
        )

    def _route(self, path: str, query: Mapping[str, str]) -> Response:
        if path == "/":
            return self._runs(query)
        if path == "/favicon.ico":
            return Response(204, b"", "image/x-icon")
        found = _RUN.fullmatch(path)
        if found:
            return self._report(found.group(1))
        found = _API.fullmatch(path)
        if found:
            return self._api(found.group(1), bool(found.group(2)))
        return _text(HTTPStatus.NOT_FOUND, "there is no such page")

    # -- links ---------------------------------------------------------------------------

    def href(self, path: str, **query: object) -> str:
        """A link to ``path`` on this server, with ``query`` (empty values left out) and
        the token, if any."""
        pairs = [(k, str(v)) for k, v in query.items() if v not in (None, "")]
        if self.token is not None:
            pairs.append(("token", self.token))
        return path + ("?" + urlencode(pairs) if pairs else "")

    def run_href(self, run_id: str) -> str:
        """The link to run ``run_id``'s page."""
        return self.href("/runs/" + quote(run_id, safe=""))

    def api_href(self, run_id: str, *, data: bool = False) -> str:
        """The link to run ``run_id``'s summary (or, with ``data``, its report data)."""
        return self.href("/api/runs/" + quote(run_id, safe="") + ("/data" if data else ""))

    # -- the runs list -------------------------------------------------------------------

    def _runs(self, query: Mapping[str, str]) -> Response:
        try:
            filters = _Filters.parse(query)
        except ValueError as exc:
            return _text(HTTPStatus.BAD_REQUEST, str(exc))
        total = self.store.count_runs(filters.flow, filters.status)
        offset = (filters.page - 1) * self.page_size
        runs = self.store.list_runs(filters.flow, filters.status, self.page_size, offset)
        pages = max(1, math.ceil(total / self.page_size))
        body = _RunsPage(self, filters, runs, total, pages, self.store.flows()).render()
        live = any(r.status is RunStatus.RUNNING for r in runs)
        title = "runs · auto_workflow"
        return Response(200, _page(title, body, refresh=5 if live else None).encode())

    # -- one run -------------------------------------------------------------------------

    def _run_id(self, segment: str) -> str | None:
        try:
            run_id = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            return None
        return run_id if 0 < len(run_id) <= _MAX_ID else None

    def _served(self, run_id: str, status: RunStatus, counts: Mapping[str, int]) -> Served:
        live = status is RunStatus.RUNNING
        return Served(
            runs_url=self.href("/"),
            poll_url=self.api_href(run_id) if live else None,
            data_url=self.api_href(run_id, data=True) if live else None,
            sig=run_sig(status.value, counts),
            every_ms=self.poll_ms,
        )

    def _report(self, segment: str) -> Response:
        run_id = self._run_id(segment)
        record = None if run_id is None else self.store.get_run(run_id)
        if record is None:
            return _text(HTTPStatus.NOT_FOUND, "no recorded run has this id")
        served = self._served(record.run_id, record.status, record.counts())
        page = render_report(record, served=served)
        return Response(200, page.encode(), csp=_REPORT_CSP)

    def _api(self, segment: str, data: bool) -> Response:
        run_id = self._run_id(segment)
        if run_id is None:
            return _text(HTTPStatus.NOT_FOUND, "no recorded run has this id")
        if data:
            record = self.store.get_run(run_id)
            if record is None:
                return _text(HTTPStatus.NOT_FOUND, "no recorded run has this id")
            served = self._served(record.run_id, record.status, record.counts())
            return _json(served_data(record, served))
        summary = self.store.find_run(run_id)
        if summary is None:
            return _text(HTTPStatus.NOT_FOUND, "no recorded run has this id")
        return _json(_summary_json(summary))


def _hostname(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if ":" in header else header


def _bearer(headers: Headers) -> str | None:
    scheme, _, value = (headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _summary_json(run: RunSummary) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "flow": run.flow,
        "status": run.status.value,
        "counts": run.counts,
        "tasks": sum(run.counts.values()),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "sig": run_sig(run.status.value, run.counts),
    }


# -- rendering the runs list -----------------------------------------------------------------


def _when(epoch: float, now: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch).astimezone()
    return (
        f'<span title="{moment.isoformat(timespec="seconds")}">'
        f"{moment:%Y-%m-%d %H:%M:%S}</span>"
        f'<span class="ago">{_ago(now - epoch)}</span>'
    )


def _ago(seconds: float) -> str:
    if seconds < 0:
        return ""
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h {minutes % 60:02d}m"
    return f"{hours // 24}d {hours % 24:02d}h"


def _tasks_cell(counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return '<span class="count">no tasks</span>'
    shown = [s for s in _ORDER if counts.get(s)]
    bar = "".join(
        f'<span class="st-{s}" style="width:{100 * counts[s] / total:.2f}%"></span>' for s in shown
    )
    words = " · ".join(f'<span class="n-{s}">{counts[s]:,} {s}</span>' for s in shown)
    return (
        f'<div class="tasks"><span class="stack" title="{total:,} tasks">{bar}</span>'
        f'<span class="breakdown">{words}</span></div>'
    )


@dataclass(frozen=True, slots=True)
class _RunsPage:
    """The runs list's HTML body."""

    app: UIApp
    filters: _Filters
    runs: Sequence[RunSummary]
    total: int
    pages: int
    flows: Sequence[str]

    def render(self) -> str:
        where = html.escape(str(self.app.store.path))
        head = (
            "<header><h1>auto_workflow runs</h1>"
            f'<span class="where" title="the run history file">{where}</span></header>'
        )
        rows = "".join(self._row(r, time.time()) for r in self.runs)
        table = (
            "<table><thead><tr><th>Status</th><th>Flow</th><th>Run</th><th>Started</th>"
            '<th class="num">Duration</th><th>Tasks</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            if self.runs
            else f'<div class="empty">{self._nothing()}</div>'
        )
        note = (
            '<div class="note">This page reloads every 5 s while a run on it is running.</div>'
            if any(r.status is RunStatus.RUNNING for r in self.runs)
            else ""
        )
        card = f'<div class="card">{self._toolbar()}{table}{note}</div>'
        return f"{head}<main>{card}</main>"

    def _nothing(self) -> str:
        if self.filters.flow or self.filters.status:
            return "No run matches these filters."
        return "No recorded runs yet: run a flow and it shows up here."

    def _row(self, run: RunSummary, now: float) -> str:
        status = run.status.value
        duration = run.duration if run.ended_at is not None else max(0.0, now - run.started_at)
        shown = _duration(duration) + ("…" if run.ended_at is None else "")
        link = html.escape(self.app.run_href(run.run_id))
        return (
            f'<tr data-run="{html.escape(run.run_id)}" data-status="{status}">'
            f'<td><span class="pill {status}">{status}</span></td>'
            f'<td class="flow" title="{html.escape(run.flow)}">{html.escape(run.flow)}</td>'
            f'<td class="id"><a href="{link}">{html.escape(run.run_id)}</a></td>'
            f'<td class="when">{_when(run.started_at, now)}</td>'
            f'<td class="num">{shown}</td><td>{_tasks_cell(run.counts)}</td></tr>'
        )

    def _toolbar(self) -> str:
        flows = "".join(
            f'<option value="{html.escape(f)}"{" selected" if f == self.filters.flow else ""}>'
            f"{html.escape(f)}</option>"
            for f in self.flows
        )
        wanted = self.filters.status
        statuses = "".join(
            f'<option value="{s.value}"{" selected" if s is wanted else ""}>{s.value}</option>'
            for s in RunStatus
        )
        token = self.app.token
        hidden = (
            ""
            if token is None
            else f'<input type="hidden" name="token" value="{html.escape(token)}">'
        )
        clear = html.escape(self.app.href("/"))
        form = (
            '<form class="filters" method="get" action="/">'
            f'<label for="flow">flow</label><select id="flow" name="flow">'
            f'<option value="">all flows</option>{flows}</select>'
            f'<label for="status">status</label><select id="status" name="status">'
            f'<option value="">any status</option>{statuses}</select>{hidden}'
            '<button class="primary" type="submit">Filter</button>'
            f'<a href="{clear}">clear</a></form>'
        )
        return f'<div class="bar-row">{form}<span class="spacer"></span>{self._pager()}</div>'

    def _pager(self) -> str:
        page, size = self.filters.page, self.app.page_size
        first, last = (page - 1) * size + 1, min(page * size, self.total)
        shown = (
            f"{first:,}\u2013{last:,} of {self.total:,}" if self.runs else f"0 of {self.total:,}"
        )
        flow, status = self.filters.flow, self.filters.status
        status_value = None if status is None else status.value

        def link(to: int, text: str, rel: str) -> str:
            if not 1 <= to <= self.pages or to == page:
                return f'<span class="off">{text}</span>'
            href = html.escape(self.app.href("/", flow=flow, status=status_value, page=to))
            return f'<a rel="{rel}" href="{href}">{text}</a>'

        return (
            f'<div class="pager"><span class="count">runs {shown}</span>'
            f"{link(page - 1, '← newer', 'prev')}"
            f'<span class="count">page {page:,} of {self.pages:,}</span>'
            f"{link(page + 1, 'older →', 'next')}</div>"
        )


class _Handler(BaseHTTPRequestHandler):
    """Moves bytes between a socket and :class:`UIApp`; ``GET`` only."""

    server: UIServer
    server_version = "auto-workflow-ui"
    sys_version = ""
    timeout = 30  # a connection that sends nothing is dropped (its thread ends)

    def do_GET(self) -> None:
        try:
            response = self.server.app.handle(self.path, self.headers)
        except Exception:  # a bug answers 500, logged; the server goes on
            logger.exception("the UI failed to answer GET %s", self.path)
            response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "the UI failed; see its log")
        self._send(response)

    def _refuse(self) -> None:
        self._send(
            Response(
                405,
                b"405 Method Not Allowed: this server is read-only\n",
                "text/plain; charset=utf-8",
                (("Allow", "GET"),),
            )
        )

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", response.csp)
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class UIServer(ThreadingHTTPServer):
    """The UI's HTTP server: one thread per connection, none outliving it.

    Args:
        store: The history to show.
        host: The address to bind (default loopback only).
        port: The port (0: any free one).
        token: Required of every request when given; binding to a non-loopback address
            without one is a ValueError.
        poll_ms: How often a live page polls its run.
    """

    daemon_threads = True

    def __init__(
        self,
        store: HistoryStore,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        poll_ms: int = 1000,
    ) -> None:
        if token is None and not is_loopback(host):
            raise ValueError(
                f"binding to {host!r} (not a loopback address) needs a token: pass --token"
            )
        if token is not None and not token.strip():
            raise ValueError("the token must not be empty")
        self.app = UIApp(store, token, poll_ms)
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        """The runs list's address, token included."""
        host, port = self.server_address[0], self.server_address[1]
        name = host.decode() if isinstance(host, bytes) else host
        shown = f"[{name}]" if ":" in name else name
        if shown in ("0.0.0.0", "[::]"):
            shown = socket.gethostname()
        return f"http://{shown}:{port}" + self.app.href("/")

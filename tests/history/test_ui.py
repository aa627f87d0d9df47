"""``auto-workflow ui``: the runs list, a run's live page, the token, in a real browser."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import Browser, Page, png_colours
from history_helpers import T0, finish_tasks, record_run, start_run
from runs import HOSTILE

from auto_workflow import flow, task
from auto_workflow._history._records import RunStatus, TaskStatus
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._ui import UIApp, UIServer, is_loopback
from auto_workflow._history._writer import HistoryWriter

SHOTS = Path("/tmp/ui-shots")
Serve = Callable[..., UIServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start UI servers on free ports, each in a thread; all shut down after the test."""
    started: list[tuple[UIServer, threading.Thread]] = []

    def start(store: HistoryStore, host: str = "127.0.0.1", **options: object) -> UIServer:
        options.setdefault("poll_ms", 200)
        server = UIServer(store, host, 0, **options)  # type: ignore[arg-type]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ui-server"
        )
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _base(server: UIServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:  # an error response holds its socket until closed
            return exc.code, exc.read()


def _open(browser: Browser, url: str) -> Page:
    page = browser.new_page(1280, 800)
    page.goto(url)
    return page


def _rows(page: Page) -> list[list[str]]:
    rows: list[list[str]] = page.evaluate(
        "[...document.querySelectorAll('tbody tr')].map(r => [r.dataset.run, r.dataset.status,"
        " r.querySelector('.pill').textContent, r.querySelector('.flow').textContent])"
    )
    return rows


def _only_the_server(page: Page, server: UIServer) -> None:
    base = _base(server) + "/"
    assert page.errors() == []
    assert [u for u in page.requests() if not u.startswith(base)] == []


def _some_runs(writer: HistoryWriter) -> None:
    """Five runs of two flows, one a minute: succeeded, failed, cancelled and running."""
    record_run(writer, "etl-1", flow="etl", started_at=T0)
    record_run(writer, "etl-2", flow="etl", started_at=T0 + 60, status=RunStatus.FAILED)
    record_run(writer, "load-1", flow="load", started_at=T0 + 120)
    record_run(writer, "load-2", flow="load", started_at=T0 + 180, status=RunStatus.CANCELLED)
    start_run(writer, "etl-3", flow="etl", started_at=T0 + 240, tasks=4)  # still running
    finish_tasks(writer, "etl-3", [0], started_at=T0 + 240)
    assert writer.flush()


# ---------- the runs list ----------


def test_runs_list_shows_every_run_newest_first_with_its_status(
    browser: Browser, serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store)
    page = _open(browser, _base(server) + "/")
    assert _rows(page) == [
        ["etl-3", "running", "running", "etl"],
        ["load-2", "cancelled", "cancelled", "load"],
        ["load-1", "succeeded", "succeeded", "load"],
        ["etl-2", "failed", "failed", "etl"],
        ["etl-1", "succeeded", "succeeded", "etl"],
    ]
    running = page.evaluate("document.querySelector('tr[data-run=etl-3] .breakdown').textContent")
    assert running == "3 running · 1 succeeded"
    page.screenshot(SHOTS / "runs-list.png")
    assert png_colours(page.screenshot(full_page=False, scale=0.25)) > 10
    _only_the_server(page, server)


def test_runs_list_filters_by_flow_and_status(
    browser: Browser, serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store)
    page = _open(browser, _base(server) + "/")
    seen = len(page.events)
    page.evaluate(
        "document.getElementById('flow').value = 'etl';"
        "document.getElementById('status').value = 'succeeded';"
        "document.querySelector('form.filters button').click()"
    )
    page.wait_event("Page.loadEventFired", since=seen)
    assert [r[0] for r in _rows(page)] == ["etl-1"]
    assert page.evaluate("location.search") == "?flow=etl&status=succeeded"
    page.goto(_base(server) + "/?flow=load")
    assert [r[0] for r in _rows(page)] == ["load-2", "load-1"]
    page.goto(_base(server) + "/?status=running")
    assert [r[0] for r in _rows(page)] == ["etl-3"]
    page.goto(_base(server) + "/?flow=nope")
    assert "No run matches" in page.evaluate("document.body.textContent")
    _only_the_server(page, server)


def test_runs_list_pages_through_the_runs_newest_first(
    make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    writer = make_writer()
    for i in range(23):
        record_run(writer, f"run-{i:02d}", tasks=1, started_at=T0 + i)
    assert writer.flush()
    app = UIApp(store, page_size=10)
    pages = [app.handle(f"/?page={n}", {"Host": "127.0.0.1"}).body.decode() for n in (1, 2, 3)]
    ids = [re.findall(r'data-run="(run-\d+)"', page) for page in pages]
    assert ids[0] == [f"run-{i:02d}" for i in range(22, 12, -1)]
    assert ids[2] == ["run-02", "run-01", "run-00"]
    assert "runs 21\u201323 of 23" in pages[2]
    assert 'rel="next"' in pages[1]
    assert 'rel="next"' not in pages[2]
    assert app.handle("/?page=0", {"Host": "127.0.0.1"}).status == 400
    assert app.handle("/?status=bogus", {"Host": "127.0.0.1"}).status == 400
    assert app.handle("/?" + "&".join(f"x{i}=1" for i in range(50)), {}).status == 400


def test_a_run_links_to_its_report_page_and_back(
    browser: Browser, serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store)
    page = _open(browser, _base(server) + "/")
    seen = len(page.events)
    page.evaluate("document.querySelector('tr[data-run=etl-2] a').click()")
    page.wait_event("Page.loadEventFired", since=seen)
    page.wait_for("window.__report && window.__report.ready")
    assert page.evaluate("document.querySelector('#run-header .pill').textContent") == "failed"
    assert page.evaluate("document.getElementById('live-badge')") is None  # it has ended
    assert page.evaluate("document.querySelector('a.back').getAttribute('href')") == "/"
    _only_the_server(page, server)


# ---------- a live run ----------

GATES: dict[int, threading.Event] = {}


@task
def _gated(i: int) -> int:
    if not GATES[i].wait(30):
        raise TimeoutError(f"gate {i} was never opened")
    return i


@flow
def _gated_flow(n: int) -> list[int]:
    return [_gated(i) for i in range(n)]


def _tile(page: Page, status: str) -> str | None:
    query = f"document.querySelector('#totals [data-status={status}] .num')"
    text: str | None = page.evaluate(f"{query} && {query}.textContent")
    return text


def _unfinished(page: Page) -> int:
    """Tasks shown running, or waiting (declared, not started: the engine starts workers
    as it sees fit, so how many of the gated tasks have started is not ours to say)."""
    return sum(int(_tile(page, s) or 0) for s in ("running", "waiting"))


def _wait_until_recorded(store: HistoryStore, run_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = store.find_run(run_id)
        if found is not None and sum(found.counts.values()) == len(GATES):
            return
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} was not recorded in time")


def test_a_running_runs_page_redraws_its_counts_as_tasks_finish(
    browser: Browser, serve: Serve, isolated_history: Path
) -> None:
    GATES.clear()
    GATES.update({i: threading.Event() for i in range(3)})
    results: list[object] = []
    runner = threading.Thread(
        target=lambda: results.append(_gated_flow.run(3, run_id="live-run")), name="live-run"
    )
    runner.start()
    try:
        store = HistoryStore(isolated_history)
        _wait_until_recorded(store, "live-run")
        server = serve(store)
        page = _open(browser, _base(server) + "/runs/live-run")
        page.wait_for("window.__report && window.__report.ready")
        assert page.evaluate("document.getElementById('live-badge').textContent").startswith("live")
        assert _tile(page, "succeeded") == "0"
        assert _unfinished(page) == 3
        for done in (1, 2):
            GATES[done - 1].set()
            page.wait_for(
                f"document.querySelector('#totals [data-status=succeeded] .num')"
                f".textContent === '{done}'"
            )
            assert _unfinished(page) == 3 - done
            assert page.evaluate("document.querySelector('#run-header .pill').textContent") == (
                "running"
            )
        page.screenshot(SHOTS / "live-run.png", full_page=False)
        GATES[2].set()
        page.wait_for("document.querySelector('#run-header .pill').textContent === 'succeeded'")
        assert _tile(page, "succeeded") == "3"
        assert _unfinished(page) == 0
        assert page.evaluate("document.getElementById('live-badge')") is None
        assert page.evaluate("window.__report.draws") >= 3
        polls = page.evaluate("window.__report.polls")
        time.sleep(0.6)  # three poll intervals: an ended run is polled no more
        assert page.evaluate("window.__report.polls") == polls
        _only_the_server(page, server)
    finally:
        for gate in GATES.values():
            gate.set()
        runner.join(30)
    assert results == [[0, 1, 2]]


def test_the_summary_endpoint_is_small_json(
    serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store)
    status, body = _get(_base(server) + "/api/runs/etl-3")
    assert status == 200
    assert len(body) < 400
    summary = json.loads(body)
    assert (summary["status"], summary["counts"]) == ("running", {"running": 3, "succeeded": 1})
    status, body = _get(_base(server) + "/api/runs/etl-3/data")
    assert (status, json.loads(body)["run"]["id"]) == (200, "etl-3")


# ---------- who may ask, and what ----------


def test_a_server_beyond_loopback_needs_a_token(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        UIServer(store, "0.0.0.0", 0)
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.4")


def test_every_request_must_carry_the_token(
    serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store, "0.0.0.0", token="s3cret-token")
    base = _base(server)
    for path in ("/", "/runs/etl-1", "/api/runs/etl-1", "/favicon.ico", "/nope"):
        assert _get(base + path)[0] == 401, path
        assert _get(base + path + "?token=s3cret-tokeN")[0] == 401, path
    assert _get(base + "/", {"Authorization": "Bearer wrong"})[0] == 401
    status, body = _get(base + "/?token=s3cret-token")
    assert status == 200
    assert "/runs/etl-1?token=s3cret-token" in body.decode()  # links carry it on
    assert _get(base + "/api/runs/etl-1", {"X-Auth-Token": "s3cret-token"})[0] == 200
    assert _get(base + "/runs/etl-1", {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert server.url.endswith("/?token=s3cret-token")


def test_a_live_page_behind_a_token_polls_with_it(
    browser: Browser, serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    _some_runs(make_writer())
    server = serve(store, "0.0.0.0", token="tok")
    page = _open(browser, _base(server) + "/runs/etl-3?token=tok")
    page.wait_for("window.__report && window.__report.polls >= 2")
    assert page.evaluate("document.getElementById('live-badge').dataset.state") == "on"
    _only_the_server(page, server)


def test_without_a_token_only_a_loopback_host_header_is_answered(
    serve: Serve, store: HistoryStore
) -> None:
    base = _base(serve(store))
    assert _get(base + "/", {"Host": "evil.example:8765"})[0] == 403
    assert _get(base + "/", {"Host": "localhost:8765"})[0] == 200


def test_only_get_is_answered(serve: Serve, store: HistoryStore) -> None:
    base = _base(serve(store))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(base + "/", data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        with caught.value:
            assert caught.value.code == 405


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/../../etc/passwd",
        "/runs/",
        "/runs/etl-1/extra",
        "/runs/%ff%fe",
        "/runs/no-such-run",
        "/api/runs/no-such-run",
        "/report_assets/report.js",
        "/runs/..%2f..%2fetc%2fpasswd",
    ],
)
def test_paths_outside_the_routes_are_not_found(
    serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore, path: str
) -> None:
    record_run(make_writer(), "etl-1")
    status, body = _get(_base(serve(store)) + path)
    assert status == 404
    assert b"root:" not in body


def test_hostile_names_render_as_text(
    browser: Browser, serve: Serve, make_writer: Callable[..., HistoryWriter], store: HistoryStore
) -> None:
    writer = make_writer()
    for i, name in enumerate(HOSTILE):
        start_run(writer, f"{name}#{i}", flow=name, started_at=T0 + i)
        writer.nodes_declared(f"{name}#{i}", [(0, f"{name}:0", name, "task", (), None, None)])
        finish_tasks(writer, f"{name}#{i}", [0], status=TaskStatus.FAILED, started_at=T0 + i)
        writer.run_ended(f"{name}#{i}", RunStatus.FAILED, T0 + i + 2, None)
    assert writer.flush()
    server = serve(store)
    page = _open(browser, _base(server) + "/")
    page.screenshot(SHOTS / "hostile-list.png")
    assert sorted(r[3] for r in _rows(page)) == sorted(HOSTILE)
    assert sorted(r[0] for r in _rows(page)) == sorted(f"{n}#{i}" for i, n in enumerate(HOSTILE))
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('img, b, i').length") == 0
    for i in range(len(HOSTILE)):
        page.goto(_base(server) + "/")
        seen = len(page.events)
        page.evaluate(f"document.querySelectorAll('tbody tr a')[{i}].click()")
        page.wait_event("Page.loadEventFired", since=seen)
        page.wait_for("window.__report && window.__report.ready")
        title = page.evaluate("document.querySelector('#run-header h1').textContent")
        assert title in HOSTILE
        assert page.evaluate("document.scripts.length") == 3
    assert page.dialogs == []
    _only_the_server(page, server)


# ---------- the command ----------


def test_the_ui_command_prints_a_token_beyond_loopback_and_stops_on_ctrl_c(
    tmp_path: Path, make_writer: Callable[..., HistoryWriter], history_path: Path
) -> None:
    record_run(make_writer(), "etl-1")
    env = {**os.environ, "AUTO_WORKFLOW_HISTORY_PATH": str(history_path)}
    command = [sys.executable, "-m", "auto_workflow", "ui", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline()]
        while lines[-1] and "open http" not in lines[-1]:
            lines.append(process.stderr.readline())
        assert "generated one" in "".join(lines)
        found = re.search(r"open (http://\S+:(\d+)/\?token=(\S+))", lines[-1])
        assert found is not None, lines
        port, token = found.group(2), found.group(3)
        assert _get(f"http://127.0.0.1:{port}/")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/?token={token}")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode in (0, 130)
    assert "Traceback" not in err
    assert "stopped" in err
    assert out == ""

"""The HTML run report: the data it embeds, and the page as a real browser shows it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, Page, png_colours, png_size
from runs import FAILED_CHILDREN, FANOUT, HOSTILE, T0, hostile_run, nightly_run, small_fanout_run

from auto_workflow import flow, task
from auto_workflow._history._records import (
    ErrorRecord,
    RunRecord,
    RunStatus,
    TaskRecord,
    TaskStatus,
)
from auto_workflow._history._report import embed_json, render_report, write_report
from auto_workflow._history._report_data import (
    FANOUT_NODE,
    NAME_NODE,
    critical_path,
    graph_of,
    pack_lanes,
    report_data,
    timings,
)
from auto_workflow.exceptions import TaskExecutionError

SHOTS = Path("/tmp/report-shots")
TIMES = "\u00d7"  # the multiplication sign in a group's label ("enrich", TIMES, "500")


def _data_blob(page: str) -> str:
    found = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page, re.S)
    assert found is not None
    return found.group(1)


def _task(node: str, start: float | None, end: float | None, *up: str, **extra: Any) -> TaskRecord:
    status = extra.pop("status", TaskStatus.SUCCEEDED)
    return TaskRecord(
        node=node,
        task=node.split(":")[0],
        index=int(node.split(":")[1]),
        status=status,
        started_at=None if start is None else T0 + start,
        ended_at=None if end is None else T0 + end,
        upstream=up,
        **extra,
    )


# ---------- embedding ----------


@pytest.mark.parametrize("text", [*HOSTILE, "</SCRIPT >", "<!--", "\u2028", "]]>"])
def test_embedded_json_has_no_markup_and_round_trips(text: str) -> None:
    embedded = embed_json({"name": text, "list": [text]})
    assert "<" not in embedded
    assert ">" not in embedded
    assert json.loads(embedded) == {"name": text, "list": [text]}


def test_embedding_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        embed_json({"x": float("nan")})


def test_hostile_run_page_has_only_the_reports_own_script_elements() -> None:
    page = render_report(hostile_run())
    assert page.lower().count("<script") == 3
    assert page.lower().count("</script") == 3
    assert json.loads(_data_blob(page))["run"]["flow"] == HOSTILE[0]


def test_unserialisable_params_are_shown_as_repr() -> None:
    run = RunRecord(
        run_id="r",
        flow="f",
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        params={"nan": float("nan"), "obj": object, "ok": [1, "a"]},
    )
    params = json.loads(_data_blob(render_report(run)))["run"]["params"]
    assert params == {"nan": "nan", "obj": "<class 'object'>", "ok": [1, "a"]}


def test_strings_are_interned_once() -> None:
    data = report_data(nightly_run())
    tracebacks = [s for s in data["s"] if s.startswith("Traceback") and "CRM" in s]
    assert len(tracebacks) == 1
    assert data["s"].count("enrich") == 1


# ---------- lanes ----------


def test_lanes_never_overlap_and_are_as_few_as_the_most_open_at_once() -> None:
    spans = [(0, 10), (2, 5), (5, 8), (10, 12), (1, 3), None, (8, 9)]
    lanes = pack_lanes(spans)
    assert lanes[5] == -1
    for a, (sa, la) in enumerate(zip(spans, lanes, strict=True)):
        for b, (sb, lb) in enumerate(zip(spans, lanes, strict=True)):
            if a < b and sa and sb and la == lb:
                assert sa[1] <= sb[0] or sb[1] <= sa[0], (sa, sb)
    assert max(lanes) + 1 == 3  # (0,10), (1,3) and (2,5) are open at once


def test_a_span_starting_when_another_ends_reuses_its_lane() -> None:
    assert pack_lanes([(0, 5), (5, 9), (9, 9)]) == [0, 0, 0]


def test_a_retried_task_keeps_one_lane_from_its_first_attempt_to_its_last() -> None:
    run = nightly_run()
    data = report_data(run)
    position = next(i for i, t in enumerate(run.tasks) if t.node == "validate:2")
    start, end = data["t"]["s"][position], data["t"]["e"][position]
    assert (start, end) == (1200, 2600)
    assert [row[:2] for row in dict(data["att"])[position]] == [[1200, 1500], [2000, 2600]]


def test_a_running_task_is_drawn_up_to_the_last_known_time() -> None:
    run = RunRecord(
        run_id="r",
        flow="f",
        status=RunStatus.RUNNING,
        started_at=T0,
        tasks=(_task("a:0", 0.0, 2.0), _task("b:1", 1.0, None, status=TaskStatus.RUNNING)),
    )
    assert [(t.start, t.end) for t in timings(run)] == [(0, 2000), (1000, 2000)]


# ---------- critical path ----------


def test_critical_path_follows_the_input_that_ended_last() -> None:
    tasks = [
        _task("a:0", 0, 1),
        _task("slow:1", 1, 5, "a:0"),
        _task("fast:2", 1, 2, "a:0"),
        _task("join:3", 5, 6, "slow:1", "fast:2"),
        _task("side:4", 0, 3),
    ]
    ends = [x.end for x in timings(_run(tasks))]
    assert [tasks[i].node for i in critical_path(tasks, ends)] == ["a:0", "slow:1", "join:3"]


def test_critical_path_runs_through_a_fanout_to_its_slowest_child() -> None:
    run = small_fanout_run(5)
    path = [run.tasks[i].node for i in critical_path(run.tasks, [x.end for x in timings(run)])]
    assert path == ["source:0", "double:6", "fanout:1", "total:7"]


def test_critical_path_never_ends_on_a_skipped_task() -> None:
    run = nightly_run()
    path = [run.tasks[i] for i in critical_path(run.tasks, [x.end for x in timings(run)])]
    assert all(t.status is not TaskStatus.SKIPPED for t in path)
    assert [t.node for t in path[:4]] == [
        "extract:0",
        "validate:2",
        "list_customers:3",
        path[3].node,
    ]
    assert path[3].fanout == "fanout:4"


def _run(tasks: list[TaskRecord]) -> RunRecord:
    return RunRecord(
        run_id="r",
        flow="f",
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        ended_at=T0 + 10,
        tasks=tuple(tasks),
    )


# ---------- graph grouping ----------


def test_a_fanouts_barrier_and_children_are_one_node_between_source_and_consumer() -> None:
    run = nightly_run()
    graph = graph_of(run.tasks)
    fanouts = [n for n in graph.nodes if n[0] == FANOUT_NODE]
    assert fanouts == [(FANOUT_NODE, "enrich", 4)]
    group = graph.nodes.index(fanouts[0])
    assert sum(1 for g in graph.node_of if g == group) == FANOUT + 1
    by_node = {t.node: graph.node_of[i] for i, t in enumerate(run.tasks)}
    assert (by_node["list_customers:3"], group) in graph.edges
    assert (group, by_node["aggregate:505"]) in graph.edges
    assert len(graph.nodes) == 10  # 9 tasks and the fan-out


def test_a_graph_too_big_to_draw_folds_calls_by_task_name() -> None:
    tasks = [_task(f"inc:{i}", 0, 1) for i in range(50)]
    tasks.append(_task("total:50", 1, 2, *(t.node for t in tasks)))
    graph = graph_of(tasks, max_nodes=20)
    assert graph.nodes == [(NAME_NODE, "inc", -1), (NAME_NODE, "total", -1)]
    assert graph.edges == [(0, 1)]


# ---------- writing ----------


def test_write_report_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    write_report(small_fanout_run(), target)
    first = target.read_text()
    assert write_report(nightly_run(), target) == target
    assert target.read_text() != first
    assert "nightly_etl" in _data_blob(target.read_text())
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


# ---------- in the browser ----------


def _open(browser: Browser, run: RunRecord, tmp_path: Path, name: str) -> tuple[Page, str]:
    path = write_report(run, tmp_path / f"{name}.html")
    page = browser.new_page()
    page.goto(path.as_uri())
    page.wait_for("window.__report && window.__report.ready")
    return page, path.as_uri()


def _texts(page: Page, selector: str) -> list[str]:
    query = f"[...document.querySelectorAll({json.dumps(selector)})].map(n => n.textContent)"
    texts: list[str] = page.evaluate(query)
    return texts


def test_report_opens_with_no_error_and_no_request_but_itself(
    browser: Browser, tmp_path: Path
) -> None:
    page, url = _open(browser, nightly_run(), tmp_path, "nightly")
    page.evaluate(
        "document.querySelector('#graph .node[data-label^=\"enrich\"]')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    page.evaluate("document.querySelector('#table .thead [data-key=dur]').click()")
    assert page.errors() == []
    assert page.requests() == [url]


def test_report_shows_every_node_the_failures_and_the_counts(
    browser: Browser, tmp_path: Path
) -> None:
    run = nightly_run()
    page, _ = _open(browser, run, tmp_path, "nightly")
    labels = page.evaluate(
        "[...document.querySelectorAll('#graph .node')].map(n => n.getAttribute('data-label'))"
    )
    assert sorted(labels) == sorted(
        [
            "extract",
            "load_config",
            "validate",
            "list_customers",
            f"enrich {TIMES}{FANOUT}",
            "aggregate",
            "publish",
            "quality_report",
            "notify",
            "upload_audit",
        ]
    )
    failures = page.evaluate("document.getElementById('failures').textContent")
    assert "ValueError3 calls" in failures  # the three enrich failures, as one kind
    for item in FAILED_CHILDREN:
        assert f"enrich[{item}] customer {1200 + item} has no CRM profile" in failures
    assert "PermissionError1 call" in failures
    assert "s3://audit/2024-12-06/ is read-only" in failures
    tiles = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#totals "
        "[data-status]')].map(t => [t.dataset.status, "
        "t.querySelector('.num').textContent]))"
    )
    assert tiles == {status: str(count) for status, count in run.counts().items()}


def test_screenshot_of_the_report_is_not_blank(browser: Browser, tmp_path: Path) -> None:
    page, _ = _open(browser, nightly_run(), tmp_path, "nightly")
    page.screenshot(SHOTS / "nightly.png")
    small = page.screenshot(full_page=False, scale=0.25)
    assert png_size(small) == (360, 225)
    assert png_colours(small) > 20


def test_hostile_names_render_as_text_and_run_nothing(browser: Browser, tmp_path: Path) -> None:
    page, _ = _open(browser, hostile_run(), tmp_path, "hostile")
    page.screenshot(SHOTS / "hostile.png")
    assert HOSTILE[0] in page.evaluate("document.title")
    body = page.evaluate("document.body.textContent")
    for name in HOSTILE:
        assert name in body
    assert "</script><script>alert(3)</script>" in body
    assert page.evaluate("document.querySelectorAll('img, i, b').length") == 0
    assert page.evaluate("document.scripts.length") == 3
    assert page.dialogs == []
    assert page.errors() == []


def test_table_filters_by_name_and_status_and_sorts(browser: Browser, tmp_path: Path) -> None:
    run = nightly_run()
    page, _ = _open(browser, run, tmp_path, "nightly")
    page.evaluate(
        "(() => { const i = document.getElementById('task-search');"
        " i.value = 'enrich[23'; i.dispatchEvent(new Event('input')); })()"
    )
    page.wait_for("window.__report.shownRows() === 11")  # enrich[23] and [230]..[239]
    page.evaluate("document.querySelector('.toggle[data-status=succeeded]').click()")
    assert page.evaluate("window.__report.shownRows()") == 1
    assert _texts(page, "#table .trow")[0].startswith("238enrich[233]failed")
    page.evaluate("document.querySelector('.toggle[data-status=succeeded]').click()")
    page.evaluate("document.querySelector('#table .thead [data-key=dur]').click()")
    page.evaluate("document.querySelector('#table .thead [data-key=dur]').click()")
    rows = page.evaluate(
        "[...document.querySelectorAll('#table .trow')]"
        ".sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))"
        ".map(r => r.children[4].textContent)"
    )
    longest = max(
        t.duration or 0
        for t in run.tasks
        if t.item is not None and (t.item == 23 or 230 <= t.item < 240)
    )
    assert rows[0] == f"{round(longest * 1000)} ms"
    assert page.errors() == []


def test_a_small_group_expands_on_click_and_a_big_one_lists_its_calls(
    browser: Browser, tmp_path: Path
) -> None:
    page, _ = _open(browser, small_fanout_run(5), tmp_path, "small")
    page.evaluate(
        f"document.querySelector('#graph .node[data-label=\"double {TIMES}5\"]')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    labels = page.evaluate(
        "[...document.querySelectorAll('#graph .node')].map(n => n.getAttribute('data-label'))"
    )
    assert sorted(labels) == [
        "double[0]",
        "double[1]",
        "double[2]",
        "double[3]",
        "double[4]",
        "source",
        "total",
    ]
    page, _ = _open(browser, nightly_run(), tmp_path, "nightly")
    page.evaluate(
        "document.querySelector('#graph .node[data-label^=\"enrich\"]')"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    assert len(_texts(page, "#graph .node")) == 10
    listed = _texts(page, "#graph-panel li")
    assert listed[0].startswith("enrich[17]")  # failed calls first
    assert len(listed) == 201  # 200 and a line saying how many more
    assert page.errors() == []


def test_ten_thousand_tasks_open_in_under_two_seconds(browser: Browser, tmp_path: Path) -> None:
    tasks = [_task("source:0", 0, 0.1)]
    tasks += [
        _task(
            f"work:{i}",
            0.1 + (i // 16) * 0.01,
            0.1 + (i // 16 + 1) * 0.01,
            fanout="fanout:1",
            item=i - 2,
        )
        for i in range(2, 10_002)
    ]
    tasks.insert(1, _task("fanout:1", 0.1, 6.4, "source:0", kind="fanout"))
    run = _run(tasks)
    page, _ = _open(browser, run, tmp_path, "big")
    assert page.evaluate("window.__report.readyAt") < 2000
    assert page.evaluate("window.__report.lanes") == 16
    assert page.errors() == []


def test_a_run_with_no_task_yet_opens_without_error(browser: Browser, tmp_path: Path) -> None:
    run = RunRecord(run_id="r", flow="starting", status=RunStatus.RUNNING, started_at=T0)
    page, _ = _open(browser, run, tmp_path, "empty")
    assert "no tasks yet" in page.evaluate("document.getElementById('graph').textContent")
    assert page.errors() == []


def test_a_failure_without_a_traceback_opens_without_error(
    browser: Browser, tmp_path: Path
) -> None:
    error = ErrorRecord(type="E", message="bad")
    run = _run([_task("a:0", 0, 1, status=TaskStatus.FAILED, error=error, attempts=1)])
    page, _ = _open(browser, run, tmp_path, "no-traceback")
    assert "bad" in page.evaluate("document.getElementById('failures').textContent")
    assert page.errors() == []


def test_a_live_runs_task_that_has_not_started_is_shown_waiting(
    browser: Browser, tmp_path: Path
) -> None:
    run = RunRecord(
        run_id="r",
        flow="f",
        status=RunStatus.RUNNING,
        started_at=T0,
        tasks=(
            _task("a:0", 0.0, 1.0),
            _task("b:1", 1.0, None, "a:0", status=TaskStatus.RUNNING),
            _task("c:2", None, None, "b:1", status=TaskStatus.RUNNING),
        ),
    )
    page, _ = _open(browser, run, tmp_path, "waiting")
    tiles = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#totals [data-status]')]"
        ".map(t => [t.dataset.status, t.querySelector('.num').textContent]))"
    )
    assert tiles == {"succeeded": "1", "failed": "0", "running": "1", "waiting": "1"}
    assert page.errors() == []


# ---------- flow.run(report=...) ----------


@task
def _double(x: int) -> int:
    return 2 * x


@task
def _broken(x: int) -> int:
    raise RuntimeError(f"row {x} is broken")


@flow
def _reported(n: int) -> list[int]:
    return [_double(i) for i in range(n)]


@flow
def _reported_failing() -> int:
    return _broken(_double(1))


def _report_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_data_blob(path.read_text()))
    return data


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_run_writes_the_report_of_the_run_it_just_ran(tmp_path: Path) -> None:
    target = tmp_path / "out" / "run.html"
    assert _reported.run(3, run_id="reported-1", report=target) == [0, 2, 4]
    data = _report_json(target)
    assert (data["run"]["id"], data["run"]["status"]) == ("reported-1", "succeeded")
    assert data["run"]["ended"] is True
    assert len(data["t"]["st"]) == 3


def test_a_failed_run_raises_its_error_and_still_writes_its_report(tmp_path: Path) -> None:
    target = tmp_path / "failed.html"
    with pytest.raises(TaskExecutionError, match="row 2 is broken"):
        _reported_failing.run(run_id="reported-2", report=str(target))
    data = _report_json(target)
    assert data["run"]["status"] == "failed"
    assert "row 2 is broken" in data["s"]


async def test_run_async_writes_the_report_too(tmp_path: Path) -> None:
    target = tmp_path / "async.html"
    assert await _reported.run_async(2, report=target) == [0, 2]
    assert _report_json(target)["run"]["status"] == "succeeded"


def test_a_report_that_cannot_be_written_is_one_warning_and_the_run_keeps_its_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert _reported.run(2, report=blocker / "run.html") == [0, 2]
    assert len(_warnings(caplog)) == 1
    assert "could not write its report" in _warnings(caplog)[0]


def test_a_report_that_cannot_be_written_never_hides_the_runs_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING), pytest.raises(TaskExecutionError, match="broken"):
        _reported_failing.run(report=blocker / "run.html")
    assert len(_warnings(caplog)) == 1


def test_a_run_outside_the_history_writes_no_report_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "none.html"
    with caplog.at_level(logging.WARNING):
        assert _reported.run(1, history=False, report=target) == [0]
    assert not target.exists()
    assert "was not recorded in the run history" in _warnings(caplog)[0]


def test_report_must_be_a_path() -> None:
    with pytest.raises(TypeError, match="report must be a path"):
        _reported.run(1, report=42)  # type: ignore[arg-type]

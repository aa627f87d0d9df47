"""The history commands: ``runs``, ``runs show``, ``runs delete``, ``report`` and ``ui``.

Each command but ``ui`` returns the text for stdout (a table, or JSON with ``--json``); a
run that is not found raises ``LookupError``, which the dispatcher turns into exit code 1.
Text that comes from users (flow and task names, error messages) is printed with control
characters escaped, so it stays inside its line.

``ui`` serves until Ctrl-C (then exits 0) and writes its address to stderr, since stdout
is only written once a command returns. Its server (``_history._ui``) is not public API:
the CLI is its one user.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from auto_workflow._cli._output import rich_table
from auto_workflow._history._engine import history_path
from auto_workflow._history._store import HistoryStore
from auto_workflow._history._ui import DEFAULT_PORT, UIServer, is_loopback
from auto_workflow.config import get_config
from auto_workflow.history import (
    RunRecord,
    RunStatus,
    RunSummary,
    TaskRecord,
    delete_runs,
    get_run,
    list_runs,
    write_report,
)

__all__ = ["HISTORY_COMMANDS", "add_history_commands", "cmd_ui", "one_line"]

_FAILED_FIRST = {"failed": 0, "cancelled": 1, "skipped": 2, "running": 3}


def add_history_commands(sub: Any, positive_int: Callable[[str], int]) -> None:
    """Add ``runs`` (with ``show`` / ``delete``) and ``report`` to the CLI's subparsers."""
    runs = sub.add_parser("runs", help="list recorded runs (see also: runs show, runs delete)")
    runs.add_argument("--flow", help="only runs of this flow")
    runs.add_argument("--status", choices=[s.value for s in RunStatus], help="only this status")
    runs.add_argument("--limit", type=positive_int, default=20, metavar="N", help="default 20")
    runs.add_argument("--json", action="store_true", help="JSON instead of a table")
    runs.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    inner = runs.add_subparsers(dest="runs_command", metavar="{show,delete}")
    show = inner.add_parser("show", help="one run and its tasks, failures first")
    show.add_argument("run_id", metavar="RUN_ID", help="the run's id (a unique prefix will do)")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    delete = inner.add_parser("delete", help="delete old runs and their checkpoints")
    delete.add_argument("--older-than", metavar="AGE", help="e.g. 30d, 12h, 90m")
    delete.add_argument("--keep-last", type=positive_int, metavar="N", help="newest N per flow")
    delete.add_argument("--flow", dest="delete_flow", help="only runs of this flow")
    report = sub.add_parser("report", help="write a run's self-contained HTML report")
    report.add_argument("run_id", metavar="RUN_ID", help="the run's id (a unique prefix will do)")
    report.add_argument("-o", "--output", metavar="FILE", help="default: RUN_ID.html")
    report.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    ui = sub.add_parser("ui", help="browse the run history in a web browser (read-only)")
    ui.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    ui.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ui.add_argument(
        "--token",
        help="required of every request (generated and printed when --host is not loopback)",
    )
    ui.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535; got {text!r}")
    return int(text)


def one_line(text: object) -> str:
    """``text`` with control characters (newlines, ANSI escapes) shown as escapes."""
    raw = str(text)
    if raw.isprintable():
        return raw
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


# -- runs ------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> str:
    """``runs``: a table of recent runs (or JSON), newest first."""
    sub = getattr(args, "runs_command", None)
    if sub == "show":
        return _show(args.run_id, args.json)
    if sub == "delete":
        return _delete(args)
    runs = list_runs(flow=args.flow, status=args.status, limit=args.limit)
    if args.json:
        return json.dumps([_summary_json(r) for r in runs], indent=2)
    if not runs:
        return "no recorded runs" + (f" of flow {one_line(args.flow)!r}" if args.flow else "")
    header = ["RUN ID", "FLOW", "STATUS", "STARTED", "DURATION", "OK", "FAILED", "SKIPPED"]
    rows = [_summary_row(r) for r in runs]
    return rich_table(header, rows, status=2, right=4) or _table(header, rows)


def _summary_row(run: RunSummary) -> list[str]:
    counts = run.counts
    ok = counts.get("succeeded", 0) + counts.get("cached", 0)
    return [
        run.run_id,
        one_line(run.flow),
        run.status.value,
        _when(run.started_at),
        _seconds(run.duration),
        str(ok),
        str(counts.get("failed", 0)),
        str(counts.get("skipped", 0)),
    ]


def _summary_json(run: RunSummary) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data["status"] = run.status.value
    data["duration"] = run.duration
    return data


def _show(run_id: str, as_json: bool) -> str:
    run = get_run(run_id)
    if as_json:
        return json.dumps(_record_json(run), indent=2, default=str)
    lines = [
        f"run {run.run_id}  flow {one_line(run.flow)}  {run.status.value}",
        f"started {_when(run.started_at)}  took {_seconds(run.duration)}  "
        f"host {one_line(run.host)} pid {run.pid}" + ("  durable" if run.durable else ""),
    ]
    if run.params:
        lines.append(f"params {one_line(json.dumps(run.params, default=str))}")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(run.counts().items()))
    lines.append(f"tasks: {counts or 'none'}")
    lines.append("")
    rows = [_task_row(t) for t in _failures_first(run.tasks)]
    header = ["NODE", "TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"]
    lines.append(rich_table(header, rows, status=2) or _table(header, rows))
    return "\n".join(lines)


def _failures_first(tasks: Iterable[TaskRecord]) -> list[TaskRecord]:
    chosen = [t for t in tasks if t.kind == "task"]
    return sorted(chosen, key=lambda t: (_FAILED_FIRST.get(t.status.value, 9), t.index))


def _task_row(task: TaskRecord) -> list[str]:
    error = "" if task.error is None else f"{task.error.type}: {task.error.message}"
    return [
        one_line(task.node),
        one_line(task.task),
        task.status.value,
        str(task.attempts),
        _seconds(task.duration),
        one_line(error)[:160],
    ]


def _record_json(run: RunRecord) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data["status"] = run.status.value
    data["duration"] = run.duration
    data["counts"] = run.counts()
    for task in data["tasks"]:
        task["status"] = str(task["status"])
    return data


def _delete(args: argparse.Namespace) -> str:
    if args.older_than is None and args.keep_last is None:
        raise ValueError("runs delete needs --older-than AGE (e.g. 30d) or --keep-last N")
    count = delete_runs(args.older_than, keep_last=args.keep_last, flow=args.delete_flow)
    return f"deleted {count} run(s)"


# -- report ----------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> str:
    """``report RUN_ID``: write the HTML report; prints its path."""
    return str(write_report(args.run_id, args.output))


# -- ui --------------------------------------------------------------------------------------


def cmd_ui(args: argparse.Namespace) -> int:
    """``ui``: serve the history until Ctrl-C; 0 when stopped so.

    Raises:
        ValueError: a bad host, or a port that cannot be bound (the dispatcher: exit 2).
    """
    token = args.token
    generated = token is None and not is_loopback(args.host)
    if generated:
        token = secrets.token_urlsafe(24)
    store = HistoryStore(history_path(get_config()))
    try:
        server = UIServer(store, args.host, args.port, token=token)
    except OSError as exc:
        raise ValueError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    with server:
        if generated:
            _say("binding beyond this machine needs a token: generated one (pass --token T)")
        _say(f"serving the run history {store.path} (read-only)")
        _say(f"open {server.url}   (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            _say("stopped")
    return 0


def _say(text: str) -> None:
    print(f"auto-workflow ui: {text}", file=sys.stderr, flush=True)


# -- text helpers ----------------------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


HISTORY_COMMANDS: dict[str, Callable[[argparse.Namespace], str]] = {
    "runs": cmd_runs,
    "report": cmd_report,
}

"""What the command line shows while and after a flow runs: logs, live progress, summary.

:class:`RunProgress` follows one run through its events (``auto_workflow.events``) and keeps
one :class:`TaskRecord` per node. Around it: :func:`configure_logging` (the CLI's only log
handler), :func:`log_event` (one plain line per event), :func:`live_display` (a ``rich``
live view) and the summary table, in plain text or with ``rich``.

Invariants:

* nothing happens at import: no handler is attached and ``rich`` is not imported; ``rich``
  (the optional ``cli`` extra) is imported only when a live display is wanted, and when it
  is missing the output is plain;
* everything here writes to stderr: stdout belongs to the command's result;
* untrusted text (task names, errors, results, log messages) is passed through
  :func:`safe_text` before it reaches a terminal line, so a newline, an ANSI escape or another
  control character in it is shown escaped and can neither forge a line nor move the cursor;
* events arrive on the run's event-loop thread while a live display renders from its own
  refresh thread, so a :class:`RunProgress` touches its records only under its lock and
  hands renderers immutable :class:`Snapshot` copies.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from auto_workflow.events import subscribe

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = [
    "EVENTS",
    "RunProgress",
    "Snapshot",
    "Status",
    "TaskRecord",
    "configure_logging",
    "failure_summary",
    "format_duration",
    "live_display",
    "log_event",
    "print_summary",
    "result_text",
    "rich_console",
    "rich_table",
    "safe_text",
    "stdout_to_stderr",
    "summary_rows",
    "summary_title",
]

logger = logging.getLogger("auto_workflow.cli")

EVENTS = (
    "flow_started",
    "flow_completed",
    "task_started",
    "task_retry",
    "task_cached",
    "task_succeeded",
    "task_failed",
    "task_skipped",
    "fanout_expanded",
)
"""The run events the command line follows."""

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
SUMMARY_ROWS = 100
"""Most task rows a summary shows; beyond that, unremarkable successes are counted instead."""
RUNNING_SHOWN = 6
"""Most running task ids the live display names."""
HEADERS = ("task", "status", "attempts", "duration", "cached")
"""The summary table's columns."""


# -- untrusted text --------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls, DEL, line/paragraph separators and bidirectional overrides."""
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escaped, text)


# -- logging ---------------------------------------------------------------------------------


class _SafeFormatter(logging.Formatter):
    """The CLI's line format, with the message's control characters escaped (a traceback
    appended after it keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_text(record.message)
        return super().formatMessage(record)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time, so a live display can redirect it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def configure_logging(level: str, *, enabled: bool) -> Callable[[], None]:
    """Give the ``auto_workflow`` loggers one readable one-line handler on stderr.

    Args:
        level: The level name (``"INFO"``, ``"WARNING"``, ...).
        enabled: ``False`` silences every library log line (a null handler stops Python's
            last-resort handler from printing warnings).

    Returns:
        A function that removes the handler and restores the logger.
    """
    root = logging.getLogger("auto_workflow")
    saved = (root.level, root.propagate)
    handler: logging.Handler
    if enabled:
        handler = _StderrHandler()
        handler.setFormatter(_SafeFormatter(LOG_FORMAT, LOG_DATEFMT))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # a flow module's own logging setup must not print lines twice

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        root.propagate = saved[1]

    return restore


def format_duration(ms: float | None) -> str:
    """``"12 ms"``, ``"1.25 s"`` or ``"2m03s"``; ``"-"`` for no duration."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def log_event(name: str, payload: dict[str, Any]) -> None:
    """Log one run event as one readable line on the ``auto_workflow.cli`` logger."""
    node = payload.get("node", "?")
    if name == "flow_started":
        logger.info("flow %r started (run %s)", payload.get("flow"), payload.get("run_id"))
    elif name == "flow_completed":
        took = format_duration(payload.get("duration_ms"))
        level = logging.INFO if payload.get("status") == "succeeded" else logging.ERROR
        logger.log(level, "flow %r %s in %s", payload.get("flow"), payload.get("status"), took)
    elif name == "task_started":
        logger.info("task %s started", node)
    elif name == "task_retry":
        error, attempt = payload.get("error"), payload.get("attempt")
        logger.warning("task %s attempt %s failed: %s; retrying", node, attempt, error)
    elif name == "task_succeeded":
        _log_success(node, payload)
    elif name == "task_cached":
        how = "from the cache" if payload.get("source") == "cache" else "from an identical call"
        logger.info("task %s reused a result %s", node, how)
    elif name == "task_failed":
        took = format_duration(payload.get("duration_ms"))
        logger.error("task %s failed in %s: %s", node, took, _unwrapped(payload.get("error")))
    elif name == "task_skipped":
        logger.warning("task %s skipped: upstream %s failed", node, payload.get("upstream"))
    elif name == "fanout_expanded":
        logger.info("%s expanded into %s task(s)", node, payload.get("count"))


def _unwrapped(error: object) -> str:
    """An event's ``error`` (a repr such as ``RetryExhaustedError("task 'x' failed ...")``)
    as its message, which already names the task, the attempts and the cause."""
    text = str(error)
    match = _REPR.fullmatch(text)
    return match.group(2) if match else text


_REPR = re.compile(r"""\w+\((['"])(.*)\1\)""", re.DOTALL)


def _log_success(node: str, payload: dict[str, Any]) -> None:
    if payload.get("cached"):
        return  # task_cached said so, and how
    took = format_duration(payload.get("duration_ms"))
    logger.info("task %s succeeded in %s (attempt %s)", node, took, payload.get("attempt"))


# -- run state -------------------------------------------------------------------------------


class Status(enum.StrEnum):
    """Where one task of the run stands."""

    PENDING = "not run"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class TaskRecord:
    """One node of the run as the events described it."""

    node: str
    task: str
    status: Status = Status.PENDING
    attempts: int = 0
    duration_ms: float | None = None
    cached: bool = False
    error: str | None = None
    started: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run at one moment, for a renderer."""

    flow: str
    total: int
    done: int
    cached: int
    failed: int
    skipped: int
    cancelled: int
    running: tuple[str, ...]
    elapsed: float
    finished: bool


class RunProgress:
    """Follows one run of flow ``flow_name`` through its events.

    Only the first run of that flow seen after :meth:`watch` is followed; events of other
    runs (a task that runs a flow or a task directly, say) are ignored.

    The tasks known when the run starts come with its ``flow_started`` event; tasks that
    dynamic fan-outs create are added when the fan-out expands (``fanout_expanded``), so
    the total is right before they start.

    Args:
        flow_name: The flow about to run.
        log: Also log one line per event (:func:`log_event`).
    """

    def __init__(self, flow_name: str, *, log: bool) -> None:
        self.flow_name = flow_name
        self._log = log
        self._lock = threading.Lock()
        self._records: dict[str, TaskRecord] = {}
        self._run_id: str | None = None
        self._start: float | None = None
        self._end: float | None = None
        self._status: str | None = None

    @property
    def started(self) -> bool:
        """Whether the run's ``flow_started`` event has arrived (its graph was built)."""
        return self._start is not None

    @property
    def status(self) -> str | None:
        """How the run ended, as its ``flow_completed`` event says (``None``: not yet).

        ``"succeeded"`` with failed tasks is a run whose failures were all handled:
        elements of ``fan_out(..., return_exceptions=True)``.
        """
        return self._status

    @contextlib.contextmanager
    def watch(self) -> Iterator[RunProgress]:
        """Subscribe to the run events for the duration of the ``with`` block."""
        unsubscribers = [subscribe(name, self._on_event) for name in EVENTS]
        try:
            yield self
        finally:
            for unsubscribe in unsubscribers:
                unsubscribe()

    def _on_event(self, name: str, payload: dict[str, Any]) -> None:
        with self._lock:
            if not self._accept(name, payload):
                return
            self._apply(name, payload)
        if self._log:
            log_event(name, payload)

    def _accept(self, name: str, payload: dict[str, Any]) -> bool:
        if self._run_id is None and name == "flow_started":
            if payload.get("flow") != self.flow_name:
                return False
            self._run_id = payload.get("run_id")
        return self._run_id is not None and payload.get("run_id") == self._run_id

    def _apply(self, name: str, payload: dict[str, Any]) -> None:
        if name == "flow_started":
            self._start = time.perf_counter()
            for node, task in payload.get("nodes", ()):
                self._records.setdefault(node, TaskRecord(node, task))
            return
        if name == "flow_completed":
            self._end = time.perf_counter()
            self._status = payload.get("status")
            return
        if name == "fanout_expanded":
            for node, task in payload.get("nodes", ()):
                self._records.setdefault(node, TaskRecord(node, task))
            return
        node = str(payload.get("node"))
        record = self._records.get(node)
        if record is None:
            record = self._records[node] = TaskRecord(node, str(payload.get("task")))
        _update(record, name, payload)

    def snapshot(self) -> Snapshot:
        """Counts, running tasks and elapsed time, now."""
        with self._lock:
            records = list(self._records.values())
            start, end = self._start, self._end
        now = time.perf_counter() if end is None else end
        elapsed = 0.0 if start is None else now - start
        statuses = [r.status for r in records]
        return Snapshot(
            flow=self.flow_name,
            total=len(records),
            done=statuses.count(Status.SUCCEEDED) + statuses.count(Status.CACHED),
            cached=statuses.count(Status.CACHED),
            failed=statuses.count(Status.FAILED),
            skipped=statuses.count(Status.SKIPPED),
            cancelled=statuses.count(Status.CANCELLED),
            running=tuple(r.node for r in records if r.status is Status.RUNNING),
            elapsed=elapsed,
            finished=end is not None,
        )

    def finish(self) -> list[TaskRecord]:
        """End the run's bookkeeping: tasks still running were cancelled. Returns copies."""
        with self._lock:
            if self._start is not None and self._end is None:
                self._end = time.perf_counter()
            for record in self._records.values():
                if record.status is Status.RUNNING:
                    record.status = Status.CANCELLED
            records = [replace(r) for r in self._records.values()]
        return sorted(records, key=_build_order)


def _build_order(record: TaskRecord) -> int:
    """A node id ends in its build index (``clean:12``): tasks in the order they were built."""
    index = record.node.rpartition(":")[2]
    return int(index) if index.isdigit() else sys.maxsize


def _update(record: TaskRecord, name: str, payload: dict[str, Any]) -> None:
    """Apply one task event to its record."""
    attempt = payload.get("attempt")
    if name == "task_started":
        record.status, record.started = Status.RUNNING, time.perf_counter()
        record.attempts = max(record.attempts, 1)
    elif name == "task_retry" and isinstance(attempt, int):
        record.attempts = attempt + 1
    elif name == "task_cached":
        record.cached = True
    elif name == "task_succeeded":
        record.cached = record.cached or bool(payload.get("cached"))
        record.status = Status.CACHED if record.cached else Status.SUCCEEDED
        record.attempts = attempt if isinstance(attempt, int) else record.attempts
        record.duration_ms = payload.get("duration_ms")
    elif name == "task_failed":
        record.status, record.error = Status.FAILED, payload.get("error")
        record.attempts = attempt if isinstance(attempt, int) else record.attempts
        record.duration_ms = payload.get("duration_ms")
    elif name == "task_skipped":
        record.status, record.error = Status.SKIPPED, payload.get("error")


# -- output redirection ----------------------------------------------------------------------


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout inside the block to stderr instead.

    Both ``sys.stdout`` and, where there is one, file descriptor 1 are redirected, so prints
    from thread tasks and from process workers started meanwhile stay off the result.
    """
    sys.stdout.flush()
    saved = _redirect_fd()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved[1], saved[0])
            os.close(saved[1])


def _redirect_fd() -> tuple[int, int] | None:
    """Point stdout's descriptor at stderr's; ``(stdout fd, saved copy)`` or None."""
    try:
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor
        return None
    saved = os.dup(out)
    os.dup2(err, out)
    return out, saved


# -- summary ---------------------------------------------------------------------------------


def summary_title(snap: Snapshot, outcome: str) -> str:
    """One line: the flow, how it ended and the counts."""
    not_run = snap.total - snap.done - snap.failed - snap.skipped - snap.cancelled
    counts = (
        f"{snap.total} task(s): {snap.done} done ({snap.cached} cached), "
        f"{snap.failed} failed, {snap.skipped} skipped"
    )
    if snap.cancelled:
        counts += f", {snap.cancelled} cancelled"
    if not_run:
        counts += f", {not_run} not run"
    return f"flow {snap.flow!r} {outcome} in {format_duration(snap.elapsed * 1000)}: {counts}"


_SHOW_FIRST = {
    Status.FAILED: 0,
    Status.CANCELLED: 1,
    Status.RUNNING: 1,
    Status.SKIPPED: 2,
    Status.PENDING: 3,
    Status.CACHED: 4,
    Status.SUCCEEDED: 5,
}
"""Which rows a long summary keeps: failures first, plain successes last."""


def summary_rows(
    records: list[TaskRecord], limit: int = SUMMARY_ROWS
) -> tuple[list[list[str]], dict[str, int]]:
    """At most ``limit`` rows (in build order), and how many of each status were left out.

    Failures are shown first, then cancelled, skipped, not run, cached and succeeded tasks,
    so in a run of thousands the one failure that matters is never buried.
    """
    shown = records
    if len(records) > limit:
        order = sorted(range(len(records)), key=lambda i: (_SHOW_FIRST[records[i].status], i))
        shown = [records[i] for i in sorted(order[:limit])]
    left_out = Counter(str(r.status) for r in records)
    left_out.subtract(str(r.status) for r in shown)
    rows = [
        [
            safe_text(r.node),
            str(r.status),
            str(r.attempts),
            format_duration(r.duration_ms),
            _yes(r.cached),
        ]
        for r in shown
    ]
    return rows, {status: n for status, n in left_out.items() if n > 0}


def _left_out_line(left_out: dict[str, int]) -> str:
    parts = ", ".join(f"{n} {status}" for status, n in left_out.items())
    return f"... and {sum(left_out.values())} more task(s): {parts}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def print_summary(
    title: str, records: list[TaskRecord], console: Console | None, stream: TextIO
) -> None:
    """Print the summary table: with ``rich`` on ``console``, else as plain text on ``stream``."""
    rows, left_out = summary_rows(records)
    title = safe_text(title)
    if console is not None:
        _print_rich_summary(console, title, rows, left_out)
        return
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(HEADERS)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    if left_out:
        lines.append(_left_out_line(left_out))
    print("\n".join(line.rstrip() for line in lines), file=stream, flush=True)


_STYLES = {
    "succeeded": "green",
    "cached": "cyan",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "magenta",
    "not run": "dim",
}


def _print_rich_summary(
    console: Console, title: str, rows: list[list[str]], left_out: dict[str, int]
) -> None:
    from rich.markup import escape  # optional extra (auto-workflow[cli])
    from rich.table import Table

    table = Table()
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("attempts", "duration") else "left")
    for row in rows:
        status = row[1]
        table.add_row(escape(row[0]), f"[{_STYLES.get(status, '')}]{status}[/]", *row[2:])
    if left_out:
        table.caption = _left_out_line(left_out)
    console.print(escape(title), style="bold", highlight=False)
    console.print(table)


def rich_table(
    header: list[str], rows: list[list[str]], *, status: int | None = None, right: int = 0
) -> str | None:
    """``rows`` as a ``rich`` table for stdout, or ``None`` when rich is not installed or
    stdout is not an interactive terminal (scripts reading the output get the plain table).

    Cells are shown as plain text (a ``[`` in a flow name is not markup); column ``status``
    is coloured by its value; the last ``right`` columns (counts, durations) align right.
    """
    try:
        from rich.console import Console  # optional extra (auto-workflow[cli])
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        return None
    console = Console()
    if not console.is_interactive:
        return None
    table = Table(box=_rich_box(), header_style="bold", show_edge=False, pad_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= len(header) - right else "left")
    for row in rows:
        cells = [Text(cell) for cell in row]
        if status is not None:
            cells[status].stylize(_STYLES.get(row[status], ""))
        table.add_row(*cells)
    with console.capture() as captured:
        console.print(table)
    return captured.get().rstrip("\n")


def _rich_box() -> Any:
    from rich import box  # optional extra (auto-workflow[cli])

    return box.SIMPLE_HEAD


# -- live display ----------------------------------------------------------------------------


def rich_console() -> Console | None:
    """A ``rich`` console on stderr if stderr is an interactive terminal and rich is installed.

    ``rich`` decides what "interactive terminal" means, so its environment switches
    (``TTY_INTERACTIVE``, ``TTY_COMPATIBLE``, ``FORCE_COLOR``, ``TERM=dumb``) apply.
    """
    try:
        from rich.console import Console  # optional extra (auto-workflow[cli])
    except ImportError:
        return None
    console = Console(stderr=True)
    return console if console.is_interactive else None


class _LiveView:
    """The live display's renderable: re-rendered from a fresh snapshot on every refresh."""

    def __init__(self, progress: RunProgress) -> None:
        self._progress = progress

    def __rich__(self) -> RenderableType:
        from rich.console import Group  # optional extra (auto-workflow[cli])
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        snap = self._progress.snapshot()
        ended = snap.done + snap.failed + snap.skipped
        head = Text.assemble(
            ("flow ", "bold"),
            (safe_text(snap.flow), "bold cyan"),
            f"  {format_duration(snap.elapsed * 1000)}  ",
            (f"done {snap.done}", "green"),
            f" · running {len(snap.running)} · ",
            (f"failed {snap.failed}", "red" if snap.failed else ""),
            f" · skipped {snap.skipped} · total {snap.total}",
        )
        bar = ProgressBar(total=max(snap.total, 1), completed=ended, width=50)
        return Group(head, bar, Text(safe_text(_running_line(snap.running)), style="dim"))


def _running_line(running: tuple[str, ...]) -> str:
    if not running:
        return "running: -"
    names = ", ".join(running[:RUNNING_SHOWN])
    more = len(running) - RUNNING_SHOWN
    return f"running: {names}" + (f" (+{more} more)" if more > 0 else "")


@contextlib.contextmanager
def live_display(progress: RunProgress, console: Console | None) -> Iterator[None]:
    """Show a live progress view on ``console`` during the block (nothing if it is None).

    Writes to ``sys.stdout`` / ``sys.stderr`` meanwhile (prints, log lines) appear above
    the view instead of tearing it.
    """
    if console is None:
        yield
        return
    from rich.live import Live  # optional extra (auto-workflow[cli])

    view = _LiveView(progress)
    with Live(view, console=console, refresh_per_second=8, transient=True):
        yield


# -- results and failures --------------------------------------------------------------------

RESULT_MAX_CHARS = 100_000
"""Longest result text printed; a longer one is replaced by a marked placeholder."""
FAILURE_LINES = 20
"""Most distinct failures a failure summary lists; the rest are counted."""
NODES_SHOWN = 3
"""Node ids named per distinct failure."""
FAILURE_TEXT_CHARS = 300
"""Longest error text in a failure summary line."""


def _size(value: object) -> str:
    """``", 12 characters"`` / ``", 3 items"`` / ``", 4,000 bits"``, or ``""``."""
    if isinstance(value, str):
        return f", {len(value):,} characters"
    if isinstance(value, bytes | bytearray):
        return f", {len(value):,} bytes"
    if isinstance(value, int) and not isinstance(value, bool):
        return f", {value.bit_length():,} bits"
    try:
        return f", {len(value):,} items"  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - no usable len(): no size shown
        return ""


def _placeholder(value: object, why: str) -> str:
    kind = type(value)
    size = _size(value)
    return f"<result not shown: {kind.__module__}.{kind.__qualname__}{size}; {why}>"


def _bounded_repr(value: object) -> str:
    """``repr(value)``, escaped, or a marked placeholder when it raises or is too long."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - the user's __repr__, or an int too large
        return _placeholder(
            value, f"its repr raised {type(exc).__name__}: {safe_text(str(exc))[:200]}"
        )
    if len(text) > RESULT_MAX_CHARS:
        return _placeholder(value, f"its repr is {len(text):,} characters long")
    return safe_text(text)


def result_text(
    result: object, *, as_json: bool, default: Callable[[object], object]
) -> tuple[str, str | None]:
    """The text a run prints for ``result``, and a note for stderr (or ``None``).

    JSON when it can be (``default`` converts errors), else the result's ``repr``; either
    one bounded to :data:`RESULT_MAX_CHARS`: a longer or unprintable result is a marked
    placeholder naming its type and size. With ``as_json`` the text is always JSON: a result
    that is not JSON becomes ``{"not_json": true, "type": ..., "repr": ...}`` and the note
    says so.
    """
    try:
        text = json.dumps(result, indent=2, allow_nan=False, default=default)
    except (TypeError, ValueError, RecursionError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    else:
        if len(text) <= RESULT_MAX_CHARS:
            return text, None
        placeholder = _placeholder(result, f"it is {len(text):,} characters as JSON")
        return (json.dumps(placeholder) if as_json else placeholder), None
    shown = _bounded_repr(result)
    if not as_json:
        return shown, None
    kind = type(result)
    wrapped = {"not_json": True, "type": f"{kind.__module__}.{kind.__qualname__}", "repr": shown}
    note = f'the result is not JSON ({safe_text(why)[:200]}); printed as {{"not_json": true, ...}}'
    return json.dumps(wrapped, indent=2), note


def failure_summary(headline: str, groups: list[tuple[str, list[str]]], skipped: int) -> str:
    """The lines that end a failed run: one per distinct failure, at most :data:`FAILURE_LINES`.

    Args:
        headline: ``flow 'x' failed``.
        groups: ``(error text, node ids)`` per distinct failure, in the order they happened.
        skipped: How many downstream tasks were skipped.
    """
    failed = sum(max(1, len(nodes)) for _, nodes in groups)
    tail = f"; {skipped} downstream task(s) skipped" if skipped else ""
    if not groups:
        return safe_text(f"{headline}: tasks were skipped{tail}")
    if failed == 1:
        return safe_text(f"{headline}: {groups[0][0]}{tail}")
    ways = f", {len(groups)} distinct failures" if len(groups) > 1 else ", all the same way"
    lines = [safe_text(f"{headline}: {failed} tasks failed{ways}{tail}")]
    for text, nodes in groups[:FAILURE_LINES]:
        lines.append("  " + safe_text(_failure_line(text, nodes)))
    if len(groups) > FAILURE_LINES:
        rest = groups[FAILURE_LINES:]
        tasks = sum(max(1, len(nodes)) for _, nodes in rest)
        lines.append(f"  and {len(rest)} more distinct failure(s) ({tasks} task(s))")
    return "\n".join(lines)


def _failure_line(text: str, nodes: list[str]) -> str:
    if len(text) > FAILURE_TEXT_CHARS:
        text = text[: FAILURE_TEXT_CHARS - 1] + "…"
    if not nodes:
        return text
    shown = ", ".join(nodes[:NODES_SHOWN]) + (", ..." if len(nodes) > NODES_SHOWN else "")
    return f"{len(nodes)} x {text} [{shown}]"

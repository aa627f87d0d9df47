"""The ``auto-workflow`` command line (also ``python -m auto_workflow``).

Commands::

    run TARGET [--params JSON] [--arg NAME=VALUE]... [--failure-policy P]
               [--max-concurrency N] [--executor local|dask] [--dask-address ADDR]
               [--run-id ID] [--durable] [--no-progress] [--structured-logs] [--verbose]
    resume RUN_ID [--max-concurrency N]
    runs [--flow F] [--status S] [--limit N] [--json] | runs show RUN_ID | runs delete
    report RUN_ID [-o FILE]
    ui [--host 127.0.0.1] [--port 8765] [--token T]
    describe TARGET [--params JSON] [--arg NAME=VALUE]...
    graph TARGET [--format dot|json|mermaid] [--params JSON] [--arg NAME=VALUE]...
    list MODULE_OR_FILE

TARGET is ``package.module:flow`` (imported with the working directory on ``sys.path``, as
``python -m`` would) or ``path/to/file.py:flow`` (loaded from that file, with the file's
directory on ``sys.path`` so sibling imports work). See docs/cli.md.

Invariants:

* public API only (``auto_workflow``, ``.events``, ``.config``, ``.exceptions``), plus the
  CLI's own ``_cli_output``; ``rich`` (optional) is imported there, lazily;
* stdout carries only the command's result (JSON, DOT, Mermaid, the flow list), so it can
  be piped; progress, logs, the summary and errors go to stderr, and so does anything the
  flow itself prints while it runs;
* exit codes: 0 success, 1 the flow failed (also when tasks failed under
  ``--failure-policy continue``), 2 bad usage or configuration, 130 interrupted;
* bad input never shows a traceback, a failing flow only with ``--verbose``;
* nothing happens at import: logging is configured inside :func:`main` and undone before
  it returns.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import auto_workflow
from auto_workflow import FailurePolicy, Flow, TaskDefinition
from auto_workflow._cli._output import (
    RunProgress,
    Status,
    TaskRecord,
    configure_logging,
    failure_summary,
    live_display,
    print_summary,
    result_text,
    rich_console,
    safe_text,
    stdout_to_stderr,
    summary_title,
)
from auto_workflow._cli._runs import HISTORY_COMMANDS, add_history_commands, cmd_ui
from auto_workflow.config import get_config
from auto_workflow.exceptions import (
    AggregateTaskError,
    TaskExecutionError,
    UpstreamFailedError,
)
from auto_workflow.logging import enable_structured_logging

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DISABLE_LOGS_ENV = "AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS"
_TRUE = frozenset({"1", "true", "yes", "on"})
_RESERVED = frozenset(
    {"params", "failure_policy", "max_concurrency", "result_cache", "artifact_store", "executor"}
)
"""Keyword names ``Flow.run`` keeps for itself: no flow argument can be passed under them."""
_FORMATS = ("dot", "json", "mermaid")
_TRACEBACK_HINT = " (run with --verbose for the traceback)"

T = TypeVar("T")


class UsageError(Exception):
    """Bad input: shown as ``auto-workflow: error: <message>``, exit code 2.

    When the input was the user's own code failing (a module that does not import), the
    exception is chained as ``__cause__`` and ``--verbose`` shows its traceback.
    """


class _FlowFailed(Exception):
    """The flow failed (exit code 1): a one-paragraph message and the errors behind it."""

    def __init__(self, message: str, errors: Sequence[BaseException]) -> None:
        super().__init__(message)
        self.errors = list(errors)


# -- arguments -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'must be a JSON object such as \'{{"day": "2026-01-31"}}\'; got {_json_kind(value)}'
        )
    return value


def _name_value(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: VALUE is read as JSON, and taken as a plain string if it is not JSON."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME a parameter name; got {text!r}"
        )
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auto-workflow",
        description="Run, describe and draw auto_workflow flows.",
        epilog="Exit codes: 0 ok, 1 the flow failed, 2 bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=auto_workflow.__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target = _target_arguments()
    run = sub.add_parser("run", parents=[target], help="run a flow and print its result")
    run.add_argument(
        "--failure-policy",
        choices=[p.value for p in FailurePolicy],
        default=FailurePolicy.FAIL_FAST.value,
        help="what a task failure does (default: fail_fast)",
    )
    run.add_argument(
        "--max-concurrency", type=_positive_int, metavar="N", help="most tasks running at once"
    )
    run.add_argument(
        "--no-progress", action="store_true", help="plain log lines even on a terminal"
    )
    run.add_argument(
        "--executor",
        choices=("local", "dask"),
        help="where tasks run (default: the config key executor, else local)",
    )
    run.add_argument(
        "--dask-address",
        metavar="ADDR",
        help="the Dask scheduler to run on (implies --executor dask; default: config "
        "dask_address, else an embedded LocalCluster)",
    )
    run.add_argument("--run-id", metavar="ID", help="name this run (unique per flow)")
    run.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON only; a result that is not JSON is printed as "
        '{"not_json": true, "type": ..., "repr": ...} with a note on stderr',
    )
    run.add_argument(
        "--durable", action="store_true", help="checkpoint every task so the run can be resumed"
    )
    resume = sub.add_parser("resume", help="resume a durable run that did not finish")
    resume.add_argument("run_id", metavar="RUN_ID", help="the run's id (a unique prefix will do)")
    resume.add_argument(
        "--max-concurrency", type=_positive_int, metavar="N", help="most tasks running at once"
    )
    resume.add_argument(
        "--no-progress", action="store_true", help="plain log lines even on a terminal"
    )
    resume.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    add_history_commands(sub, _positive_int)
    run.add_argument(
        "--structured-logs",
        action="store_true",
        help="log one JSON object per line per task outcome on stderr (no progress display)",
    )
    sub.add_parser("describe", parents=[target], help="print a flow's graph as JSON")
    graph = sub.add_parser("graph", parents=[target], help="export a flow's graph")
    graph.add_argument("--format", choices=_FORMATS, default="dot", help="default: dot")
    listing = sub.add_parser("list", help="list the flows of a module or file")
    listing.add_argument("source", metavar="MODULE_OR_FILE", help="package.module or file.py")
    listing.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    return parser


def _target_arguments() -> argparse.ArgumentParser:
    """The arguments shared by run, describe and graph."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("target", metavar="TARGET", help="package.module:flow or file.py:flow")
    common.add_argument(
        "--params", type=_json_object, metavar="JSON", help="run parameters (get_context().params)"
    )
    common.add_argument(
        "--arg",
        dest="flow_args",
        action="append",
        type=_name_value,
        default=[],
        metavar="NAME=VALUE",
        help="an argument of the flow function (VALUE is JSON, else a string); repeatable",
    )
    common.add_argument("--verbose", "-v", action="store_true", help="show tracebacks")
    return common


# -- loading flows ---------------------------------------------------------------------------


def _is_file(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source


def _load_source(source: str) -> ModuleType:
    """The module named by ``source``: a ``package.module`` name or a ``.py`` path."""
    return _load_file(Path(source)) if _is_file(source) else _import_module(source)


def _import_module(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(f"{name!r} is neither a module name (package.module) nor a .py file")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` does; the console script would not
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {name!r} (searched the working directory and sys.path)"
            ) from None
        raise UsageError(f"cannot import {name!r}: {_exc_text(exc)}") from exc
    except Exception as exc:  # the user's module failed: report it as input error
        raise UsageError(f"cannot import {name!r}: {_exc_text(exc)}") from exc
    except (SystemExit, KeyboardInterrupt) as exc:  # never "success, nothing ran"
        raise UsageError(f"cannot import {name!r}: {_exit_text(exc)}") from exc


def _load_file(path: Path) -> ModuleType:
    if not path.exists():
        raise UsageError(f"file not found: {str(path)!r}")
    if not path.is_file() or path.suffix != ".py":
        raise UsageError(f"{str(path)!r} is not a Python file (.py)")
    resolved = path.resolve()
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__file__", None) == str(resolved):
            return existing
        raise UsageError(
            f"cannot load {str(path)!r} as module {name!r}: a module of that name is already "
            "imported; rename the file"
        )
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # sibling imports, and process workers import it by name
    return _exec_file(name, resolved, str(path))


def _exec_file(name: str, path: Path, shown: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {shown!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered like an import, so pickling by reference works
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed: report it as input error
        del sys.modules[name]
        raise UsageError(f"cannot import {shown!r}: {_exc_text(exc)}") from exc
    except (SystemExit, KeyboardInterrupt) as exc:  # never "success, nothing ran"
        del sys.modules[name]
        raise UsageError(f"cannot import {shown!r}: {_exit_text(exc)}") from exc
    return module


def _exit_text(exc: SystemExit | KeyboardInterrupt) -> str:
    """What a module that tried to end the program while being imported did."""
    if isinstance(exc, KeyboardInterrupt):
        return "it raised KeyboardInterrupt while being imported"
    return (
        f"it called sys.exit({exc.code!r}) (raised SystemExit) while being imported; a flow "
        "module must not end the program at import (put script code under "
        '`if __name__ == "__main__":`)'
    )


def _flows_in(module: ModuleType) -> dict[str, Flow[Any]]:
    """The module's ``@flow`` objects by attribute name, in definition order."""
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, Flow)}


def _load_flow(target: str) -> Flow[Any]:
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        raise UsageError(
            f"target {target!r} must look like package.module:flow or path/to/file.py:flow"
        )
    module = _load_source(source)
    found = getattr(module, attr, None) if attr.isidentifier() else None
    if isinstance(found, Flow):
        return found
    flows = _flows_in(module)
    by_name = [f for f in flows.values() if f.name == attr]  # @flow(name="...") works too
    if found is None and len(by_name) == 1:
        return by_name[0]
    available = f"flows there: {', '.join(flows)}" if flows else f"{source!r} defines no @flow"
    if found is None:
        raise UsageError(f"{source!r} has no flow named {attr!r}; {available}")
    kind = (
        "a @task"
        if isinstance(found, TaskDefinition)
        else f"an object of type {type(found).__name__!r}"
    )
    raise UsageError(f"{target!r} is {kind}, not a @flow; {available}")


def _flow_kwargs(flow_obj: Flow[Any], pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The ``--arg`` values as keyword arguments, checked against the flow's signature."""
    kwargs: dict[str, Any] = {}
    for name, value in pairs:
        if name in kwargs:
            raise UsageError(f"--arg {name} is given twice")
        if name in _RESERVED:
            raise UsageError(
                f"--arg {name}: Flow.run() reserves the name {name!r}; rename the parameter"
            )
        kwargs[name] = value
    try:
        signature = inspect.signature(flow_obj.fn)
    except (TypeError, ValueError):  # no signature to check against; the call will tell
        return kwargs
    _check_arguments(flow_obj.name, signature, kwargs)
    return kwargs


def _check_arguments(flow: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> None:
    params = signature.parameters.values()
    listing = ", ".join(str(p.replace(annotation=p.empty)) for p in params) or "none"
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = [repr(name) for name in kwargs if name not in named]
        if unknown:
            raise UsageError(
                f"flow {flow!r} has no parameter {', '.join(unknown)}; its parameters: {listing}"
            )
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in kwargs
    ]
    if missing:
        how = " ".join(f"--arg {name}=VALUE" for name in missing)
        raise UsageError(
            f"flow {flow!r} needs {', '.join(map(repr, missing))}: pass {how}; "
            f"its parameters: {listing}"
        )


def _flow_and_kwargs(args: argparse.Namespace) -> tuple[Flow[Any], dict[str, Any]]:
    flow_obj = _load_flow(args.target)
    return flow_obj, _flow_kwargs(flow_obj, args.flow_args)


def _build(flow_obj: Flow[Any], step: Callable[[], T]) -> T:
    """Run ``step`` (which builds the flow's graph); a failing flow body is exit code 1."""
    try:
        return step()
    except Exception as exc:  # the user's flow body failed, whatever it raised
        raise _FlowFailed(_not_built(flow_obj, exc), [exc]) from exc


def _not_built(flow_obj: Flow[Any], exc: Exception) -> str:
    return f"flow {flow_obj.name!r} could not be built: {_exc_text(exc)}"


# -- failures --------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, TaskExecutionError):
        return _one_line(str(exc))
    return _one_line(f"{type(exc).__name__}: {exc}")


def _with_node(text: str, task: str, node: str) -> str:
    """``task 'load' failed ...`` -> ``task 'load' (load:3) failed ...``."""
    prefix = f"task {task!r}"
    if text.startswith(prefix):
        return f"{prefix} ({node}){text[len(prefix) :]}"
    return f"{prefix} ({node}): {text}"


def _failure_groups(
    errors: Sequence[BaseException], records: list[TaskRecord]
) -> list[tuple[str, list[str]]]:
    """``(error text, node ids)`` per distinct failure, in the order the tasks failed.

    Events carry an error's ``repr``, so records and errors are paired by that text; equal
    texts (one task failing the same way twice) pair off one by one. Errors no task event
    reported come last, with no node.
    """
    unpaired: dict[str, list[BaseException]] = {}
    for err in errors:
        unpaired.setdefault(repr(err), []).append(err)
    groups: dict[str, list[str]] = {}
    for record in records:
        if record.status is not Status.FAILED:
            continue
        same = unpaired.get(record.error or "")
        if same:
            text = _exc_text(same.pop(0))
        else:
            text = f"task {record.task!r} failed: {_one_line(str(record.error))}"
        groups.setdefault(text, []).append(record.node)
    for rest in unpaired.values():
        for err in rest:
            groups.setdefault(_exc_text(err), [])
    return list(groups.items())


def _paragraph(
    flow: str, outcome: str, errors: Sequence[BaseException], records: list[TaskRecord]
) -> str:
    groups = _failure_groups(errors, records)
    if len(groups) == 1 and len(groups[0][1]) == 1:  # one failed task: name its node inline
        task = next(r.task for r in records if r.node == groups[0][1][0])
        groups = [(_with_node(groups[0][0], task, groups[0][1][0]), [])]
    skipped = sum(r.status is Status.SKIPPED for r in records)
    return failure_summary(f"flow {flow!r} {outcome}", groups, skipped)


def _task_errors(exc: BaseException) -> list[BaseException]:
    return list(exc.errors) if isinstance(exc, AggregateTaskError) else [exc]


def _errors_in(value: Any) -> tuple[list[TaskExecutionError], bool]:
    """Task failures held in a ``continue`` result, and whether it holds any error at all.

    A skipped position's :class:`UpstreamFailedError` leads to the failure that caused it.
    """
    found: dict[int, TaskExecutionError] = {}
    any_error = False
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, UpstreamFailedError):
            any_error = True
            stack.append(item.original)
        elif isinstance(item, TaskExecutionError):
            any_error = True
            found.setdefault(id(item), item)
        elif isinstance(item, list | tuple | set | frozenset | dict) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(reversed(list(item.values() if isinstance(item, dict) else item)))
    return list(found.values()), any_error


# -- commands --------------------------------------------------------------------------------


_results: ContextVar[list[str] | None] = ContextVar("auto_workflow_cli_results", default=None)


def _emit(text: str) -> None:
    """Hand a command's result to :func:`main`, which alone writes to stdout."""
    results = _results.get()
    assert results is not None, "commands run only inside main(), which collects results"
    results.append(text if text.endswith("\n") else text + "\n")


def _run_quietly(args: argparse.Namespace) -> int:
    """Dispatch with stdout sent to stderr: whatever the user's modules, flow bodies or
    tasks print while loading, building or running never mixes with the result.
    Results are written to the real stdout afterwards."""
    results: list[str] = []
    token = _results.set(results)
    try:
        with stdout_to_stderr():
            return _dispatch(args)
    finally:
        _results.reset(token)
        sys.stdout.writelines(results)
        sys.stdout.flush()


def _error_as_json(value: object) -> object:
    if isinstance(value, BaseException):
        return {"error": _one_line(str(value)), "type": type(value).__name__}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _result_text(result: Any, as_json: bool = False) -> str:
    """The result as JSON when it can be, else its ``repr``; bounded and escaped (see
    :func:`~auto_workflow._cli._output.result_text`)."""
    text, note = result_text(result, as_json=as_json, default=_error_as_json)
    if note is not None:
        _note(note)
    return text


def _cmd_run(args: argparse.Namespace) -> int:
    flow_obj, kwargs = _flow_and_kwargs(args)
    flow_obj.target = _stable_target(args.target)
    durable = True if args.durable else None

    def call() -> Any:
        return flow_obj.run(
            params=args.params,
            failure_policy=args.failure_policy,
            max_concurrency=args.max_concurrency,
            run_id=args.run_id,
            durable=durable,
            executor=_executor(args),
            **kwargs,
        )

    return _watch(flow_obj, args, call)


def _cmd_resume(args: argparse.Namespace) -> int:
    """``resume RUN_ID``: load the recorded run's flow from its target and resume it."""
    record = _recorded_run(args.run_id)
    if not record.target:
        raise UsageError(
            f"run {record.run_id} of flow {record.flow!r} did not record where its flow "
            "lives; resume it from Python with flow.resume(run_id)"
        )
    flow_obj = _load_flow(record.target)
    flow_obj.target = record.target
    overrides = {} if args.max_concurrency is None else {"max_concurrency": args.max_concurrency}
    return _watch(flow_obj, args, lambda: flow_obj.resume(record.run_id, **overrides))


def _recorded_run(run_id: str) -> Any:
    from auto_workflow.history import get_run  # a face above the CLI's own imports

    try:
        return get_run(run_id)
    except LookupError as exc:
        raise _FlowFailed(f"auto-workflow: {exc}", []) from exc


def _stable_target(target: str) -> str:
    """The target as a later ``resume`` can load it: a file path made absolute."""
    source, _, attr = target.rpartition(":")
    if _is_file(source):
        return f"{Path(source).resolve()}:{attr}"
    return target


def _watch(flow_obj: Flow[Any], args: argparse.Namespace, call: Callable[[], Any]) -> int:
    """Run ``call`` (a run of ``flow_obj``) with live progress, a summary and exit codes."""
    structured: bool = getattr(args, "structured_logs", False)
    console = None if args.no_progress or structured else rich_console()
    progress = RunProgress(flow_obj.name, log=console is None and not structured)
    try:
        with progress.watch(), live_display(progress, console):
            result = call()
    except KeyboardInterrupt:
        _summarise(progress, console, "was interrupted")
        raise
    except Exception as exc:  # a failing flow, whatever it raised, is exit 1
        if not progress.started:  # the flow body raised while the graph was being built
            raise _FlowFailed(_not_built(flow_obj, exc), [exc]) from exc
        records = _summarise(progress, console, "failed")
        errors = _task_errors(exc)
        raise _FlowFailed(_paragraph(flow_obj.name, "failed", errors, records), errors) from exc
    return _finish_run(flow_obj, progress, console, result, getattr(args, "json", False))


def _executor(args: argparse.Namespace) -> Any:
    """What ``--executor`` and ``--dask-address`` ask for (``None``: the configured one)."""
    if args.dask_address is None:
        return args.executor
    if args.executor == "local":
        raise UsageError("--dask-address runs on Dask; it cannot go with --executor local")
    from auto_workflow.dask import DaskExecutor  # imports no cluster library until a run

    return DaskExecutor(address=args.dask_address)


def _finish_run(
    flow_obj: Flow[Any], progress: RunProgress, console: Any, result: Any, as_json: bool
) -> int:
    """After a run that returned: summary, result, and exit 1 if tasks failed (continue)."""
    errors, any_error = _errors_in(result)
    if progress.status is not None:  # the run's own word: handled failures do not count
        failed = progress.status != "succeeded"
    else:
        failed = any_error or progress.snapshot().failed > 0
    records = _summarise(progress, console, "finished with failures" if failed else "succeeded")
    _emit(_result_text(result, as_json))
    if not failed:
        return EXIT_OK
    outcome = "finished with failures (failure_policy=continue)"
    raise _FlowFailed(_paragraph(flow_obj.name, outcome, errors, records), errors)


def _summarise(progress: RunProgress, console: Any, outcome: str) -> list[TaskRecord]:
    records = progress.finish()
    title = summary_title(progress.snapshot(), outcome)
    print_summary(title, records, console, sys.stderr)
    return records


def _cmd_describe(args: argparse.Namespace) -> int:
    flow_obj, kwargs = _flow_and_kwargs(args)
    data = _build(flow_obj, lambda: flow_obj.describe(params=args.params, **kwargs))
    _emit(json.dumps(data, indent=2))
    return EXIT_OK


_MERMAID_MAX_EDGES = 500
"""Mermaid's default ``maxEdges``: larger graphs do not render."""


def _cmd_graph(args: argparse.Namespace) -> int:
    flow_obj, kwargs = _flow_and_kwargs(args)
    params = args.params
    exporters: dict[str, Callable[[], str]] = {
        "dot": lambda: flow_obj.export_dot(params=params, **kwargs),
        "mermaid": lambda: flow_obj.export_mermaid(params=params, **kwargs),
        "json": lambda: json.dumps(flow_obj.export_graph(params=params, **kwargs), indent=2),
    }
    text = _build(flow_obj, exporters[args.format])
    edges = text.count(" --> ") if args.format == "mermaid" else 0
    if edges >= _MERMAID_MAX_EDGES:
        _note(
            f"this graph has {edges} edges; Mermaid's default renderer (GitHub's too) "
            f"refuses {_MERMAID_MAX_EDGES} or more. Use --format dot, or map with a dynamic "
            "fan_out over a task result, which draws as one node"
        )
    _emit(text)
    return EXIT_OK


def _first_doc_line(flow_obj: Flow[Any]) -> str:
    doc = inspect.getdoc(flow_obj.fn) or ""
    return next((line.strip() for line in doc.splitlines() if line.strip()), "")


def _cmd_list(args: argparse.Namespace) -> int:
    source: str = args.source
    if ":" in source:
        module_part = source.rpartition(":")[0]
        raise UsageError(
            f"list takes a module or a .py file, not a flow target: try {module_part!r}"
        )
    flows = _flows_in(_load_source(source))
    if not flows:
        print(f"auto-workflow: no @flow in {source!r}", file=sys.stderr)
        return EXIT_OK
    rows = []
    for attr, flow_obj in flows.items():
        named = "" if flow_obj.name == attr else f" (flow {flow_obj.name!r})"
        rows.append((f"{source}:{attr}{named}", _first_doc_line(flow_obj)))
    width = max(len(target) for target, _ in rows)
    _emit("\n".join(f"{target.ljust(width)}  {doc}".rstrip() for target, doc in rows))
    return EXIT_OK


def _printing(command: Callable[[argparse.Namespace], str]) -> Callable[[argparse.Namespace], int]:
    """A history command as a CLI command: its text on stdout; not found is exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            text = command(args)
        except LookupError as exc:
            raise _FlowFailed(f"auto-workflow: {exc}", []) from exc
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        _emit(text)
        return EXIT_OK

    return run


def _cmd_ui(args: argparse.Namespace) -> int:
    try:
        return cmd_ui(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "describe": _cmd_describe,
    "graph": _cmd_graph,
    "list": _cmd_list,
    "resume": _cmd_resume,
    **{name: _printing(cmd) for name, cmd in HISTORY_COMMANDS.items()},
    "ui": _cmd_ui,
}


# -- entry point -----------------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"auto-workflow: error: {_safe_lines(message)}", file=sys.stderr, flush=True)


def _note(message: str) -> None:
    print(f"auto-workflow: note: {_safe_lines(message)}", file=sys.stderr, flush=True)


def _safe_lines(message: str) -> str:
    """``message`` with control characters escaped, line by line (its own lines kept)."""
    return "\n".join(safe_text(line) for line in message.split("\n"))


def _print_tracebacks(errors: Sequence[BaseException]) -> None:
    for err in errors:
        traceback.print_exception(err, file=sys.stderr)


def _setup_logging(structured: bool) -> Callable[[], None]:
    """The CLI's log handler, at the configured level (raises ValueError on bad config):
    readable lines, or with ``--structured-logs`` JSON objects."""
    level = get_config().log_level
    disabled = os.environ.get(DISABLE_LOGS_ENV, "").strip().lower() in _TRUE
    if structured and not disabled:
        return enable_structured_logging(level)
    return configure_logging(level, enabled=not disabled)


def _dispatch(args: argparse.Namespace) -> int:
    verbose: bool = args.verbose
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        cause = exc.__cause__
        if cause is not None and verbose:
            _print_tracebacks([cause])
        _error(str(exc) + (_TRACEBACK_HINT if cause is not None and not verbose else ""))
        return EXIT_USAGE
    except _FlowFailed as exc:
        if verbose:
            _print_tracebacks(exc.errors)
        text = _safe_lines(str(exc)) + ("" if verbose else _TRACEBACK_HINT)
        print(text, file=sys.stderr, flush=True)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 the flow failed, 2 bad usage, 130 interrupted.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (code 2)
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        restore_logging = _setup_logging(getattr(args, "structured_logs", False))
    except ValueError as exc:
        _error(f"invalid configuration: {exc}")
        return EXIT_USAGE
    try:
        return _run_quietly(args)
    except KeyboardInterrupt:
        print("auto-workflow: interrupted; the run was cancelled", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        restore_logging()

"""Configuration: defaults, overlaid by ``[tool.auto_workflow]`` in pyproject.toml, overlaid
by ``AUTO_WORKFLOW_<KEY>`` environment variables.

The pyproject.toml is the one in the working directory or its nearest parent that has one.
Invariants: nothing is read at import; values are validated once, when the configuration is
loaded, and an invalid one is an error naming the key, where it came from and what is
allowed; the loaded :class:`Config` is immutable and shared until :func:`reload_config`.
"""

from __future__ import annotations

import difflib
import os
import threading
import tomllib
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, overload

from auto_workflow.exceptions import AutoWorkflowWarning

__all__ = ["Config", "get_config", "load_config", "read_tool_table", "reload_config"]

_ENV_PREFIX = "AUTO_WORKFLOW_"
_SECTIONS = frozenset({"connectors"})
"""Sub-tables of ``[tool.auto_workflow]`` owned by another part (``auto_workflow.connectors``
reads ``[tool.auto_workflow.connectors.<name>]``): not configuration keys, not checked here."""
_SECTION_PREFIXES = tuple(f"{_ENV_PREFIX}{name.upper()}__" for name in _SECTIONS)
_VALIDATED = "values are validated, unlike in the public auto-workflow package: docs/migrating.md"
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")


ConfigValue = str | int | float | bool | None
"""What a configuration value can be (each key has one of these types, see :class:`Config`)."""

_StrKey = Literal[
    "log_level",
    "artifact_store",
    "artifact_store_path",
    "artifact_serializer",
    "result_cache",
    "result_cache_path",
    "history",
    "executor",
]
_OptionalIntKey = Literal[
    "result_cache_max_entries", "process_pool_max_workers", "history_keep_runs"
]
_OptionalStrKey = Literal["history_path", "dask_address"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(Mapping[str, ConfigValue]):
    """The validated configuration: attributes, and a read-only mapping of the same values
    (``cfg["max_dynamic_tasks"]``, ``"result_cache" in cfg``, ``dict(cfg)``).

    Attributes:
        log_level: Level of the CLI's log output.
        max_dynamic_tasks: Most tasks one dynamic fan-out may create.
        artifact_store: ``"memory"`` or ``"filesystem"``.
        artifact_store_path: Directory of the filesystem artifact store.
        artifact_serializer: ``"pickle"`` or ``"json"`` (pickle: trusted stores only).
        result_cache: ``"memory"`` or ``"filesystem"``.
        result_cache_path: Directory of the filesystem result cache.
        result_cache_max_entries: LRU bound of the memory cache (``None``: unbounded).
        process_pool_max_workers: Worker processes (``None``: the number of CPUs).
        history: ``"sqlite"`` (default: every flow run is recorded) or ``"off"``.
        history_path: The history file (``None``: ``history.sqlite`` in the user's data
            directory, e.g. ``~/.local/share/auto_workflow``).
        history_retention: Runs older than this are deleted (``"30d"``, ``"12h"``; ``None``:
            kept by age).
        history_keep_runs: Most runs kept per flow (``None``: no bound).
        durable: Whether runs checkpoint every task result by default (see docs/history.md).
        executor: Where flow runs send their tasks: ``"local"`` or ``"dask"``.
        dask_address: The Dask scheduler ``executor="dask"`` connects to (``None``: start
            an embedded ``LocalCluster`` for each run).
        blocking_warning_ms: A plain function run on the event loop (``run_in="async"``)
            that holds it this many milliseconds or more is logged, once per task per run
            (``0``: never).
    """

    log_level: str = "INFO"
    max_dynamic_tasks: int = 100_000
    artifact_store: str = "memory"
    artifact_store_path: str = ".aw_artifacts"
    artifact_serializer: str = "pickle"
    result_cache: str = "memory"
    result_cache_path: str = ".aw_cache"
    result_cache_max_entries: int | None = None
    process_pool_max_workers: int | None = None
    history: str = "sqlite"
    history_path: str | None = None
    history_retention: float | None = 30 * 86400.0
    history_keep_runs: int | None = 1000
    durable: bool = False
    executor: str = "local"
    dask_address: str | None = None
    blocking_warning_ms: float = 100.0

    @overload
    def __getitem__(self, key: _StrKey) -> str: ...

    @overload
    def __getitem__(self, key: Literal["max_dynamic_tasks"]) -> int: ...

    @overload
    def __getitem__(self, key: _OptionalIntKey) -> int | None: ...

    @overload
    def __getitem__(self, key: _OptionalStrKey) -> str | None: ...

    @overload
    def __getitem__(self, key: Literal["history_retention"]) -> float | None: ...

    @overload
    def __getitem__(self, key: Literal["durable"]) -> bool: ...

    @overload
    def __getitem__(self, key: Literal["blocking_warning_ms"]) -> float: ...

    @overload
    def __getitem__(self, key: str) -> ConfigValue: ...

    def __getitem__(self, key: str) -> ConfigValue:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"no configuration key {key!r}{hint}")
        value: ConfigValue = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)


_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Config))


def _positive_int(key: str, value: object, source: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"config {key}={value!r} from {source}: must be a positive integer")
    return value


def _milliseconds(key: str, value: object, source: str) -> float:
    """A number of milliseconds >= 0 (0: off), from a number or its text."""
    number: object = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int | float):
        number = -1.0
    if not 0 <= number < float("inf"):  # NaN fails too
        raise ValueError(
            f"config {key}={value!r} from {source}: must be a number of milliseconds >= 0 "
            "(0 turns it off)"
        )
    return float(number)


def _optional_positive_int(key: str, value: object, source: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return _positive_int(key, value, source)


def _choice(*allowed: str) -> Callable[[str, object, str], str]:
    def check(key: str, value: object, source: str) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"config {key}={value!r} from {source}: must be one of {choices}")
        return str(text)

    return check


def _log_level(key: str, value: object, source: str) -> str:
    text = value.strip().upper() if isinstance(value, str) else value
    if text not in _LOG_LEVELS:
        choices = ", ".join(_LOG_LEVELS)
        raise ValueError(f"config {key}={value!r} from {source}: must be one of {choices}")
    return str(text)


def _path(key: str, value: object, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"config {key}={value!r} from {source}: must be a non-empty path")
    return value


def _optional_path(key: str, value: object, source: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return _path(key, value, source)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` or a plain number of
    seconds. Raises ValueError naming the text and the accepted forms."""
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _UNITS else (raw, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(
            f"{text!r} is not a duration; write a positive number with a unit: "
            "'30d', '12h', '90m', '45s', '2w'"
        )
    return seconds


def _retention(key: str, value: object, source: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) * 86400.0  # a bare number in pyproject.toml counts days
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"config {key}={value!r} from {source}: {exc}") from None
    raise ValueError(f"config {key}={value!r} from {source}: must be a duration like '30d'")


def _flag(key: str, value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"config {key}={value!r} from {source}: must be true or false")


def _optional_address(key: str, value: object, source: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        raise ValueError(
            f"config {key}={value!r} from {source}: must be a scheduler address such as "
            "'tcp://10.0.0.5:8786'"
        )
    return value.strip()


_VALIDATORS: dict[str, Callable[[str, object, str], Any]] = {
    "log_level": _log_level,
    "max_dynamic_tasks": _positive_int,
    "artifact_store": _choice("memory", "filesystem"),
    "artifact_store_path": _path,
    "artifact_serializer": _choice("pickle", "json"),
    "result_cache": _choice("memory", "filesystem"),
    "result_cache_path": _path,
    "result_cache_max_entries": _optional_positive_int,
    "process_pool_max_workers": _optional_positive_int,
    "history": _choice("sqlite", "off"),
    "history_path": _optional_path,
    "history_retention": _retention,
    "history_keep_runs": _optional_positive_int,
    "durable": _flag,
    "executor": _choice("local", "dask"),
    "dask_address": _optional_address,
    "blocking_warning_ms": _milliseconds,
}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The pyproject.toml in ``start`` (default: the working directory) or its nearest parent."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _pyproject_table(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read configuration from {path}: {exc}") from exc
    table = data.get("tool", {}).get("auto_workflow", {})
    if not isinstance(table, dict):
        raise ValueError(f"[tool.auto_workflow] in {path} must be a table")
    return table


def read_tool_table(cwd: Path | None = None) -> tuple[Path | None, Mapping[str, Any]]:
    """The nearest pyproject.toml (or ``None``) and its ``[tool.auto_workflow]`` table.

    Raises:
        ValueError: the file cannot be read or the table is not a table.
    """
    pyproject = find_pyproject(cwd)
    return pyproject, {} if pyproject is None else _pyproject_table(pyproject)


def load_config(*, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration now.

    Args:
        cwd: Where to start looking for pyproject.toml (default: the working directory).
        environ: The environment to read (default: ``os.environ``).

    Raises:
        ValueError: an unknown key in ``[tool.auto_workflow]`` or an invalid value, naming
            the key, its source and what is allowed.
    """
    values: dict[str, Any] = {}
    pyproject = find_pyproject(cwd)
    if pyproject is not None:
        source = f"[tool.auto_workflow] in {pyproject}"
        for key, value in _pyproject_table(pyproject).items():
            if key in _SECTIONS:
                continue
            if key not in _VALIDATORS:
                known = ", ".join(sorted(_VALIDATORS))
                raise ValueError(
                    f"unknown config key {key!r} in {source}; known keys: {known} ({_VALIDATED})"
                )
            values[key] = _validated(key, value, source)
    env = os.environ if environ is None else environ
    _warn_unknown_variables(env)
    for key in _VALIDATORS:
        name = _ENV_PREFIX + key.upper()
        if name in env:
            values[key] = _validated(key, env[name], f"environment variable {name}")
    return Config(**values)


def _validated(key: str, value: object, source: str) -> Any:
    """``value`` checked by ``key``'s validator; its error says where the difference is."""
    try:
        return _VALIDATORS[key](key, value, source)
    except ValueError as exc:
        raise ValueError(f"{exc} ({_VALIDATED})") from None


_OTHER_VARIABLES = frozenset({"AUTO_WORKFLOW_DISABLE_STRUCTURED_LOGS"})
"""Variables of ours that are not configuration keys (read by the command line)."""


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """A misspelt ``AUTO_WORKFLOW_*`` variable would be ignored silently: say so.

    A warning, not an error: a variable of someone else's (or of a newer version) that
    happens to share the prefix must not stop every run.
    """
    known = {_ENV_PREFIX + key.upper() for key in _VALIDATORS} | _OTHER_VARIABLES
    suffixes = {name[len(_ENV_PREFIX) :]: name for name in known}
    for name in env:
        if name.startswith(_SECTION_PREFIXES):
            continue
        if name.startswith(_ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name[len(_ENV_PREFIX) :], suffixes, n=1)
            hint = f"; did you mean {suffixes[close[0]]}?" if close else "."
            warnings.warn(
                f"unknown environment variable {name} is ignored{hint} "
                f"Known: {', '.join(sorted(known))}",
                AutoWorkflowWarning,
                stacklevel=4,
            )


_lock = threading.Lock()
_cached: Config | None = None


def get_config() -> Config:
    """The configuration, loaded on first use and kept until :func:`reload_config`."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = load_config()
        return _cached


def reload_config() -> Config:
    """Re-read the configuration (pyproject.toml and the environment)."""
    global _cached
    with _lock:
        _cached = load_config()
        return _cached

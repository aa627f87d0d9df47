"""One flow run as the run history sees it: its id, whether it is durable, and resume.

A :class:`Session` is opened before the graph is built. It decides, from what the history
already holds under the run id, whether this is a new run or the resume of a durable one,
checks that a resumed graph still has the recorded shape, and opens the run's journal and
checkpoints.

Rules (docs/history.md):

* a run id names one run of one flow: reusing it for another flow is an error, and so is
  reusing it without ``durable=True`` (a non-durable run cannot be resumed);
* a durable run asked to run again under its id is resumed: every node whose checkpoint
  exists is not run again; a run that had succeeded therefore returns its recorded result
  without running anything;
* a resumed graph must have the recorded shape (same node ids and dependencies, in build
  order); otherwise :class:`~auto_workflow.exceptions.GraphChangedError` says where the
  two differ, and nothing runs;
* the history is an observer: a history that cannot be read or written logs a warning and
  the run goes on unrecorded (it never fails a run). Only the rules above raise.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auto_workflow._core._journal import (
    Checkpoints,
    PriorRun,
    RunHistory,
    RunJournal,
    RunSpec,
    graph_signature,
    installed_history,
)
from auto_workflow.exceptions import GraphChangedError

if TYPE_CHECKING:
    from auto_workflow._core._config import Config
    from auto_workflow._core._graph import Graph

__all__ = ["Session", "check_run_id", "flow_target"]

logger = logging.getLogger(__name__)

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")


def check_run_id(run_id: object) -> str | None:
    """``run_id`` if it is a usable run id (or ``None``), else a ValueError saying why."""
    if run_id is None:
        return None
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run_id must be 1-128 characters of letters, digits and . _ : @ + - "
            f"(starting with a letter or digit), e.g. '2026-12-06' or 'nightly-42'; "
            f"got {run_id!r}"
        )
    return run_id


def flow_target(fn: Callable[..., Any]) -> str | None:
    """Where a flow function can be loaded from again: ``module:name`` or ``file.py:name``."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__name__", None)
    if not module or not name:
        return None
    if module == "__main__":
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        return f"{path}:{name}" if path else None
    return f"{module}:{name}"


@dataclass(slots=True, kw_only=True)
class Session:
    """The history's view of one run, from before it is built until it ends."""

    spec: RunSpec
    history: RunHistory | None
    prior: PriorRun | None = None
    journal: RunJournal | None = None
    checkpoints: Checkpoints | None = None
    started: float = field(default_factory=time.time)

    @classmethod
    def open(cls, spec: RunSpec, config: Config, wanted: bool | None, named: bool) -> Session:
        """A session for ``spec``: the installed history if it is on, else none.

        ``named``: the caller chose the run id, so the history may already hold it (a
        fresh id cannot be there: nothing is looked up, nothing waits for the writer).
        """
        on = config.history != "off" if wanted is None else bool(wanted)
        history = installed_history() if on else None
        session = cls(spec=spec, history=history)
        if history is not None and named:
            session.prior = session._lookup()
            session._check_prior()
        elif spec.durable:
            logger.warning(
                "flow %r run %s: durable=True needs the run history, which is off; "
                "it runs without checkpoints",
                spec.flow,
                spec.run_id,
            )
        return session

    def _lookup(self) -> PriorRun | None:
        assert self.history is not None
        try:
            return self.history.lookup(self.spec.run_id)
        except Exception:
            logger.warning(
                "the run history could not be read; run %s goes on", self.spec.run_id, exc_info=True
            )
            return None

    def _check_prior(self) -> None:
        prior, spec = self.prior, self.spec
        if prior is None:
            return
        if prior.flow != spec.flow:
            raise ValueError(
                f"run id {spec.run_id!r} is a run of flow {prior.flow!r}, not {spec.flow!r}; "
                "a run id names one run of one flow: choose another id"
            )
        if not (spec.durable and prior.durable):
            why = "this run is not durable" if not spec.durable else "that run was not durable"
            raise ValueError(
                f"run id {spec.run_id!r} of flow {spec.flow!r} is taken ({prior.status}) and "
                f"{why}, so it cannot be resumed; pass durable=True to resume a durable run, "
                "or choose another run id"
            )

    @property
    def resuming(self) -> bool:
        """True when this run continues a durable run recorded under the same id."""
        return self.prior is not None

    def begin(self, graph: Graph) -> None:
        """Check a resumed graph's shape; open the journal and the checkpoints."""
        if self.history is None:
            return
        # Only a durable run can be resumed, so only its shape is ever compared: a plain
        # run of 100,000 nodes does not pay for 100,000 shape lines.
        lines = graph_signature(graph) if self.spec.durable else None
        if self.prior is not None and lines is not None:
            _check_shape(self.spec, self.prior, lines)
        try:
            self.journal, self.checkpoints = self.history.begin(
                self.spec, graph, lines, self.resuming
            )
        except Exception:
            logger.warning(
                "the run history could not record run %s of flow %r; it goes on unrecorded",
                self.spec.run_id,
                self.spec.flow,
                exc_info=True,
            )

    def finish(self, status: str, error: BaseException | None) -> None:
        """Record how the run ended; committed before this returns (or given up on).

        Called on the loop thread: the commit normally takes milliseconds, and a run that
        was cancelled may not await anything more.
        """
        if self.journal is None:
            return
        try:
            self.journal.finish(status, error, time.time())
        except Exception:
            logger.warning(
                "the run history could not record the end of run %s",
                self.spec.run_id,
                exc_info=True,
            )

    def write_report(self, path: str | os.PathLike[str]) -> None:
        """Write the ended run's HTML report to ``path``: a failure is one warning, never an
        error (the run's result or error is what the caller gets)."""
        if self.history is None or self.journal is None:
            logger.warning(
                "flow %r run %s: no report written to %s: the run was not recorded in the "
                "run history (it is off, or could not be written)",
                self.spec.flow,
                self.spec.run_id,
                path,
            )
            return
        try:
            self.history.write_report(self.spec.run_id, path)
        except Exception:  # a plugin boundary: the report never costs the run its outcome
            logger.warning(
                "flow %r run %s: could not write its report to %s",
                self.spec.flow,
                self.spec.run_id,
                path,
                exc_info=True,
            )


def signature_digest(lines: list[str]) -> str:
    """A short digest of a graph's shape lines, for the run record."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def _check_shape(spec: RunSpec, prior: PriorRun, lines: list[str]) -> None:
    """Raise GraphChangedError if ``lines`` differ from the prior run's shape."""
    if prior.signature is None or prior.signature == signature_digest(lines):
        return
    recorded = prior.shape() if prior.shape is not None else None
    raise GraphChangedError(_shape_message(spec, recorded, lines))


def _shape_message(spec: RunSpec, recorded: list[str] | None, lines: list[str]) -> str:
    head = (
        f"cannot resume run {spec.run_id!r} of flow {spec.flow!r}: the flow now builds a "
        "different graph than the recorded run"
    )
    tail = (
        "; resume it with the code (and arguments) it was started with, or start a new run "
        "with another run id"
    )
    if recorded is None:
        return head + tail
    for index, (old, new) in enumerate(zip(recorded, lines, strict=False)):
        if old != new:
            return f"{head} (node {index} was {old!r}, is now {new!r}){tail}"
    return f"{head} (it had {len(recorded)} nodes, now {len(lines)}){tail}"

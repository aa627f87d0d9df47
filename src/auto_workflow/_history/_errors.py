"""Errors the run history raises on purpose (private; re-exported by the public face).

::

    AutoWorkflowError
    └── HistoryError (+ RuntimeError)           the history file cannot be used
        ├── HistorySchemaError                  ... it was written by a newer version
        ├── RunNotFoundError (+ LookupError)    no recorded run has this id or prefix
        └── AmbiguousRunIdError (+ LookupError) a prefix matches several runs

The writer never raises these into the engine: it logs one warning and stops recording.
Only :class:`~auto_workflow._history._store.HistoryStore` (the reading side) raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from auto_workflow import exceptions
from auto_workflow.exceptions import AutoWorkflowError

__all__ = [
    "AmbiguousRunIdError",
    "HistoryError",
    "HistorySchemaError",
    "RunNotFoundError",
]


class HistoryError(AutoWorkflowError, RuntimeError):
    """The run history file cannot be opened, read or written."""


class HistorySchemaError(HistoryError):
    """The history file's schema is newer than this version of auto_workflow understands.

    Attributes:
        path: The history file.
        found: The file's schema version.
        supported: The newest schema version this code knows.
    """

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"run history {path} has schema version {found}, but this version of "
            f"auto_workflow only knows versions up to {supported}; upgrade auto_workflow "
            "or point the history at another file"
        )
        self.path = path
        self.found = found
        self.supported = supported

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.found, self.supported))


class RunNotFoundError(HistoryError, exceptions.RunNotFoundError):
    """No recorded run has the given id (or starts with the given prefix)."""


class AmbiguousRunIdError(HistoryError, exceptions.RunNotFoundError):
    """A run id prefix matches more than one run.

    Attributes:
        prefix: The prefix asked for.
        candidates: Matching run ids (at most the first few, sorted).
    """

    def __init__(self, prefix: str, candidates: Sequence[str], more: int = 0) -> None:
        listed = ", ".join(candidates)
        extra = f" and {more} more" if more else ""
        super().__init__(f"run id prefix {prefix!r} matches several runs: {listed}{extra}")
        self.prefix = prefix
        self.candidates = tuple(candidates)
        self.more = more

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.prefix, self.candidates, self.more))

"""A durable run's checkpoints: one atomic file per finished task, beside the history.

Each run has its own directory ``<checkpoint dir>/<run id>/`` (0700, files 0600), in the
format of the filesystem result cache: write to a temp file then rename, a header with a
SHA-256 over key and value, values pickled with cloudpickle. So a checkpoint is never torn,
a corrupt one is a miss with a warning (the task runs again), and keys are hashed (a node
key can never escape the directory).

Entries are not fsynced one by one: that would cost a disk flush per task. A checkpoint
survives the process being killed (the data is in the page cache); after a power loss the
latest ones may be missing, and those tasks simply run again on resume.

Besides one entry per node key, a run keeps ``__call__`` (its arguments, parameters and
options, so ``resume`` can rebuild it) and ``__shape__`` (its graph's shape lines, so a
changed graph can be reported precisely).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from auto_workflow._core._journal import RunSpec
from auto_workflow._history._paths import ensure_private_dir
from auto_workflow._results._disk import FilesystemResultCache
from auto_workflow.exceptions import CorruptEntryWarning, SerializationError

__all__ = ["CALL_KEY", "SHAPE_KEY", "RunCheckpoints", "delete_checkpoints"]

logger = logging.getLogger("auto_workflow.history")

CALL_KEY = "__call__"
SHAPE_KEY = "__shape__"
_NEVER = float("inf")


class RunCheckpoints:
    """The checkpoints of one durable run (implements the core's ``Checkpoints``)."""

    __slots__ = ("_cache", "_failed", "_ready", "directory", "run_id")

    def __init__(self, root: Path, run_id: str) -> None:
        self.run_id = run_id
        self.directory = Path(root) / run_id
        self._cache = FilesystemResultCache(
            self.directory, prune_interval=_NEVER, sync=False, private=True
        )
        self._failed = False
        self._ready = False

    def _prepare(self) -> None:
        """Create the checkpoint directories readable by the user alone (0700)."""
        ensure_private_dir(self.directory.parent)
        ensure_private_dir(self.directory)
        self._ready = True

    def load(self, key: str) -> tuple[Any] | None:
        """The checkpointed ``(value,)`` of ``key``, or ``None`` (missing or unreadable)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorruptEntryWarning)  # logged below instead
            try:
                hit = self._cache.get(key, None)
            except OSError as exc:
                logger.warning("checkpoint %s of run %s unreadable (%s)", key, self.run_id, exc)
                return None
        if hit.__class__ is tuple and len(hit) == 1:
            return hit
        return None

    def save(self, key: str, value: Any) -> bool:
        """Checkpoint ``value`` under ``key``; False (with one warning) if it cannot be."""
        try:
            if not self._ready:
                self._prepare()
            self._cache.set(key, (value,))
        except SerializationError as exc:
            logger.warning(
                "run %s: the result of %s cannot be checkpointed (%s); it will run again "
                "if the run is resumed",
                self.run_id,
                key,
                exc,
            )
            return False
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "run %s: checkpoints cannot be written to %s (%s); the run goes on, "
                    "but a resume will run its tasks again",
                    self.run_id,
                    self.directory,
                    exc,
                )
            return False
        return True

    def save_call(self, spec: RunSpec, shape: list[str]) -> None:
        """Keep what ``resume`` needs to rebuild the run."""
        self.save(CALL_KEY, spec)
        self.save(SHAPE_KEY, shape)

    def call(self) -> RunSpec | None:
        """The recorded call of the run, if it can be read."""
        hit = self.load(CALL_KEY)
        return hit[0] if hit is not None and isinstance(hit[0], RunSpec) else None

    def shape(self) -> list[str] | None:
        """The recorded graph shape lines, if they can be read."""
        hit = self.load(SHAPE_KEY)
        return hit[0] if hit is not None and isinstance(hit[0], list) else None


def delete_checkpoints(root: Path, run_id: str) -> None:
    """Remove a run's checkpoint directory (missing is fine)."""
    shutil.rmtree(Path(root) / run_id, ignore_errors=True)

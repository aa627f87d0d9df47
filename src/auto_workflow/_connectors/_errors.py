"""The connector errors, under the library's one root::

    AutoWorkflowError
    └── ConnectorError                          anything a connector raises on purpose
        ├── ProfileError (+ ValueError)         unknown profile or kind, a bad field or secret
        ├── MissingExtraError (+ ImportError)   the kind's optional extra is not installed
        └── DatabaseError                       the server or the driver failed (sqlstate)
            ├── TransientError (+ ConnectionError)  lost connection, serialization failure,
            │                                   deadlock, no pooled connection in time:
            │                                   the same call may well succeed if retried
            └── QueryTimeoutError (+ TimeoutError)  the statement timeout cancelled a call

Every message has had registered secrets replaced by ``***`` before it is built into an
error; the driver's own exception stays reachable as ``__cause__``. The errors pickle (they
cross process boundaries as a task's failure).
"""

from __future__ import annotations

import builtins

from auto_workflow.exceptions import AutoWorkflowError

__all__ = [
    "ConnectorError",
    "DatabaseError",
    "MissingExtraError",
    "ProfileError",
    "QueryTimeoutError",
    "TransientError",
]


class ConnectorError(AutoWorkflowError):
    """A connector failed; the message names the profile."""


class ProfileError(ConnectorError, ValueError):
    """A profile cannot be used: unknown name or kind, a bad field, an unresolved secret."""


class MissingExtraError(ConnectorError, ImportError):
    """The optional dependency a profile's kind needs is not installed; says what to install."""


class DatabaseError(ConnectorError):
    """A database call failed.

    Attributes:
        sqlstate: The server's SQLSTATE code (``"23505"``), or ``None`` for client errors.
    """

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message, sqlstate)
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return str(self.args[0])


class TransientError(DatabaseError, builtins.ConnectionError):
    """A failure that retrying the same call may cure (name it in a task's retry policy)."""


class QueryTimeoutError(DatabaseError, builtins.TimeoutError):
    """A statement ran longer than its statement timeout and the server cancelled it."""

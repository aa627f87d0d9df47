"""The Postgres connector: psycopg 3 with a psycopg_pool pool, one per process and profile.

Invariants:

- The pool opens on first use, after the profile's secrets are resolved (and registered for
  redaction); :meth:`PostgresConnector.close` closes it and the SQLAlchemy engine, and a
  closed connector refuses further calls (``connectors.get`` makes a new one).
- Pooled connections run in autocommit mode with dict rows: a call outside
  :meth:`~PostgresConnector.transaction` is its own transaction. Inside one, every call on
  this connector in the same context (thread or task; ``asyncio.to_thread`` carries the
  context along) uses the transaction's connection; a nested ``transaction()`` is a
  savepoint. The current transaction lives in a context variable, set and reset by token.
- Parameters are always bound by the driver; table and column names go through
  ``psycopg.sql.Identifier``. Nothing user-given is formatted into SQL text.
- Every psycopg or pool error leaves as a :mod:`~auto_workflow._connectors._errors` error
  whose message is redacted: transient ones (connection lost, serialization failure,
  deadlock, no pooled connection in time) as :class:`TransientError`. A connection that
  died is dropped by the pool, and each connection is checked before it is handed out, so
  the retry of a failed call gets a live one.
- The async variants run the sync calls in a worker thread (``asyncio.to_thread``): one pool
  per process serves sync and async tasks alike, while a psycopg async pool would be bound
  to one event loop, and every flow run has a loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from auto_workflow._connectors._errors import (
    ConnectorError,
    DatabaseError,
    MissingExtraError,
    ProfileError,
    QueryTimeoutError,
    TransientError,
)
from auto_workflow._connectors._profiles import SECRET_SCHEME, Profile, resolve
from auto_workflow._connectors._registry import revive
from auto_workflow._history._values import REDACTED, redact, register_secret

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

__all__ = ["PostgresConnector", "connect"]

Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any] | None
_Conn = psycopg.Connection[Row]
_P = ParamSpec("_P")
_T = TypeVar("_T")
_CHUNK = 1 << 16
_TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
)


def connect(profile: Profile) -> PostgresConnector:
    """The registry's factory for ``kind = "postgres"`` profiles (nothing connects yet)."""
    return PostgresConnector(profile)


def _translate(profile: str, exc: Exception) -> DatabaseError:
    message = f"postgres profile {profile!r}: {redact(str(exc)).strip()}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, pg_errors.QueryCanceled):
        return QueryTimeoutError(message, sqlstate)
    if isinstance(exc, _TRANSIENT):
        return TransientError(message, sqlstate)
    return DatabaseError(message, sqlstate)


@contextlib.contextmanager
def _mapped(profile: str) -> Iterator[None]:
    """Turn psycopg and pool errors into connector errors, redacted (see the module doc)."""
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise _translate(profile, exc) from exc


def _identifier(name: str) -> sql.Identifier:
    """``"schema.table"`` as a quoted identifier (each part quoted)."""
    if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
        raise ValueError(f"not a table or column name: {name!r}")
    return sql.Identifier(*name.split("."))


def _copy_options(format: str, header: bool) -> sql.Composable:
    if format not in ("csv", "text"):
        raise ValueError(f"format must be 'csv' or 'text'; got {format!r}")
    if format == "text":
        return sql.SQL("")
    return sql.SQL(" (FORMAT csv, HEADER {})").format(sql.SQL("true" if header else "false"))


def _feed(copy: psycopg.Copy, source: object) -> None:
    """Write ``source`` into a COPY: bytes or str, a readable file, or an iterable of rows."""
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        copy.write(source)
        return
    read = getattr(source, "read", None)
    if callable(read):
        while chunk := read(_CHUNK):
            copy.write(chunk)
        return
    if not isinstance(source, Iterable):
        raise TypeError(f"copy_from takes rows, bytes, str or a file; got {type(source)}")
    for row in source:
        copy.write_row(row)


def _display_dsn(dsn: str) -> str:
    """The DSN as safe to show: a reference as written, else its parts with no password."""
    if dsn.startswith(SECRET_SCHEME):
        return dsn
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return REDACTED
    if "password" in parts:
        parts["password"] = REDACTED
    return redact(make_conninfo(**{k: str(v) for k, v in parts.items()}))


class PostgresConnector:
    """A Postgres database behind a connection pool; get one with ``connectors.get(name)``.

    Every call takes ``statement_timeout``: the statement timeout of that call in seconds (``None``:
    the profile's ``statement_timeout``, if any). Rows are dicts keyed by column name.
    """

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[_Conn] | None = None
        self._engine: Engine | None = None
        self._closed = False
        self._tx: ContextVar[_Conn | None] = ContextVar(
            f"auto_workflow_pg_tx_{profile.name}_{id(self)}", default=None
        )

    @property
    def profile(self) -> Profile:
        """The profile this connector was made from (secret references unresolved)."""
        return self._profile

    @property
    def name(self) -> str:
        """The profile's name."""
        return self._profile.name

    def __repr__(self) -> str:
        dsn = _display_dsn(str(self._profile["dsn"]))
        return f"PostgresConnector({self.name!r}, dsn={dsn!r})"

    def __reduce__(self) -> tuple[Callable[[Profile], Any], tuple[Profile]]:
        # Never the pool: the receiving process makes (or reuses) its own from the profile.
        return (revive, (self._profile,))

    # -- the pool ------------------------------------------------------------------------

    def _connection_settings(self) -> tuple[str, dict[str, Any]]:
        """The resolved DSN and psycopg.connect keyword arguments (secrets registered)."""
        fields = resolve(self._profile)
        dsn = str(fields["dsn"])
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError as exc:
            raise ProfileError(
                f"connector profile {self.name!r} (from {self._profile.source}): field 'dsn' "
                f"is not a valid libpq connection string or URI ({redact(str(exc))})"
            ) from None
        register_secret(dsn)
        register_secret(str(password or ""))
        kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(float(fields["connect_timeout"] or 10))),
            "application_name": str(fields["application_name"]),
        }
        if fields["statement_timeout"] is not None:
            millis = round(float(fields["statement_timeout"]) * 1000)
            kwargs["options"] = f"-c statement_timeout={millis}"
        return dsn, kwargs

    def _open_pool(self) -> psycopg_pool.ConnectionPool[_Conn]:
        dsn, kwargs = self._connection_settings()
        with _mapped(self.name):
            # One direct connection first: a wrong password or host fails now, with the
            # server's own message, instead of as a pool timeout later.
            psycopg.connect(dsn, **kwargs).close()
        fields = self._profile.fields
        pool = psycopg_pool.ConnectionPool(
            dsn,
            connection_class=psycopg.Connection[Row],
            kwargs={**kwargs, "autocommit": True, "row_factory": dict_row},
            min_size=int(fields["min_size"] or 0),
            max_size=int(fields["max_size"] or 1),
            timeout=float(fields["timeout"] or 30),
            max_idle=float(fields["max_idle"] or 600),
            check=psycopg_pool.ConnectionPool.check_connection,
            name=f"auto_workflow-{self.name}",
            open=False,
        )
        with _mapped(self.name):
            pool.open(wait=False)
        return pool

    def _get_pool(self) -> psycopg_pool.ConnectionPool[_Conn]:
        with self._lock:
            if self._closed:
                raise ConnectorError(
                    f"postgres connector {self.name!r} is closed; connectors.get("
                    f"{self.name!r}) makes a new one"
                )
            if self._pool is None:
                self._pool = self._open_pool()
            return self._pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[_Conn]:
        """The current transaction's connection, or one from the pool for this call."""
        current = self._tx.get()
        if current is not None:
            yield current
            return
        pool = self._get_pool()
        with _mapped(self.name), pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _timed(self, conn: _Conn, timeout: float | None) -> Iterator[None]:
        """Run the block under a statement timeout of ``timeout`` seconds (None: as set)."""
        if timeout is None:
            yield
            return
        if not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0; got {timeout!r}")
        with conn.transaction():  # a savepoint inside a transaction: undone with it on error
            row = conn.execute(
                "SELECT current_setting('statement_timeout') AS old, "
                "set_config('statement_timeout', %s, true)",
                [f"{round(timeout * 1000)}ms"],
            ).fetchone()
            yield
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [row and row["old"]])

    def _run(self, timeout: float | None, work: Callable[[psycopg.Cursor[Row]], _T]) -> _T:
        with (
            self._connection() as conn,
            _mapped(self.name),
            self._timed(conn, timeout),
            conn.cursor() as cursor,
        ):
            return work(cursor)

    # -- calls ---------------------------------------------------------------------------

    def query(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> list[Row]:
        """Every row of ``query``, as dicts.

        Args:
            query: SQL with ``%s`` or ``%(name)s`` placeholders.
            params: Their values (bound by the driver, never formatted into the SQL).
            statement_timeout: This call's statement timeout in seconds.

        Raises:
            DatabaseError: the server rejected the query (``TransientError``: retry it;
                ``QueryTimeoutError``: it ran out of time).
        """
        return self._run(statement_timeout, lambda cur: cur.execute(query, params).fetchall())

    def query_one(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> Row | None:
        """The first row of ``query``, or ``None`` when it returns no row (see :meth:`query`)."""
        return self._run(statement_timeout, lambda cur: cur.execute(query, params).fetchone())

    def execute(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> int:
        """Run one statement; returns the number of rows it affected (-1 if not known)."""
        return self._run(statement_timeout, lambda cur: cur.execute(query, params).rowcount)

    def executemany(
        self, query: str, params_seq: Iterable[Params], *, statement_timeout: float | None = None
    ) -> int:
        """Run ``query`` once per parameter set, pipelined, all in one transaction.

        Returns the number of rows affected in all.
        """

        def work(cur: psycopg.Cursor[Row]) -> int:
            cur.executemany(query, [p if p is not None else () for p in params_seq])
            return cur.rowcount

        with self.transaction():
            return self._run(statement_timeout, work)

    def query_iter(
        self,
        query: str,
        params: Params = None,
        *,
        batch_size: int = 1000,
        statement_timeout: float | None = None,
    ) -> Iterator[Row]:
        """The rows of ``query`` one at a time, fetched ``batch_size`` at a time through a
        server-side cursor: memory stays flat however many rows there are.

        The cursor holds a pooled connection and a transaction until the iterator is
        exhausted or closed (``with contextlib.closing(...)``, or breaking out of a for loop
        over a generator the caller then drops).
        """
        scope = _Scope(self)
        with _mapped(self.name):
            conn = scope.enter()
        try:
            with (
                _mapped(self.name),
                self._timed(conn, statement_timeout),
                conn.cursor(name=f"aw_{uuid.uuid4().hex}") as cursor,
            ):
                cursor.itersize = batch_size
                cursor.execute(query, params)
                yield from cursor
        except BaseException as exc:
            with _mapped(self.name):
                scope.exit(type(exc), exc, exc.__traceback__)
            raise
        with _mapped(self.name):
            scope.exit(None, None, None)

    def copy_from(
        self,
        table: str,
        source: Iterable[Sequence[Any]] | bytes | str | IO[bytes] | IO[str],
        *,
        columns: Sequence[str] | None = None,
        format: Literal["csv", "text"] | None = None,
        header: bool = False,
        statement_timeout: float | None = None,
    ) -> int:
        """Load ``source`` into ``table`` with ``COPY ... FROM STDIN``.

        Args:
            table: The table (``"schema.table"`` works), quoted as an identifier.
            source: An iterable of rows (tuples; adapted by psycopg), or CSV/text data as
                bytes, str or a readable file (streamed in 64 KiB chunks).
            columns: The columns the data fills, in order (default: all of them).
            format: ``"csv"`` (the default for data) or ``"text"`` (COPY's own; rows are
                always sent in it).
            header: Whether CSV data starts with a header line to skip.
            statement_timeout: This call's statement timeout in seconds.

        Returns:
            The number of rows loaded.
        """
        is_rows = not isinstance(source, (bytes, bytearray, str)) and not hasattr(source, "read")
        chosen = "text" if is_rows else (format or "csv")
        target = _identifier(table)
        if columns:
            names = sql.SQL(", ").join(_identifier(c) for c in columns)
            target = sql.SQL("{} ({})").format(target, names)  # type: ignore[assignment]
        statement = sql.SQL("COPY {} FROM STDIN{}").format(target, _copy_options(chosen, header))

        def work(cur: psycopg.Cursor[Row]) -> int:
            with cur.copy(statement) as copy:
                _feed(copy, source)
            return cur.rowcount

        return self._run(statement_timeout, work)

    def copy_to(
        self,
        table: str | None = None,
        *,
        query: str | None = None,
        params: Params = None,
        target: IO[bytes] | None = None,
        format: Literal["csv", "text"] = "csv",
        header: bool = False,
        statement_timeout: float | None = None,
    ) -> bytes | int:
        """Export ``table`` (or the rows of ``query``) with ``COPY ... TO STDOUT``.

        Returns:
            The data as bytes, or, when ``target`` (a binary file) is given, the number of
            bytes written into it.
        """
        if (table is None) == (query is None):
            raise ValueError("copy_to takes a table or query=..., not both")
        source = _identifier(table) if table is not None else sql.SQL("({})").format(sql.SQL(query))  # type: ignore[arg-type]
        statement = sql.SQL("COPY {} TO STDOUT{}").format(source, _copy_options(format, header))

        def work(cur: psycopg.Cursor[Row]) -> bytes | int:
            chunks: list[bytes] = []
            written = 0
            with cur.copy(statement, params) as copy:
                for data in copy:
                    if target is None:
                        chunks.append(bytes(data))
                    else:
                        written += target.write(bytes(data))
            return b"".join(chunks) if target is None else written

        return self._run(statement_timeout, work)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresConnector]:
        """A transaction: committed when the block ends, rolled back if it raises.

        Calls on this connector inside the block (in this thread or task) run in it; a
        nested ``transaction()`` is a savepoint, rolled back alone if its block raises.
        Yields the connector itself.
        """
        scope = _Scope(self)
        with _mapped(self.name):
            conn = scope.enter()
        token = self._tx.set(conn)
        try:
            yield self
        except BaseException as exc:
            self._tx.reset(token)
            with _mapped(self.name):
                scope.exit(type(exc), exc, exc.__traceback__)
            raise
        self._tx.reset(token)
        with _mapped(self.name):
            scope.exit(None, None, None)

    # -- async ---------------------------------------------------------------------------

    async def aquery(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> list[Row]:
        """:meth:`query` for async tasks (runs in a worker thread)."""
        return await _in_thread(self.query, query, params, statement_timeout=statement_timeout)

    async def aquery_one(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> Row | None:
        """:meth:`query_one` for async tasks."""
        return await _in_thread(self.query_one, query, params, statement_timeout=statement_timeout)

    async def aexecute(
        self, query: str, params: Params = None, *, statement_timeout: float | None = None
    ) -> int:
        """:meth:`execute` for async tasks."""
        return await _in_thread(self.execute, query, params, statement_timeout=statement_timeout)

    async def aexecutemany(
        self, query: str, params_seq: Iterable[Params], *, statement_timeout: float | None = None
    ) -> int:
        """:meth:`executemany` for async tasks."""
        return await _in_thread(
            self.executemany, query, params_seq, statement_timeout=statement_timeout
        )

    async def acopy_from(self, table: str, source: Any, **options: Any) -> int:
        """:meth:`copy_from` for async tasks."""
        return await _in_thread(self.copy_from, table, source, **options)

    async def acopy_to(self, table: str | None = None, **options: Any) -> bytes | int:
        """:meth:`copy_to` for async tasks."""
        return await _in_thread(self.copy_to, table, **options)

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[PostgresConnector]:
        """:meth:`transaction` for async tasks: the ``a*`` calls in the block run in it."""
        scope = _Scope(self)
        conn = await _in_thread(_mapped_call, self.name, scope.enter)
        token = self._tx.set(conn)
        try:
            yield self
        except BaseException as exc:
            self._tx.reset(token)
            await _in_thread(_mapped_call, self.name, scope.exit, type(exc), exc, None)
            raise
        self._tx.reset(token)
        await _in_thread(_mapped_call, self.name, scope.exit, None, None, None)

    # -- SQLAlchemy ----------------------------------------------------------------------

    def sqlalchemy_engine(self) -> Engine:
        """A SQLAlchemy engine on the same database (made once; closed with the connector).

        Its pool is SQLAlchemy's own, at most the profile's ``max_size`` connections.

        Raises:
            MissingExtraError: SQLAlchemy is not installed.
        """
        try:
            import sqlalchemy  # the optional [sqlalchemy] extra: imported only when asked for
        except ImportError as exc:
            raise MissingExtraError(
                f"postgres profile {self.name!r}: sqlalchemy_engine() needs SQLAlchemy; "
                "run: pip install 'auto-workflow[sqlalchemy]'"
            ) from exc
        with self._lock:
            if self._closed:
                raise ConnectorError(f"postgres connector {self.name!r} is closed")
            if self._engine is None:
                dsn, kwargs = self._connection_settings()
                self._engine = sqlalchemy.create_engine(
                    "postgresql+psycopg://",
                    creator=functools.partial(psycopg.connect, dsn, **kwargs),
                    pool_size=int(self._profile["max_size"] or 5),
                    max_overflow=0,
                    pool_pre_ping=True,
                    hide_parameters=True,
                )
            return self._engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A SQLAlchemy ORM session in a transaction: committed at the end, rolled back on
        error, then closed."""
        from sqlalchemy.orm import Session  # the optional [sqlalchemy] extra, as above

        with Session(self.sqlalchemy_engine()) as session, session.begin():
            yield session

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool and the engine; later calls raise :class:`ConnectorError`."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            engine, self._engine = self._engine, None
        if pool is not None:
            pool.close(timeout=5.0)
        if engine is not None:
            engine.dispose()


class _Scope:
    """Entering and leaving one (possibly nested) transaction, in steps a thread can take."""

    def __init__(self, owner: PostgresConnector) -> None:
        self._owner = owner
        self._pooled: _Conn | None = None
        self._pool: psycopg_pool.ConnectionPool[_Conn] | None = None
        self._tx: contextlib.AbstractContextManager[Any] | None = None

    def enter(self) -> _Conn:
        conn = self._owner._tx.get()
        if conn is None:
            self._pool = self._owner._get_pool()
            conn = self._pooled = self._pool.getconn()
        try:
            tx = self._tx = conn.transaction()
            tx.__enter__()
        except BaseException:
            self._release()
            raise
        return conn

    def exit(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tx is not None:
                self._tx.__exit__(kind, exc, tb)
        finally:
            self._release()

    def _release(self) -> None:
        conn, self._pooled = self._pooled, None
        pool = self._pool
        if conn is not None and pool is not None:
            pool.putconn(conn)  # a broken connection is discarded by the pool, not reused


def _mapped_call(profile: str, fn: Callable[..., _T], *args: Any) -> _T:
    with _mapped(profile):
        return fn(*args)


async def _in_thread(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    # to_thread copies the context: a call inside atransaction() finds its connection.
    return await asyncio.to_thread(fn, *args, **kwargs)

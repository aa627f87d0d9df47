"""The Postgres connector against a real PostgreSQL server started by the fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import io
import pickle
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from servers import Postgres

from auto_workflow import connectors, flow, task
from auto_workflow.connectors import (
    DatabaseError,
    ProfileError,
    QueryTimeoutError,
    TransientError,
)
from auto_workflow.exceptions import AutoWorkflowError
from auto_workflow.history import get_run, list_runs
from auto_workflow.secrets import StaticMappingSecrets, set_secrets_provider


@pytest.fixture
def pg(postgres_cluster: Postgres) -> Any:
    """A connector on the test cluster, its DSN (with the password) given as a secret."""
    set_secrets_provider(StaticMappingSecrets({"WAREHOUSE_DSN": postgres_cluster.dsn}))
    connectors.register_profile(
        "warehouse", kind="postgres", dsn="secret://WAREHOUSE_DSN", max_size=4, min_size=1
    )
    return connectors.get("warehouse")


@pytest.fixture
def table(pg: Any) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    pg.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, label text)")
    yield name
    with contextlib.suppress(DatabaseError):
        pg.execute(f"DROP TABLE IF EXISTS {name}")


def test_query_binds_parameters_and_returns_dict_rows(pg: Any, table: str) -> None:
    assert pg.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(1, "a"), (2, "b")]) == 2
    rows = pg.query(f"SELECT id, label FROM {table} WHERE label = %s", ["b"])
    assert rows == [{"id": 2, "label": "b"}]
    assert pg.query_one(f"SELECT count(*) AS n FROM {table}") == {"n": 2}
    assert pg.query_one(f"SELECT * FROM {table} WHERE id = %(id)s", {"id": 9}) is None
    hostile = "x'); DROP TABLE " + table + "; --"
    assert pg.execute(f"UPDATE {table} SET label = %s WHERE id = 1", [hostile]) == 1
    assert pg.query_one(f"SELECT label FROM {table} WHERE id = 1") == {"label": hostile}


def test_get_returns_one_connector_per_process_and_it_pickles_as_its_profile(pg: Any) -> None:
    assert connectors.get("warehouse") is pg
    data = pickle.dumps(pg)
    assert b"pw-" not in data  # the profile holds the secret's name, never its value
    assert pickle.loads(data) is pg


def test_the_password_is_redacted_from_repr_and_errors(pg: Any, postgres_cluster: Postgres) -> None:
    password = postgres_cluster.password
    pg.query("SELECT 1")
    assert password not in repr(pg)
    with pytest.raises(DatabaseError) as info:
        pg.query("SELECT %s::int", [password])  # the server quotes the bad value back
    assert password not in str(info.value)
    assert "***" in str(info.value)
    assert info.value.sqlstate == "22P02"
    assert isinstance(info.value, AutoWorkflowError)
    literal = connectors.register_profile("plain", kind="postgres", dsn=postgres_cluster.dsn)
    plain = connectors.get("plain")
    assert password not in repr(plain)
    assert password not in repr(literal)
    assert "password=***" in repr(plain)


def test_a_wrong_password_fails_with_the_servers_message(postgres_cluster: Postgres) -> None:
    dsn = postgres_cluster.dsn.replace(postgres_cluster.password, "nope-wrong")
    connectors.register_profile("bad", kind="postgres", dsn=dsn)
    with pytest.raises(TransientError, match="password authentication failed") as info:
        connectors.get("bad").query("SELECT 1")
    assert "nope-wrong" not in str(info.value)


def test_a_missing_secret_names_the_profile_field_and_key(postgres_cluster: Postgres) -> None:
    set_secrets_provider(StaticMappingSecrets({}))
    connectors.register_profile("warehouse", kind="postgres", dsn="secret://NOT_THERE")
    with pytest.raises(ProfileError, match=r"'warehouse'.*'dsn'.*'NOT_THERE'"):
        connectors.get("warehouse").query("SELECT 1")


def test_sixteen_concurrent_tasks_share_a_pool_of_four(pg: Any) -> None:
    peak = {"n": 0}

    @task
    async def busy(i: int) -> int:
        row = await pg.aquery_one(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s",
            ["auto_workflow"],
        )
        peak["n"] = max(peak["n"], row["n"])
        await pg.aexecute("SELECT pg_sleep(0.1)")
        return i

    @task(run_in="thread")
    def busy_thread(i: int) -> int:
        pg.execute("SELECT pg_sleep(0.1)")
        return i

    @flow
    def fan() -> list[int]:
        return [busy(i) for i in range(8)] + [busy_thread(i) for i in range(8, 16)]

    started = time.monotonic()
    assert sorted(fan.run()) == list(range(16))
    elapsed = time.monotonic() - started
    assert 1 <= peak["n"] <= 4
    assert elapsed >= 16 * 0.1 / 4 * 0.9  # never more than four at once
    stats = pg._pool.get_stats()
    assert stats["pool_max"] == 4
    assert stats.get("requests_num", 0) >= 16


def test_a_failing_task_rolls_its_transaction_back(pg: Any, table: str) -> None:
    @task
    def load(rows: list[tuple[int, str]]) -> None:
        with pg.transaction():
            pg.executemany(f"INSERT INTO {table} VALUES (%s, %s)", rows)
            raise ValueError("bad batch")

    @flow
    def job() -> None:
        load([(1, "a"), (2, "b")])

    with pytest.raises(AutoWorkflowError, match="bad batch"):
        job.run()
    assert pg.query(f"SELECT * FROM {table}") == []


def _insert_then_raise(pg: Any, table: str, row_id: int, error: BaseException) -> None:
    with pg.transaction():
        pg.execute(f"INSERT INTO {table} VALUES (%s, 'x')", [row_id])
        raise error


def test_nested_transactions_are_savepoints(pg: Any, table: str) -> None:
    with pg.transaction() as tx:
        tx.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
        with pytest.raises(RuntimeError):
            _insert_then_raise(pg, table, 2, RuntimeError("inner"))
        with pytest.raises(DatabaseError) as info:
            _insert_then_raise(pg, table, 1, AssertionError("not reached: a duplicate key"))
        assert info.value.sqlstate == "23505"
        pg.execute(f"INSERT INTO {table} VALUES (3, 'after')")
    assert pg.query(f"SELECT id FROM {table} ORDER BY id") == [{"id": 1}, {"id": 3}]


async def _ainsert_then_raise(pg: Any, table: str, row_id: int, error: BaseException) -> None:
    async with pg.atransaction():
        await pg.aexecute(f"INSERT INTO {table} VALUES (%s, 'x')", [row_id])
        raise error


async def test_async_transaction_commits_and_rolls_back(pg: Any, table: str) -> None:
    async with pg.atransaction():
        await pg.aexecute(f"INSERT INTO {table} VALUES (1, 'a')")
        with pytest.raises(KeyError):
            await _ainsert_then_raise(pg, table, 2, KeyError("x"))
    with pytest.raises(ZeroDivisionError):
        await _ainsert_then_raise(pg, table, 4, ZeroDivisionError())
    assert await pg.aquery(f"SELECT id FROM {table}") == [{"id": 1}]


def test_the_statement_timeout_applies_per_call(pg: Any) -> None:
    with pytest.raises(QueryTimeoutError) as info:
        pg.query("SELECT pg_sleep(2)", statement_timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert info.value.sqlstate == "57014"
    with pg.transaction():
        pg.query("SELECT 1", statement_timeout=5)
        after = pg.query_one("SELECT current_setting('statement_timeout') AS t")
    assert after == {"t": "0"}  # restored for the rest of the transaction
    assert pg.query_one("SELECT 2 AS x", statement_timeout=1) == {"x": 2}


def _kill_when_running(admin_dsn: str, marker: str, killed: list[int]) -> None:
    import psycopg

    deadline = time.monotonic() + 10
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        while time.monotonic() < deadline and not killed:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                [f"%{marker}%"],
            ).fetchone()
            if row:
                admin.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                killed.append(row[0])
            time.sleep(0.02)


def test_a_connection_killed_mid_query_fails_transiently_and_the_retry_succeeds(
    pg: Any, postgres_cluster: Postgres
) -> None:
    marker = f"kill_me_{uuid.uuid4().hex[:8]}"
    killed: list[int] = []
    errors: list[BaseException] = []

    @task(retries=2)
    def slow() -> int:
        try:
            row = pg.query_one(f"SELECT pg_sleep(0.5), 42 AS answer /* {marker} */")
        except TransientError as exc:
            errors.append(exc)
            raise
        return int(row["answer"])

    @flow
    def job() -> int:
        return slow()

    killer = threading.Thread(
        target=_kill_when_running, args=(postgres_cluster.socket_dsn, marker, killed)
    )
    killer.start()
    try:
        assert job.run() == 42
    finally:
        killer.join()
    assert len(killed) == 1
    assert len(errors) == 1
    assert "terminating connection" in str(errors[0]) or "closed" in str(errors[0])
    assert isinstance(errors[0], ConnectionError)


def test_idle_connections_killed_by_the_server_are_replaced_unseen(
    pg: Any, postgres_cluster: Postgres
) -> None:
    import psycopg

    assert pg.query_one("SELECT 1 AS x") == {"x": 1}
    with psycopg.connect(postgres_cluster.socket_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'auto_workflow'"
        )
    time.sleep(0.2)
    assert pg.query_one("SELECT 2 AS x") == {"x": 2}


def test_copy_one_million_rows_in_and_out(pg: Any, table: str) -> None:
    count = 1_000_000
    started = time.perf_counter()
    loaded = pg.copy_from(table, ((i, "row") for i in range(count)), columns=["id", "label"])
    copy_in = time.perf_counter() - started
    assert loaded == count
    assert pg.query_one(f"SELECT count(*) AS n, sum(id) AS s FROM {table}") == {
        "n": count,
        "s": count * (count - 1) // 2,
    }
    out = io.BytesIO()
    written = pg.copy_to(table, target=out)
    assert written == len(out.getvalue())
    assert out.getvalue().count(b"\n") == count
    print(f"COPY {count} rows in: {copy_in:.2f}s")
    assert copy_in < 60


def test_copy_from_csv_data_and_query_export(pg: Any, table: str) -> None:
    csv = b'id,label\n1,one\n2,"two, too"\n'
    assert pg.copy_from(table, io.BytesIO(csv), header=True) == 2
    assert pg.copy_from(table, "3,three\n") == 1
    exported = pg.copy_to(query=f"SELECT * FROM {table} WHERE id > %s ORDER BY id", params=[1])
    assert exported == b'2,"two, too"\n3,three\n'
    assert pg.copy_to(table, header=True).startswith(b"id,label\n")
    with pytest.raises(ValueError, match="not both"):
        pg.copy_to(table, query="SELECT 1")


def test_query_iter_streams_through_a_server_side_cursor_in_flat_memory(pg: Any) -> None:
    query = "SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, %s) g"
    tracemalloc.start()
    try:
        total = 0
        for row in pg.query_iter(query, [100_000], batch_size=2000):
            total += row["n"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 100_000 * 100_001 // 2
    assert peak < 8 * 1024 * 1024  # all rows at once would be ~20 MB of dicts
    it = pg.query_iter("SELECT g FROM generate_series(1, 10) g")
    assert next(it) == {"g": 1}
    it.close()  # gives its connection back
    assert pg.query_one("SELECT 1 AS x") == {"x": 1}


def test_errors_are_not_transient_when_a_retry_cannot_help(pg: Any) -> None:
    with pytest.raises(DatabaseError) as info:
        pg.query("SELECT * FROM no_such_table")
    assert not isinstance(info.value, TransientError)
    assert info.value.sqlstate == "42P01"
    assert pickle.loads(pickle.dumps(info.value)).sqlstate == "42P01"


def test_a_process_task_gets_a_connector_made_in_its_own_process(
    postgres_cluster: Postgres,
) -> None:
    import os

    connectors.register_profile("local", kind="postgres", dsn=postgres_cluster.socket_dsn)
    here = connectors.get("local")

    @task(run_in="process")
    def where(db: Any) -> tuple[int, int]:
        import os

        row = db.query_one("SELECT pg_backend_pid() AS pid")
        return os.getpid(), row["pid"]

    @flow
    def job(db: Any) -> tuple[int, int]:
        return where(db)

    pid, _ = job.run(here)
    assert pid != os.getpid()


def test_a_failed_tasks_error_is_redacted_in_the_history(
    pg: Any, postgres_cluster: Postgres
) -> None:
    password = postgres_cluster.password

    @task
    def leak() -> None:
        pg.query("SELECT %s::int", [password])

    @flow
    def leaky() -> None:
        leak()

    with pytest.raises(AutoWorkflowError):
        leaky.run()
    run = get_run(list_runs(flow="leaky")[0].run_id)
    texts = [str(t.error) for t in run.tasks] + [str(run.error)]
    assert any("***" in t for t in texts)
    assert not any(password in t for t in texts)


def _orm_insert_then_raise(pg: Any, statement: Any) -> None:
    with pg.session() as session:
        session.execute(statement)
        raise RuntimeError("undo")


def test_sqlalchemy_engine_and_session(pg: Any, table: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = pg.sqlalchemy_engine()
    assert engine is pg.sqlalchemy_engine()
    with pg.session() as session:
        session.execute(sqlalchemy.text(f"INSERT INTO {table} VALUES (7, 'orm')"))
    with pytest.raises(RuntimeError):
        _orm_insert_then_raise(pg, sqlalchemy.text(f"INSERT INTO {table} VALUES (8, 'no')"))
    assert pg.query(f"SELECT id FROM {table}") == [{"id": 7}]
    assert "pw-" not in repr(engine)


def test_a_closed_connector_refuses_calls_and_get_makes_a_new_one(pg: Any) -> None:
    pg.query("SELECT 1")
    connectors.close_all()
    with pytest.raises(connectors.ConnectorError, match="closed"):
        pg.query("SELECT 1")
    fresh = connectors.get("warehouse")
    assert fresh is not pg
    assert asyncio.run(fresh.aquery_one("SELECT 3 AS x")) == {"x": 3}


def test_the_profiles_statement_timeout_applies_to_every_call(postgres_cluster: Postgres) -> None:
    connectors.register_profile(
        "strict", kind="postgres", dsn=postgres_cluster.socket_dsn, statement_timeout=0.2
    )
    strict = connectors.get("strict")
    assert strict.query_one("SHOW statement_timeout") == {"statement_timeout": "200ms"}
    with pytest.raises(QueryTimeoutError):
        strict.query("SELECT pg_sleep(2)")
    assert strict.query_one("SELECT pg_sleep(1), 1 AS x", statement_timeout=3)["x"] == 1

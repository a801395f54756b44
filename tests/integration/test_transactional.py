"""Transactional enqueue: a task exists, and wakes a worker, only if the caller commits."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from omnispindle import (
    FailedTransactionError,
    SchemaMissingError,
    TaskNotFoundError,
    ValidationError,
)
from omnispindle._core.batches import CHUNK_SIZE


class Rollback(Exception):
    pass


@pytest.fixture
def listener(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN omnispindle_ready")
        yield conn


def notified(listener, timeout=0.5) -> bool:
    return any(True for _ in listener.notifies(timeout=timeout, stop_after=1))


@pytest.fixture
def engine(dsn):
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    yield engine
    engine.dispose()


def count_tasks(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


def test_psycopg_rollback_leaves_nothing_and_wakes_nobody(client, dsn, conn, listener):
    with psycopg.connect(dsn) as app_conn, pytest.raises(Rollback), app_conn.transaction():
        task_id = client.submit_task("email", {"to": "a@example.com"}, connection=app_conn)
        client.submit_batch([{"task_type": "email"}], connection=app_conn)
        raise Rollback
    assert count_tasks(conn) == 0
    assert not notified(listener)
    with pytest.raises(TaskNotFoundError):
        client.get_task(task_id)


def test_a_refused_long_batch_leaves_the_callers_transaction_usable(client, dsn, conn):
    batch = [{"task_type": "email"}] * (2 * CHUNK_SIZE + 1)
    batch[-1] = {"task_type": ""}
    with psycopg.connect(dsn) as app_conn, app_conn.transaction():
        kept = client.submit_task("email", connection=app_conn)
        with pytest.raises(ValidationError, match=f"batch entry {2 * CHUNK_SIZE}"):
            client.submit_batch(batch, connection=app_conn)
        ids = client.submit_batch(batch[:-1], connection=app_conn)
    assert count_tasks(conn) == 1 + 2 * CHUNK_SIZE
    assert client.get_task(kept)["state"] == client.get_task(ids[-1])["state"] == "pending"


def test_psycopg_commit_inserts_and_wakes(client, dsn, conn, listener):
    with psycopg.connect(dsn) as app_conn, app_conn.transaction():
        task_id = client.submit_task("email", connection=app_conn)
        assert count_tasks(conn) == 0  # invisible until the app commits
    assert notified(listener, timeout=5)
    assert client.get_task(task_id)["state"] == "pending"


def test_sqlalchemy_session_rollback_and_commit(client, engine, conn, start_worker):
    with Session(engine) as session:
        client.submit_task("email", connection=session)
        session.rollback()
    assert count_tasks(conn) == 0
    with Session(engine) as session:
        task_id = client.submit_task("email", {"to": "b@example.com"}, connection=session)
        session.commit()
    start_worker({"email": lambda task: {"sent": task["parameters"]["to"]}})
    assert client.wait_for_task(task_id, timeout=30)["result"] == {"sent": "b@example.com"}


def test_sqlalchemy_connection_joins_the_transaction(client, engine, conn):
    with engine.connect() as sa_conn:
        client.submit_task("email", connection=sa_conn)
        sa_conn.rollback()
        kept = client.submit_task("email", connection=sa_conn)
        sa_conn.commit()
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks")] == [kept]


def test_a_submit_in_the_callers_pipeline_returns_the_id_of_the_task_it_inserted(client, dsn, conn):
    with psycopg.connect(dsn) as app_conn, app_conn.transaction(), app_conn.pipeline():
        app_conn.execute("SELECT 1")  # the app's own statement, still in flight
        task_id = client.submit_task("email", connection=app_conn)
        [batched] = client.submit_batch([{"task_type": "email"}], connection=app_conn)
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks ORDER BY id")] == [
        task_id,
        batched,
    ]


@pytest.mark.parametrize("factory", [psycopg.RawCursor, psycopg.ClientCursor])
def test_a_submit_on_a_connection_with_a_cursor_factory_of_its_own_works(
    client, dsn, conn, factory
):
    with psycopg.connect(dsn, cursor_factory=factory) as app_conn, app_conn.transaction():
        task_id = client.submit_task("email", {"to": "a@example.com"}, connection=app_conn)
        batched = client.submit_batch([{"task_type": "email"}] * 2, connection=app_conn)
        with app_conn.pipeline():
            piped = client.submit_task("email", connection=app_conn)
        assert isinstance(app_conn.cursor(), factory)  # the app's own is left as it was
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks ORDER BY id")] == [
        task_id,
        *batched,
        piped,
    ]
    assert client.get_task(task_id)["parameters"] == {"to": "a@example.com"}


def test_a_submit_in_a_failed_transaction_says_to_roll_it_back(client, dsn, conn):
    with psycopg.connect(dsn) as app_conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            app_conn.execute("SELECT * FROM no_such_app_table")
        with pytest.raises(FailedTransactionError, match="roll it back"):
            client.submit_task("email", connection=app_conn)
        with pytest.raises(FailedTransactionError, match="roll it back"):
            client.submit_batch([{"task_type": "email"}] * 3, connection=app_conn)
        app_conn.rollback()
        task_id = client.submit_task("email", connection=app_conn)
        app_conn.commit()
    assert client.get_task(task_id)["state"] == "pending"


def test_the_apps_own_failed_statement_in_its_pipeline_is_raised_as_it_is(client, dsn):
    with psycopg.connect(dsn) as app_conn, app_conn.pipeline():
        app_conn.execute("SELECT * FROM no_such_app_table")  # in flight, its error unread
        with pytest.raises(psycopg.errors.UndefinedTable, match="no_such_app_table"):
            client.submit_task("email", connection=app_conn)
        with pytest.raises(FailedTransactionError):
            client.submit_task("email", connection=app_conn)
        app_conn.rollback()


def test_a_submit_on_a_database_without_the_schema_says_to_migrate(client, empty_dsn):
    dependent = [{"task_type": "a", "key": "a"}, {"task_type": "b", "dependencies": ["a"]}]
    with psycopg.connect(empty_dsn) as app_conn:
        for submit in (
            lambda: client.submit_task("email", connection=app_conn),
            lambda: client.submit_batch(dependent, connection=app_conn),
        ):
            with pytest.raises(SchemaMissingError, match="run `omnispindle migrate"):
                submit()
            app_conn.rollback()

"""Test databases: a real Postgres for every test that needs one.

The server is ``$OMNISPINDLE_TEST_DSN`` when set, else an embedded pgserver,
else a testcontainers Postgres where a Docker engine runs. The schema is
migrated once into a template database; each test gets a fresh copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from omnispindle import TaskQueue, TaskQueueClient, WorkerClient
from omnispindle._db.notifier import READY_CHANNEL
from omnispindle._db.statements import parse_statements
from omnispindle.migrate import upgrade

from .database_supply import DatabaseSupply

ROOT = Path(__file__).resolve().parent.parent
# The slower suites, which `make slow` runs and `make test` leaves out: the
# docs' code blocks, whole processes started as users start them, and the
# benchmarks' scenarios.
SLOW_PATHS = (
    "tests/docs/",
    "tests/acceptance/",
    "tests/integration/test_bench_scenarios.py",
    "tests/integration/test_bench_peers.py",
)
TEST_STATEMENTS = parse_statements((ROOT / "sql" / "tests" / "databases.sql").read_text())


def _embedded_server_dsn(stack: list) -> str | None:
    try:
        import pgserver
    except ImportError:
        return None
    data_dir = tempfile.mkdtemp(prefix="omnispindle-test-pg-")
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    stack.append(lambda: (server.cleanup(), shutil.rmtree(data_dir, ignore_errors=True)))
    return server.get_uri()


def _container_dsn(stack: list) -> str | None:
    try:
        import docker
        from testcontainers.postgres import PostgresContainer

        docker.from_env().ping()
    except Exception:
        return None
    container = PostgresContainer("postgres:16", driver=None).start()
    stack.append(container.stop)
    return container.get_connection_url()


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A maintenance DSN of the Postgres server the tests use."""
    cleanups: list = []
    dsn = (
        os.environ.get("OMNISPINDLE_TEST_DSN")
        or _embedded_server_dsn(cleanups)
        or _container_dsn(cleanups)
    )
    if not dsn:
        pytest.exit(
            "no Postgres for the tests: set OMNISPINDLE_TEST_DSN, install pgserver "
            "(pip install -e '.[dev]'), or run a Docker engine",
            returncode=3,
        )
    yield dsn
    for cleanup in reversed(cleanups):
        cleanup()


def database_dsn(server: str, name: str) -> str:
    return make_conninfo(server, dbname=name)


def create_database(server: str, name: str, template: str = "template0") -> str:
    """Create database ``name`` from ``template``; return its DSN."""
    statement = sql.SQL(TEST_STATEMENTS["create_database"]).format(
        database=sql.Identifier(name), template=sql.Identifier(template)
    )
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(statement)
    return database_dsn(server, name)


def drop_database(server: str, name: str) -> None:
    statement = sql.SQL(TEST_STATEMENTS["drop_database"]).format(database=sql.Identifier(name))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(statement)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """A database migrated to head, copied for each test."""
    name = unique_name("omnispindle_template")
    upgrade(create_database(server_dsn, name))
    yield name
    drop_database(server_dsn, name)


@pytest.fixture(scope="session")
def database_supply(server_dsn: str, template_database: str) -> Iterator[DatabaseSupply]:
    """Copies of the template, made ahead of the tests that take them."""
    supply = DatabaseSupply(
        server_dsn,
        template_database,
        lambda: unique_name("omnispindle_test"),
        create_database,
        drop_database,
    )
    yield supply
    supply.close()


@pytest.fixture
def dsn(database_supply: DatabaseSupply) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name, database = database_supply.take()
    yield database
    database_supply.give_back(name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database without the schema."""
    name = unique_name("omnispindle_empty")
    yield create_database(server_dsn, name)
    drop_database(server_dsn, name)


@pytest.fixture
def queue(dsn: str) -> Iterator[TaskQueue]:
    task_queue = TaskQueue(dsn=dsn, migrate=False)
    yield task_queue
    task_queue.shutdown()


@pytest.fixture
def client(queue: TaskQueue) -> TaskQueueClient:
    return TaskQueueClient(local_queue=queue, poll_interval=0.2)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for the test's own inspection."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def start_worker(queue: TaskQueue) -> Iterator[Callable[..., WorkerClient]]:
    """Start a WorkerClient in a thread: ``start_worker({"type": fn}, **settings)``."""
    running: list[tuple[WorkerClient, threading.Thread]] = []

    def start(executors: dict, **settings) -> WorkerClient:
        settings.setdefault("poll_interval", 0.2)
        worker = WorkerClient(local_queue=queue, **settings)
        for task_type, fn in executors.items():
            worker.register_task_executor(task_type, fn)
        thread = threading.Thread(target=worker.start, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker

    yield start
    for worker, thread in running:
        worker.stop(timeout=30)
        thread.join(timeout=30)
        assert not thread.is_alive(), "a worker did not stop"


class StatementLog(logging.Handler):
    """Every statement the database seam runs from now on: its name and parameters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.runs: list[tuple[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.runs.append((record.getMessage(), getattr(record, "params", None)))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.runs]


@pytest.fixture
def ready_notices(dsn: str, conn: psycopg.Connection) -> Iterator[Callable[..., list[str]]]:
    """``notices(step)`` runs ``step`` and returns the ready notices it sent: those
    that arrive between markers sent before and after it (notices come in commit
    order)."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {READY_CHANNEL}")

        def up_to(marker: str) -> list[str]:
            conn.execute("SELECT pg_notify(%s, %s)", [READY_CHANNEL, marker])
            seen = []
            for notice in listener.notifies(timeout=10):
                if notice.payload == marker:
                    return seen
                seen.append(notice.payload)
            raise AssertionError(f"the {marker!r} notice never arrived")

        def notices(step) -> list[str]:
            up_to("before")
            step()
            return up_to("after")

        yield notices


@pytest.fixture
def record_statements() -> Iterator[Callable[[], StatementLog]]:
    """``record_statements()`` starts recording the statements run, in any thread."""
    sql_log = logging.getLogger("omnispindle.sql")
    handlers: list[StatementLog] = []
    level = sql_log.level

    def start() -> StatementLog:
        handler = StatementLog()
        handlers.append(handler)
        sql_log.setLevel(logging.DEBUG)
        sql_log.addHandler(handler)
        return handler

    yield start
    for handler in handlers:
        sql_log.removeHandler(handler)
    sql_log.setLevel(level)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the slower suites' tests ``slow``, before ``-m`` selects."""
    for item in items:
        if item.nodeid.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)

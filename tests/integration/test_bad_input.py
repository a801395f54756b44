"""Bad input through the public API: a typed error, and nothing written."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from omnispindle import TaskQueueClient, WorkerClient
from omnispindle._core.batches import CHUNK_SIZE
from omnispindle.errors import (
    ConfigurationError,
    DependencyStateError,
    UnknownDependencyError,
    ValidationError,
)

NAN = float("nan")
INF = float("inf")

# (keyword arguments of submit_task besides task_type, text the error must contain)
BAD_SUBMISSIONS = [
    ({"parameters": [1, 2]}, "parameters"),
    ({"parameters": "{}"}, "parameters"),
    ({"parameters": {"s": {1}}}, "parameters"),
    ({"parameters": {"o": object()}}, "parameters"),
    ({"parameters": {"x": NAN}}, "parameters"),
    ({"parameters": {"s": "a\x00b"}}, "parameters"),
    ({"parameters": {"s": "\ud800"}}, "parameters"),
    ({"priority": "1"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": None}, "priority"),
    ({"priority": 1001}, "priority"),
    ({"priority": -1001}, "priority"),
    ({"max_retries": "3"}, "max_retries"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 101}, "max_retries"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -5}, "timeout"),
    ({"timeout": NAN}, "timeout"),
    ({"timeout": INF}, "timeout"),
    ({"timeout": "10"}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"retry_backoff": -1}, "retry_backoff"),
    ({"retry_backoff": 3601}, "retry_backoff"),
    ({"retry_backoff": "1"}, "retry_backoff"),
    ({"dependencies": "1"}, "dependencies"),
    ({"dependencies": {1: 1}}, "dependencies"),
    ({"dependencies": 1}, "dependencies"),
    ({"dependencies": ["1"]}, "dependencies"),
    ({"dependencies": [True]}, "dependencies"),
    ({"dependencies": [0]}, "dependencies"),
    ({"dependencies": [-4]}, "dependencies"),
    ({"required_capabilities": "gpu"}, "required_capabilities"),
    ({"required_capabilities": [""]}, "required_capabilities"),
    ({"required_capabilities": [5]}, "required_capabilities"),
    ({"required_capabilities": ["\udcff"]}, "required_capabilities"),
    # What enqueue() from SQL refuses too: due past the year 9999, or beyond timestamptz.
    ({"delay": 170e6 * 365.25 * 86400}, "delay .* reaches beyond the year 9999"),
    ({"delay": 10**30}, "delay .* reaches beyond the year 9999"),
    ({"delay": timedelta.max}, "delay .* reaches beyond the year 9999"),
]
BAD_TASK_TYPES = [None, 5, b"x", "", "  ", "x" * 201, "a\x00b", "t\ud800"]

HOSTILE = [
    "x'); DROP TABLE omnispindle.tasks; --",
    "$$; DROP SCHEMA omnispindle CASCADE; $$",
    '"; DELETE FROM omnispindle.task_dependencies; --',
    "' OR '1'='1",
    "\\'; TRUNCATE omnispindle.tasks; --",
    "%(task_types)s",
    "%s %s",
    '{a,"b"}',
    "NULL",
]


def row_counts(conn) -> tuple[int, int]:
    """(tasks, dependency edges) in the database."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM omnispindle.tasks),"
        " (SELECT count(*) FROM omnispindle.task_dependencies)"
    ).fetchone()


def explode(task):
    raise RuntimeError("planned failure")


# ---------------------------------------------------------------- submit_task


@pytest.mark.parametrize("task_type", BAD_TASK_TYPES)
def test_bad_task_type_inserts_nothing(client, conn, task_type):
    with pytest.raises(ValidationError, match="task_type"):
        client.submit_task(task_type)
    assert row_counts(conn) == (0, 0)


@pytest.mark.parametrize(
    ("arguments", "named"),
    BAD_SUBMISSIONS,
    ids=[repr(arguments) for arguments, _ in BAD_SUBMISSIONS],
)
def test_bad_argument_inserts_nothing(client, conn, arguments, named):
    with pytest.raises(ValidationError, match=named):
        client.submit_task("t", **arguments)
    assert row_counts(conn) == (0, 0)


@pytest.mark.parametrize("connection", ["dbname=postgres", object(), 42])
def test_bad_connection_argument_is_a_configuration_error(client, conn, connection):
    with pytest.raises(ConfigurationError, match="connection="):
        client.submit_task("t", connection=connection)
    with pytest.raises(ConfigurationError, match="connection="):
        client.submit_batch([{"task_type": "t"}], connection=connection)
    assert row_counts(conn) == (0, 0)


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("t", "must be a dict"),
        ({"task_type": "t", "colour": "red"}, "colour"),
        ({"parameters": {}}, "task_type"),
        ({"task_type": "t", "priority": 5000}, "priority"),
        ({"task_type": "t", "timeout": 0}, "timeout"),
        ({"task_type": "t", "dependencies": ["1"]}, "dependencies"),
    ],
)
def test_batch_with_one_bad_entry_inserts_nothing(client, conn, entry, named):
    batch = [{"task_type": "a"}, entry, {"task_type": "c"}]
    with pytest.raises(ValidationError, match="batch entry 1") as raised:
        client.submit_batch(batch)
    assert named in str(raised.value)
    assert row_counts(conn) == (0, 0)


@pytest.mark.parametrize("batch", [{"task_type": "t"}, "t", None])
def test_batch_that_is_not_a_list_is_refused(client, conn, batch):
    with pytest.raises(ValidationError, match="batch"):
        client.submit_batch(batch)
    assert row_counts(conn) == (0, 0)


def test_batch_of_1000_is_one_round_trip_in_order(client, conn, record_statements):
    statements = record_statements()
    ids = client.submit_batch([{"task_type": "bulk", "parameters": {"n": n}} for n in range(1000)])
    assert statements.names == ["insert_tasks_bulk"]
    assert len(ids) == 1000 and all(a < b for a, b in itertools.pairwise(ids))
    stored = conn.execute(
        "SELECT id, (parameters ->> 'n')::integer FROM omnispindle.tasks ORDER BY id"
    ).fetchall()
    assert stored == list(zip(ids, range(1000)))
    transactions = conn.execute("SELECT count(DISTINCT xmin::text) FROM omnispindle.tasks")
    assert transactions.fetchone()[0] == 1


LONG_BATCH = 2 * CHUNK_SIZE + 500  # three pipelined statements


def test_long_batch_is_one_transaction_in_order(client, conn):
    ids = client.submit_batch(
        [{"task_type": "bulk", "parameters": {"n": n}} for n in range(LONG_BATCH)]
    )
    assert len(ids) == LONG_BATCH and all(a < b for a, b in itertools.pairwise(ids))
    stored = conn.execute(
        "SELECT id, (parameters ->> 'n')::integer FROM omnispindle.tasks ORDER BY id"
    ).fetchall()
    assert stored == list(zip(ids, range(LONG_BATCH)))
    transactions = conn.execute("SELECT count(DISTINCT xmin::text) FROM omnispindle.tasks")
    assert transactions.fetchone()[0] == 1


def test_long_batch_with_a_bad_entry_in_its_last_chunk_inserts_nothing(client, conn):
    batch = [{"task_type": "bulk"}] * LONG_BATCH
    batch[-3] = {"task_type": "bulk", "priority": 5000}
    with pytest.raises(ValidationError, match=f"batch entry {LONG_BATCH - 3}: priority"):
        client.submit_batch(batch)
    assert row_counts(conn) == (0, 0)


def test_empty_batch_returns_nothing_and_inserts_nothing(client, conn):
    assert client.submit_batch([]) == []
    assert row_counts(conn) == (0, 0)


# ---------------------------------------------------------------- dependencies


def test_unknown_dependency_inserts_nothing(client, conn):
    with pytest.raises(UnknownDependencyError, match="424242"):
        client.submit_task("t", dependencies=[424242])
    assert row_counts(conn) == (0, 0)


def test_unknown_dependency_in_a_batch_inserts_nothing(client, conn):
    parent = client.submit_task("parent")
    batch = [
        {"task_type": "a", "dependencies": [parent]},
        {"task_type": "b", "dependencies": [parent, 424242]},
        {"task_type": "c"},
    ]
    with pytest.raises(UnknownDependencyError, match="424242"):
        client.submit_batch(batch)
    assert row_counts(conn) == (1, 0)


def test_dependency_id_beyond_bigint_is_a_validation_error(client, conn):
    with pytest.raises(ValidationError):
        client.submit_task("t", dependencies=[2**63])
    assert row_counts(conn) == (0, 0)


def test_dependency_on_a_failed_task_is_refused(client, conn, start_worker):
    start_worker({"fails": explode})
    failed = client.submit_task("fails", max_retries=0)
    assert client.wait_for_task(failed, timeout=30)["state"] == "failed"
    with pytest.raises(DependencyStateError, match="failed"):
        client.submit_task("child", dependencies=[failed])
    with pytest.raises(DependencyStateError, match="failed"):
        client.submit_batch([{"task_type": "a"}, {"task_type": "b", "dependencies": [failed]}])
    assert row_counts(conn) == (1, 0)


def test_dependency_on_a_cancelled_task_is_refused(client, conn, start_worker):
    parent = client.submit_task("fails", max_retries=0)
    cancelled = client.submit_task("never-runs", dependencies=[parent])
    start_worker({"fails": explode})
    assert client.wait_for_task(cancelled, timeout=30)["state"] == "cancelled"
    with pytest.raises(DependencyStateError, match="cancelled"):
        client.submit_task("grandchild", dependencies=[cancelled])
    with pytest.raises(DependencyStateError, match="cancelled"):
        client.submit_batch([{"task_type": "a"}, {"task_type": "b", "dependencies": [cancelled]}])
    assert row_counts(conn) == (2, 1)


# ---------------------------------------------------------------- SQL-looking data


def tables_exist(conn) -> bool:
    return conn.execute(
        "SELECT to_regclass('omnispindle.tasks') IS NOT NULL"
        " AND to_regclass('omnispindle.task_dependencies') IS NOT NULL"
        " AND to_regclass('omnispindle.workers') IS NOT NULL"
    ).fetchone()[0]


@pytest.mark.parametrize("text", HOSTILE)
def test_sql_looking_text_is_stored_as_data(client, conn, text):
    parameters = {text: text, "nested": [text, {text: text}]}
    task_id = client.submit_task(text, parameters, required_capabilities=[text, "plain"])
    stored = conn.execute(
        "SELECT task_type, parameters, required_capabilities FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()
    assert stored == (text, parameters, [text, "plain"])
    assert tables_exist(conn)
    assert row_counts(conn) == (1, 0)


def test_sql_looking_text_round_trips_through_a_worker(client, conn, start_worker):
    start_worker(
        {text: (lambda task: {"got": task["parameters"]}) for text in HOSTILE}, capabilities=HOSTILE
    )
    ids = client.submit_batch(
        [
            {"task_type": text, "parameters": {text: text}, "required_capabilities": HOSTILE}
            for text in HOSTILE
        ]
    )
    tasks = client.wait_for_batch(ids, timeout=30)
    assert [t["result"] for t in tasks] == [{"got": {text: text}} for text in HOSTILE]
    assert tables_exist(conn)


# ---------------------------------------------------------------- clients and workers


def test_client_with_both_queue_and_dsn_is_refused(queue):
    with pytest.raises(ConfigurationError):
        TaskQueueClient(local_queue=queue, dsn="x")


def test_client_with_a_non_queue_is_refused():
    with pytest.raises(ConfigurationError, match="local_queue"):
        TaskQueueClient(local_queue="not a queue")


@pytest.mark.parametrize("poll_interval", [0, -1, "1", None])
def test_client_with_bad_poll_interval_is_refused(queue, poll_interval):
    with pytest.raises(ValidationError, match="poll_interval"):
        TaskQueueClient(local_queue=queue, poll_interval=poll_interval)


@pytest.mark.parametrize("concurrency", [0, -1, 1001, "2", 2.0, True])
def test_worker_with_bad_concurrency_is_refused(queue, concurrency):
    with pytest.raises(ValidationError, match="concurrency"):
        WorkerClient(local_queue=queue, concurrency=concurrency)


def test_worker_concurrency_none_is_the_default(queue):
    """None leaves the pool at its default: 1, or an auto-scaled pool's minimum."""
    assert WorkerClient(local_queue=queue, concurrency=None).settings.concurrency == 1
    scaled = WorkerClient(local_queue=queue, min_concurrency=3, max_concurrency=5)
    assert scaled.settings.concurrency == 3


@pytest.mark.parametrize(
    ("task_type", "fn"),
    [
        ("", explode),
        ("   ", explode),
        (None, explode),
        (7, explode),
        ("t", "not callable"),
        ("t", None),
    ],
)
def test_bad_executor_registration_is_refused(queue, task_type, fn):
    worker = WorkerClient(local_queue=queue)
    with pytest.raises(ValidationError):
        worker.register_task_executor(task_type, fn)
    assert worker.task_types == []


@pytest.mark.parametrize("capabilities", [["gpu"], None])
def test_worker_that_can_run_nothing_does_not_start(queue, conn, capabilities):
    worker = WorkerClient(local_queue=queue, capabilities=capabilities)
    if capabilities:
        worker.register_task_executor("cpu", explode)
    with pytest.raises(ConfigurationError, match="can run no task type"):
        worker.start()
    assert conn.execute("SELECT count(*) FROM omnispindle.workers").fetchone()[0] == 0


@pytest.mark.parametrize("task_id", ["1", -1, 0, None, 1.0, True])
def test_get_task_with_a_bad_id_is_refused(client, task_id):
    with pytest.raises(ValidationError, match="task id"):
        client.get_task(task_id)


@pytest.mark.parametrize("timeout", [0, -1, NAN, "5"])
def test_wait_with_a_bad_timeout_is_refused(client, timeout):
    task_id = client.submit_task("t")
    with pytest.raises(ValidationError, match="timeout"):
        client.wait_for_task(task_id, timeout=timeout)

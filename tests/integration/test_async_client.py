"""AsyncTaskQueueClient: the asyncio client, in an ASGI app and on its own."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from fastapi import FastAPI, HTTPException
from psycopg.conninfo import make_conninfo
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from omnispindle import (
    AsyncTaskQueueClient,
    ConfigurationError,
    TaskFailedError,
    TaskNotFoundError,
    ValidationError,
    WaitTimeoutError,
    current_task,
    entry,
)
from omnispindle._core.batches import CHUNK_SIZE
from omnispindle._db.notifier import FINISHED_CHANNEL
from omnispindle.errors import (
    DependencyCycleError,
    DependencyStateError,
    FailedTransactionError,
    SchemaMissingError,
    UnknownDependencyError,
)

from ..acceptance.test_quickstart import python_block, run_script
from .test_bad_input import BAD_SUBMISSIONS, BAD_TASK_TYPES, row_counts


def run(coro, timeout: float = 60):
    """Run a test's coroutine on a fresh event loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(condition, timeout: float = 10):
    """Await until ``condition()`` (maybe a coroutine) is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        value = await value if asyncio.iscoroutine(value) else value
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(0.05)


def task_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


def order_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM orders ORDER BY id")]


# ---------------------------------------------------------------- an ASGI app


@pytest.fixture
def orders(conn):
    conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")


def receipt_executor(dsn):
    """An async executor that sees the order row: it runs only once the app has committed."""

    async def send_receipt(task):
        order = task["parameters"]["order"]
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            row = await (
                await conn.execute("SELECT id FROM orders WHERE id = %s", [order])
            ).fetchone()
        return {"receipt_for": row[0], "attempt": current_task().attempt}

    return send_receipt


def order_app(client: AsyncTaskQueueClient, dsn: str, engine) -> FastAPI:
    """Endpoints that insert an order and submit its task in one transaction of their own."""
    app = FastAPI()

    @app.post("/sqlalchemy/orders/{order_id}")
    async def order_with_sqlalchemy(order_id: int, refuse: bool = False):
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": order_id})
            task_id = await client.submit_task("receipt", {"order": order_id}, connection=session)
            if refuse:
                raise HTTPException(409, "order refused")  # session.begin() rolls back
        task = await client.wait_for_task(task_id, timeout=30, raise_on_error=True)
        return {"task_id": task_id, "result": task["result"]}

    @app.post("/psycopg/orders/{order_id}")
    async def order_with_psycopg(order_id: int, refuse: bool = False):
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
            await conn.execute("INSERT INTO orders (id) VALUES (%s)", [order_id])
            task_id = await client.submit_task("receipt", {"order": order_id}, connection=conn)
            if refuse:
                raise HTTPException(409, "order refused")  # the transaction rolls back
        task = await client.wait_for_task(task_id, timeout=30, raise_on_error=True)
        return {"task_id": task_id, "result": task["result"]}

    return app


async def call_app(dsn: str, requests: list[str]) -> list[httpx.Response]:
    engine = create_async_engine(
        "postgresql+psycopg://",
        async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        poolclass=NullPool,
    )
    try:
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as client:
            transport = httpx.ASGITransport(app=order_app(client, dsn, engine))
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                return [await http.post(path) for path in requests]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("driver", ["sqlalchemy", "psycopg"])
def test_an_endpoint_commits_its_row_and_task_together_then_awaits_the_result(
    dsn, conn, orders, start_worker, driver
):
    start_worker({"receipt": receipt_executor(dsn)})
    [response] = run(call_app(dsn, [f"/{driver}/orders/7"]))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"receipt_for": 7, "attempt": 1}
    assert order_ids(conn) == [7] and task_count(conn) == 1


@pytest.mark.parametrize("driver", ["sqlalchemy", "psycopg"])
def test_a_rolled_back_request_leaves_neither_row_nor_task(dsn, conn, orders, start_worker, driver):
    start_worker({"receipt": receipt_executor(dsn)})
    refused, accepted = run(
        call_app(dsn, [f"/{driver}/orders/8?refuse=true", f"/{driver}/orders/9"])
    )
    assert refused.status_code == 409
    assert accepted.status_code == 200
    assert order_ids(conn) == [9]
    [(parameters,)] = conn.execute("SELECT parameters FROM omnispindle.tasks").fetchall()
    assert parameters == {"order": 9}


def test_a_sqlalchemy_async_connection_joins_the_transaction(dsn, conn):
    async def scenario():
        engine = create_async_engine(
            "postgresql+psycopg://",
            async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
            poolclass=NullPool,
        )
        try:
            async with AsyncTaskQueueClient(dsn=dsn) as client, engine.connect() as sa_conn:
                await client.submit_task("email", connection=sa_conn)
                await client.submit_batch([{"task_type": "email"}], connection=sa_conn)
                assert task_count(conn) == 0  # invisible until committed
                await sa_conn.rollback()
                kept = await client.submit_task("email", connection=sa_conn)
                await sa_conn.commit()
                return kept
        finally:
            await engine.dispose()

    kept = run(scenario())
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks")] == [kept]


def test_a_submit_in_the_callers_async_pipeline_returns_the_id_of_the_task_it_inserted(dsn, conn):
    async def scenario():
        async with (
            AsyncTaskQueueClient(dsn=dsn) as client,
            await psycopg.AsyncConnection.connect(dsn) as app_conn,
            app_conn.transaction(),
            app_conn.pipeline(),
        ):
            await app_conn.execute("SELECT 1")  # the app's own, still in flight
            return await client.submit_task("email", connection=app_conn)

    task_id = run(scenario())
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks")] == [task_id]


@pytest.mark.parametrize("factory", [psycopg.AsyncRawCursor, psycopg.AsyncClientCursor])
def test_an_async_submit_on_a_connection_with_a_cursor_factory_of_its_own_works(dsn, conn, factory):
    async def scenario():
        async with (
            AsyncTaskQueueClient(dsn=dsn) as client,
            await psycopg.AsyncConnection.connect(dsn, cursor_factory=factory) as app_conn,
            app_conn.transaction(),
        ):
            first = await client.submit_task("email", {"to": "a"}, connection=app_conn)
            batched = await client.submit_batch([{"task_type": "email"}], connection=app_conn)
            async with app_conn.pipeline():
                piped = await client.submit_task("email", connection=app_conn)
            return [first, *batched, piped]

    ids = run(scenario())
    assert [row[0] for row in conn.execute("SELECT id FROM omnispindle.tasks ORDER BY id")] == ids


def test_an_async_submit_in_a_failed_transaction_says_to_roll_it_back(dsn, empty_dsn):
    async def scenario():
        async with (
            AsyncTaskQueueClient(dsn=dsn) as client,
            await psycopg.AsyncConnection.connect(dsn) as app_conn,
        ):
            with pytest.raises(psycopg.errors.UndefinedTable):
                await app_conn.execute("SELECT * FROM no_such_app_table")
            with pytest.raises(FailedTransactionError, match="roll it back"):
                await client.submit_task("email", connection=app_conn)
            await app_conn.rollback()
            async with app_conn.pipeline():
                await app_conn.execute("SELECT * FROM no_such_app_table")  # its error unread
                with pytest.raises(psycopg.errors.UndefinedTable, match="no_such_app_table"):
                    await client.submit_task("email", connection=app_conn)
            await app_conn.rollback()
            async with await psycopg.AsyncConnection.connect(empty_dsn) as elsewhere:
                with pytest.raises(SchemaMissingError, match="run `omnispindle migrate"):
                    await client.submit_task("email", connection=elsewhere)

    run(scenario())


# ---------------------------------------------------------------- the client's API


def test_submit_wait_and_get_are_woken_by_notifications(dsn, start_worker):
    async def scenario():
        # A poll interval far beyond the deadlines: only NOTIFY can wake these waits.
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=60) as client:
            task_id = await client.submit_task("double", {"n": 21}, priority=5)
            assert (await client.get_task(task_id))["state"] == "pending"
            start_worker({"double": double})
            task = await client.wait_for_task(task_id, timeout=20)
            ids = [await client.submit_task("double", {"n": n}) for n in range(10)]
            tasks = await asyncio.gather(*(client.wait_for_task(i, timeout=20) for i in ids))
            return task, tasks

    task, tasks = run(scenario())
    assert (task["state"], task["result"], task["priority"]) == ("succeeded", {"n": 42}, 5)
    assert task["dependencies"] == []
    assert [t["result"]["n"] for t in tasks] == [2 * n for n in range(10)]


async def double(task):
    await asyncio.sleep(0)
    return {"n": 2 * task["parameters"]["n"]}


def test_one_listen_connection_serves_every_waiter(dsn, conn, start_worker):
    named = make_conninfo(dsn, application_name="async-waiters")

    async def scenario():
        async with AsyncTaskQueueClient(dsn=named, poll_interval=60) as client:
            ids = await client.submit_batch([{"task_type": "gated"}] * 20)
            waits = [asyncio.create_task(client.wait_for_task(i, timeout=20)) for i in ids]
            await asyncio.wait_for(client.notifier.connected.wait(), 10)
            listeners = count_listeners(conn, "async-waiters")
            start_worker({"gated": double_later}, concurrency=4)
            return listeners, await asyncio.gather(*waits)

    listeners, tasks = run(scenario())
    assert listeners == 1
    assert {t["state"] for t in tasks} == {"succeeded"}


async def double_later(task):
    await asyncio.sleep(0.01)
    return {}


def count_listeners(conn, application_name: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND query ILIKE 'LISTEN%%'",
        [application_name],
    ).fetchone()[0]


def test_waiters_survive_a_killed_listen_connection(dsn, conn, start_worker):
    named = make_conninfo(dsn, application_name="async-victim")

    def listener_pids() -> set[int]:
        return {
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'async-victim' "
                "AND query ILIKE 'LISTEN%'"
            )
        }

    async def scenario():
        async with AsyncTaskQueueClient(dsn=named, poll_interval=60) as client:
            task_id = await client.submit_task("double", {"n": 1})
            waiter = asyncio.create_task(client.wait_for_task(task_id, timeout=30))
            [first] = await eventually(listener_pids)
            conn.execute("SELECT pg_terminate_backend(%s)", [first])
            await eventually(lambda: listener_pids() - {first})
            start_worker({"double": double})
            return await asyncio.wait_for(waiter, 20)

    assert run(scenario())["result"] == {"n": 2}


def test_a_batch_reports_progress_and_returns_records_in_order(dsn, start_worker):
    seen, awaited = [], []

    async def report(done, total):
        awaited.append((done, total))

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as client:
            ids = await client.submit_batch(
                [
                    {"key": "a", "task_type": "double", "parameters": {"n": 1}},
                    {"task_type": "double", "parameters": {"n": 2}, "dependencies": ["a"]},
                    {"task_type": "double", "parameters": {"n": 3}, "dependencies": [entry(1)]},
                ]
            )
            start_worker({"double": double})
            tasks = await client.wait_for_batch(
                list(reversed(ids)), timeout=30, progress=lambda d, t: seen.append((d, t))
            )
            again = await client.wait_for_batch(ids + ids[:1], timeout=30, progress=report)
            return ids, tasks, again

    ids, tasks, again = run(scenario())
    assert [t["task_id"] for t in tasks] == list(reversed(ids))
    assert [t["result"]["n"] for t in tasks] == [6, 4, 2]
    assert tasks[0]["dependencies"] == [ids[1]]
    assert seen[-1] == (3, 3) and seen == sorted(seen)
    assert [t["task_id"] for t in again] == ids + ids[:1]
    assert awaited == [(3, 3)]


def test_wait_timeouts_and_failures(dsn, start_worker):
    async def explode(task):
        raise RuntimeError("planned failure")

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as client:
            never = await client.submit_task("nobody-runs-this")
            with pytest.raises(WaitTimeoutError, match="1 of 1 task"):
                await client.wait_for_task(never, timeout=0.3)
            start_worker({"explode": explode})
            failed = await client.submit_task("explode", max_retries=0)
            task = await client.wait_for_task(failed, timeout=30)
            with pytest.raises(TaskFailedError, match="planned failure"):
                await client.wait_for_task(failed, timeout=30, raise_on_error=True)
            return task

    task = run(scenario())
    assert (task["state"], task["error"]["type"]) == ("failed", "RuntimeError")


def test_streaming_yields_every_partial_then_the_final_record(dsn, start_worker):
    async def chunks(task):
        ctx = current_task()
        for i in range(5):
            ctx.emit({"i": i})
            await asyncio.sleep(0)
        return {"chunks": 5}

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=60) as client:
            task_id = await client.submit_task("chunks")
            start_worker({"chunks": chunks})
            live = [event async for event in client.stream_task(task_id, timeout=30)]
            late = [event async for event in client.stream_task(task_id, timeout=30)]
            return live, late

    live, late = run(scenario())
    assert live == late
    assert [e["data"] for e in live[:-1]] == [{"i": i} for i in range(5)]
    assert [e["seq"] for e in live[:-1]] == [1, 2, 3, 4, 5]
    assert {e["attempt"] for e in live[:-1]} == {1}
    assert live[-1]["kind"] == "final" and live[-1]["task"]["result"] == {"chunks": 5}


def test_a_stream_is_not_woken_by_the_partials_of_other_tasks(dsn, start_worker, record_statements):
    async def chunks(task):
        for i in range(50):
            current_task().emit({"i": i})
            await asyncio.sleep(0)
        return {"chunks": 50}

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=60) as client:
            idle_id = await client.submit_task("nobody-runs-this")
            idle = asyncio.ensure_future(_collect(client.stream_task(idle_id, timeout=60)))
            await eventually(lambda: client.notifier.connected.is_set())
            statements = record_statements()
            start_worker({"chunks": chunks})
            busy = [e async for e in client.stream_task(await client.submit_task("chunks"))]
            await client.cancel_task(idle_id)
            return idle_id, busy, await idle, statements

    idle_id, busy, idle, statements = run(scenario())
    assert len(busy) == 51 and idle[-1]["task"]["state"] == "cancelled"
    reads_of_idle = [
        p for name, p in statements.runs if name == "read_stream" and p["id"] == idle_id
    ]
    assert len(reads_of_idle) <= 5  # its own wake-ups: the cancel, not the other's 50 partials


async def _collect(events):
    return [event async for event in events]


def test_streaming_an_unfinished_task_times_out(dsn):
    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.1) as client:
            task_id = await client.submit_task("nobody-runs-this")
            with pytest.raises(WaitTimeoutError):
                async for _ in client.stream_task(task_id, timeout=0.3):
                    pass

    run(scenario())


def test_cancel_cascades_and_reports_like_the_sync_client(dsn, client, start_worker):
    async def scenario(async_client):
        parent = await async_client.submit_task("job")
        child = await async_client.submit_task("job", dependencies=[parent])
        outcome = await async_client.cancel_task(parent, reason="no longer needed")
        return parent, child, outcome, await async_client.get_task(child)

    async def finished_one(async_client):
        start_worker({"job": lambda task: {"ok": True}})
        done = await async_client.submit_task("job")
        await async_client.wait_for_task(done, timeout=30)
        return done, await async_client.cancel_task(done)

    async def both():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as async_client:
            first = await scenario(async_client)
            second = await finished_one(async_client)
            with pytest.raises(TaskNotFoundError):
                await async_client.cancel_task(424242)
            return first, second

    (parent, _child, outcome, dependent), (done, unchanged) = run(both())
    assert outcome == {
        "task_id": parent,
        "state": "cancelled",
        "cancelled": True,
        "message": f"task {parent} cancelled",
    }
    assert (dependent["state"], dependent["cancel_reason"]) == (
        "cancelled",
        f"dependency {parent} cancelled",
    )
    assert client.get_task(parent)["cancel_reason"] == "no longer needed"
    assert unchanged == {
        "task_id": done,
        "state": "succeeded",
        "cancelled": False,
        "message": f"task {done} already succeeded; nothing to cancel",
    }


def test_an_idempotency_key_yields_one_task(dsn, conn):
    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            first = await client.submit_task("charge", idempotency_key="order-1")
            again = await client.submit_task("charge", idempotency_key="order-1")
            racing = await asyncio.gather(
                *(client.submit_task("charge", idempotency_key="race") for _ in range(8))
            )
            [batched] = await client.submit_batch(
                [{"task_type": "charge", "idempotency_key": "order-1"}]
            )
            return first, again, set(racing), batched

    first, again, racing, batched = run(scenario())
    assert first == again == batched
    assert len(racing) == 1
    assert task_count(conn) == 2


def test_delay_and_run_at_hold_a_task_back(dsn, start_worker):
    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn, poll_interval=0.2) as client:
            start_worker({"t": double_later})
            delayed = await client.submit_task("t", delay=1.0)
            at = await client.submit_task(
                "t", run_at=datetime.now(timezone.utc) + timedelta(milliseconds=500)
            )
            early = await client.get_task(delayed)
            return early, await client.wait_for_batch([delayed, at], timeout=30)

    early, (delayed, at) = run(scenario())
    assert early["state"] == "pending"
    assert delayed["started_at"] - delayed["created_at"] >= timedelta(seconds=0.9)
    assert at["started_at"] - at["created_at"] >= timedelta(seconds=0.4)
    assert {delayed["state"], at["state"]} == {"succeeded"}


# ---------------------------------------------------------------- bad input


def sync_error(call):
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the sync client accepted it")


@pytest.mark.parametrize(
    "arguments",
    [
        *[{"task_type": "t", **arguments} for arguments, _ in BAD_SUBMISSIONS],
        *[{"task_type": task_type} for task_type in BAD_TASK_TYPES],
        {"task_type": "t", "dependencies": [424242]},
        {"task_type": "t", "dependencies": [2**63]},
        {"task_type": "t", "delay": -1},
        {"task_type": "t", "run_at": datetime(2030, 1, 1)},
        {"task_type": "t", "idempotency_key": ""},
    ],
    ids=repr,
)
def test_bad_input_raises_what_the_sync_client_raises_and_inserts_nothing(
    dsn, client, conn, arguments
):
    expected = sync_error(lambda: client.submit_task(**arguments))

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn) as async_client:
            with pytest.raises(type(expected)) as raised:
                await async_client.submit_task(**arguments)
            return raised.value

    assert str(run(scenario())) == str(expected)
    assert row_counts(conn) == (0, 0)


def test_bad_batches_and_lookups_raise_typed_errors(dsn, conn):
    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            with (
                psycopg.connect(dsn) as sync_conn,
                pytest.raises(
                    ConfigurationError, match="connection= takes a psycopg AsyncConnection"
                ),
            ):
                await client.submit_task("t", connection=sync_conn)
            with pytest.raises(ConfigurationError, match="connection="):
                await client.submit_batch([{"task_type": "t"}], connection=object())
            with pytest.raises(ValidationError, match="batch entry 1"):
                await client.submit_batch(
                    [{"task_type": "a"}, {"task_type": "t", "priority": 5000}]
                )
            with pytest.raises(DependencyCycleError):
                await client.submit_batch(
                    [
                        {"key": "a", "task_type": "t", "dependencies": ["b"]},
                        {"key": "b", "task_type": "t", "dependencies": ["a"]},
                    ]
                )
            with pytest.raises(UnknownDependencyError, match="424242"):
                await client.submit_batch(
                    [{"task_type": "a"}, {"task_type": "b", "dependencies": [424242]}]
                )
            assert await client.submit_batch([]) == []
            with pytest.raises(ValidationError, match="task id"):
                await client.get_task("1")
            with pytest.raises(TaskNotFoundError):
                await client.get_task(424242)
            with pytest.raises(TaskNotFoundError, match="424242"):
                await client.wait_for_batch([424242], timeout=1)
            with pytest.raises(ValidationError, match="timeout"):
                await client.wait_for_task(1, timeout=-1)
            with pytest.raises(ValidationError, match="reason"):
                await client.cancel_task(1, reason=5)
            with pytest.raises(ValidationError, match="timeout"):
                client.stream_task(1, timeout=0)
            with pytest.raises(TaskNotFoundError):
                async for _ in client.stream_task(424242, timeout=1):
                    pass

    run(scenario())
    assert row_counts(conn) == (0, 0)


def test_a_long_batch_goes_in_whole_and_in_order_or_not_at_all(dsn, conn):
    size = 2 * CHUNK_SIZE + 10
    bad = [{"task_type": "t"}] * size
    bad[CHUNK_SIZE + 1] = {"task_type": "t", "timeout": 0}

    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            with pytest.raises(ValidationError, match=f"batch entry {CHUNK_SIZE + 1}: timeout"):
                await client.submit_batch(bad)
            assert row_counts(conn) == (0, 0)
            return await client.submit_batch(
                [{"task_type": "t", "parameters": {"n": n}} for n in range(size)]
            )

    ids = run(scenario())
    stored = conn.execute(
        "SELECT id, (parameters ->> 'n')::integer FROM omnispindle.tasks ORDER BY id"
    ).fetchall()
    assert stored == list(zip(ids, range(size)))


def test_a_dependency_that_was_cancelled_is_refused(dsn, conn):
    async def scenario():
        async with AsyncTaskQueueClient(dsn=dsn) as client:
            parent = await client.submit_task("t")
            await client.cancel_task(parent)
            with pytest.raises(DependencyStateError):
                await client.submit_task("child", dependencies=[parent])

    run(scenario())
    assert row_counts(conn) == (1, 0)


# ---------------------------------------------------------------- set-up


def test_a_database_without_the_schema_is_refused_and_left_alone(empty_dsn):
    async def scenario():
        client = AsyncTaskQueueClient(dsn=empty_dsn)
        with pytest.raises(SchemaMissingError, match="omnispindle migrate"):
            await client.open()
        await client.close()

    run(scenario())
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('omnispindle')").fetchone()[0] is None


def test_construction_and_use_before_open(dsn, queue, monkeypatch):
    monkeypatch.delenv("OMNISPINDLE_DSN", raising=False)
    with pytest.raises(ConfigurationError, match="OMNISPINDLE_DSN"):
        AsyncTaskQueueClient()
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncTaskQueueClient(dsn=dsn, local_queue=queue)
    with pytest.raises(ConfigurationError, match="TaskQueue"):
        AsyncTaskQueueClient(local_queue="queue")
    with pytest.raises(ValidationError, match="poll_interval"):
        AsyncTaskQueueClient(dsn=dsn, poll_interval=0)
    with pytest.raises(ValidationError, match="pool_size"):
        AsyncTaskQueueClient(dsn=dsn, pool_size=0)
    assert AsyncTaskQueueClient(local_queue=queue).dsn == queue.dsn
    monkeypatch.setenv("OMNISPINDLE_DSN", dsn)
    assert AsyncTaskQueueClient().dsn == dsn

    async def unopened():
        with pytest.raises(ConfigurationError, match="not open"):
            await AsyncTaskQueueClient(dsn=dsn).get_task(1)

    run(unopened())


@pytest.mark.parametrize("call", ["wait_for_task", "stream_task"])
@pytest.mark.parametrize("when", ["before open", "after close"])
def test_a_wait_on_a_client_not_open_leaves_no_listen_connection(dsn, call, when):
    """A wait or stream on a client not yet opened, or already closed, started
    the LISTEN task, whose connection nothing closed until the loop ended, then
    said the client was not open; it says so now and opens nothing."""

    async def scenario():
        client = AsyncTaskQueueClient(dsn=dsn)
        if when == "after close":
            async with client:
                task_id = await client.submit_task("t")
        else:
            task_id = 1
        with pytest.raises(ConfigurationError, match="not open"):
            if call == "wait_for_task":
                await client.wait_for_task(task_id, timeout=5)
            else:
                async for _ in client.stream_task(task_id, timeout=5):
                    pass
        listening = [t for t in asyncio.all_tasks() if t.get_name() == "omnispindle-async-notifier"]
        assert listening == []

    run(scenario())


def test_close_ends_every_wait_under_way_at_once(dsn):
    """Coroutines waiting when the client closed went on waiting until their next
    poll (30 s with poll_interval=30) before they raised; they raise
    ConfigurationError at once now."""

    async def stream(client, task_id):
        return [event async for event in client.stream_task(task_id, timeout=60)]

    async def scenario():
        client = await AsyncTaskQueueClient(dsn=dsn, poll_interval=30).open()
        task_id = await client.submit_task("t")
        waits = [
            asyncio.create_task(client.wait_for_task(task_id, timeout=60)),
            asyncio.create_task(client.wait_for_batch([task_id], timeout=60)),
            asyncio.create_task(stream(client, task_id)),
        ]
        await eventually(lambda: client.notifier.subscriptions(FINISHED_CHANNEL) == len(waits))
        await asyncio.wait_for(client.notifier.connected.wait(), 10)
        await client.close()
        done, _ = await asyncio.wait(waits, timeout=10)
        assert len(done) == len(waits)
        assert [type(wait.exception()) for wait in waits] == [ConfigurationError] * len(waits)

    run(scenario())


def let_go(held: list) -> None:
    """Drop the only reference to what ``held`` holds, and collect it."""
    held.clear()
    gc.collect()


def test_a_client_let_go_open_warns_and_closes_its_connections(dsn, conn):
    """Its LISTEN task held the notifier, not the client: the connection stayed open
    until the loop ended, unnoticed."""

    def sessions() -> int:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]

    async def scenario():
        client = await AsyncTaskQueueClient(dsn=dsn).open()
        task_id = await client.submit_task("t")
        with pytest.raises(WaitTimeoutError):  # starts the LISTEN task
            await client.wait_for_task(task_id, timeout=0.5)
        assert sessions() >= 2
        held = [client]
        del client
        with pytest.warns(ResourceWarning, match=r"without `await client.close\(\)`"):
            let_go(held)
        await eventually(lambda: sessions() == 0)

    run(scenario())


def test_a_closed_client_let_go_says_nothing(dsn):
    async def scenario():
        client = await AsyncTaskQueueClient(dsn=dsn).open()
        await client.close()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            del client
            gc.collect()

    run(scenario())


# ---------------------------------------------------------------- the README


def test_the_readme_asyncio_example_runs(tmp_path, dsn):
    done = run_script(python_block("### asyncio"), tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'title': 'EXAMPLE.ORG'}\n"


def test_a_client_whose_loop_ended_says_so_and_closes_from_another_loop(dsn):
    client = AsyncTaskQueueClient(dsn=dsn)

    async def open_and_submit():
        await client.open()
        task_id = await client.submit_task("t")
        with pytest.raises(WaitTimeoutError):  # starts the LISTEN task on this loop
            await client.wait_for_task(task_id, timeout=0.2)
        return task_id

    task_id = asyncio.run(open_and_submit())

    async def use_then_close_and_reopen():
        with pytest.raises(ConfigurationError, match="another event loop"):
            await client.get_task(task_id)
        await client.close()  # the loop it was opened on is gone: nothing to await there
        async with client:
            return (await client.get_task(task_id))["state"]

    assert run(use_then_close_and_reopen()) == "pending"

"""Through PgBouncer in transaction mode: prepared statements would land on
another server connection, and LISTEN would lose its session (issue 17, finding 1)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from omnispindle import (
    AsyncTaskQueueClient,
    ConfigurationError,
    TaskQueue,
    TaskQueueClient,
    WorkerClient,
    current_task,
    entry,
)

from ..pgbouncer import pgbouncer

DEADLINE = 60
POLL = 0.3


@pytest.fixture(scope="module")
def bouncer(server_dsn) -> Iterator[str]:
    with pgbouncer(server_dsn) as through:
        yield through


@pytest.fixture(params=["direct LISTEN", "poll only"])
def pooled_queue(request, bouncer, dsn) -> Iterator[TaskQueue]:
    pooled = make_conninfo(bouncer, dbname=conninfo_to_dict(dsn)["dbname"])
    listen_dsn = dsn if request.param == "direct LISTEN" else None
    queue = TaskQueue(pooled, pooler=True, listen_dsn=listen_dsn)
    yield queue
    queue.shutdown()


def streaming(task):
    for n in range(3):
        current_task().emit({"n": n})
    return {"streamed": 3}


def flaky(task):
    if task["attempt"] == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": task["attempt"]}


def test_the_core_paths_run_through_pgbouncer_in_transaction_mode(pooled_queue):
    client = TaskQueueClient(local_queue=pooled_queue, poll_interval=POLL)
    worker = WorkerClient(local_queue=pooled_queue, poll_interval=POLL, concurrency=8)
    worker.register_task_executor("double", lambda task: {"n": task["parameters"]["n"] * 2})
    worker.register_task_executor(
        "sum", lambda task: {"n": sum(r["n"] for r in task["dependency_results"].values())}
    )
    worker.register_task_executor("flaky", flaky)
    worker.register_task_executor("stream", streaming)
    running = threading.Thread(target=worker.start, daemon=True)
    running.start()
    try:
        # Many rounds of the same statements: each would be prepared after a few.
        ids = client.submit_batch(
            [{"task_type": "double", "parameters": {"n": n}} for n in range(200)]
        )
        records = client.wait_for_batch(ids, timeout=DEADLINE)
        assert [r["result"]["n"] for r in records] == [2 * n for n in range(200)]
        for _ in range(10):
            one = client.submit_task("double", {"n": 1})
            assert client.wait_for_task(one, timeout=DEADLINE)["result"] == {"n": 2}
        dag = client.submit_batch(
            [
                {"task_type": "double", "parameters": {"n": 1}},
                {"task_type": "double", "parameters": {"n": 3}},
                {"task_type": "sum", "dependencies": [entry(0), entry(1)]},
            ]
        )
        assert client.wait_for_task(dag[2], timeout=DEADLINE)["result"] == {"n": 8}
        retried = client.submit_task("flaky", retry_backoff=0.01)
        assert client.wait_for_task(retried, timeout=DEADLINE)["result"] == {"attempt": 2}
        failed = client.submit_task("flaky", max_retries=0)
        assert client.wait_for_task(failed, timeout=DEADLINE)["state"] == "failed"
        client.retry_task(failed)
        assert client.wait_for_task(failed, timeout=DEADLINE)["result"] == {"attempt": 2}
        later = client.submit_task("double", {"n": 1}, delay=3600)
        assert client.cancel_task(later)
        streamed = client.submit_task("stream")
        events = list(client.stream_task(streamed, timeout=DEADLINE))
        assert [e["data"] for e in events if e["kind"] == "partial"] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
    finally:
        worker.stop(timeout=DEADLINE)
        running.join(DEADLINE)


def test_an_idle_worker_starts_a_task_soon_through_the_pooler(pooled_queue, request):
    started = threading.Event()
    worker = WorkerClient(local_queue=pooled_queue, poll_interval=POLL)
    worker.register_task_executor("t", lambda task: started.set() or {})
    running = threading.Thread(target=worker.start, daemon=True)
    running.start()
    try:
        client = TaskQueueClient(local_queue=pooled_queue, poll_interval=POLL)
        client.wait_for_task(client.submit_task("t"), timeout=DEADLINE)  # the worker is idle now
        latencies = []
        for _ in range(5):
            started.clear()
            submitted = time.monotonic()
            client.submit_task("t")
            assert started.wait(DEADLINE)
            latencies.append(time.monotonic() - submitted)
        # Woken by LISTEN at once; by its poll interval alone, within it.
        bound = 0.5 if pooled_queue.listen_dsn else POLL + 0.5
        assert max(latencies) < bound, latencies
    finally:
        worker.stop(timeout=DEADLINE)
        running.join(DEADLINE)


def served_by_the_command(monkeypatch, *options: str) -> Any:
    """The app ``omnispindle dashboard`` would serve with these options."""
    import uvicorn

    from omnispindle.cli.main import main

    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: served.append(app))
    assert main(["dashboard", *options]) == 0
    return served[0]


@pytest.mark.parametrize("made_by", ["app", "command line"])
def test_the_dashboard_behind_pgbouncer_keeps_its_pages_when_connections_change_hands(
    bouncer, dsn, monkeypatch, made_by
):
    import psycopg
    from starlette.testclient import TestClient

    from omnispindle.dashboard import app

    pooled = make_conninfo(bouncer, dbname=conninfo_to_dict(dsn)["dbname"])
    with TaskQueueClient(dsn=dsn) as client:
        task_id = client.submit_task("shown")
    if made_by == "app":
        dashboard = app(dsn=pooled, pooler=True)
    else:
        dashboard = served_by_the_command(monkeypatch, "--dsn", pooled, "--pooler", "--token", "t")
    pages = ("/", "/tasks", f"/tasks/{task_id}", "/workers", "/schedules")
    with TestClient(dashboard, raise_server_exceptions=False) as web:
        web.headers["Authorization"] = "Bearer t"
        for _ in range(10):  # the refreshes of a page left open
            assert {page: web.get(page).status_code for page in pages} == dict.fromkeys(pages, 200)
        # Another client's transaction holds the server connection the dashboard
        # used last, as a busy fleet's would: the next pages run on another one.
        with psycopg.connect(pooled, prepare_threshold=None) as other:
            other.execute("SELECT 1")
            assert {page: web.get(page).status_code for page in pages} == dict.fromkeys(pages, 200)


def held_elsewhere(pooled: str) -> psycopg.Connection:
    """Another client's open transaction, on the server connection a client used last,
    as a busy fleet's would: the client's next statement runs on another one."""
    other = psycopg.connect(pooled, prepare_threshold=None)
    other.execute("SELECT 1")
    return other


def test_a_client_given_a_dsn_behind_pgbouncer_prepares_nothing(bouncer, dsn):
    pooled = make_conninfo(bouncer, dbname=conninfo_to_dict(dsn)["dbname"])
    with TaskQueueClient(dsn=pooled, pooler=True, listen_dsn=dsn) as client:
        assert client.queue.listen_dsn == dsn
        task_id = client.submit_task("shown")
        for _ in range(10):  # each statement would be prepared after a few runs
            client.get_task(task_id)
        with held_elsewhere(pooled):
            assert client.get_task(task_id)["state"] == "pending"

    async def asynchronously() -> str:
        async with AsyncTaskQueueClient(dsn=pooled, pooler=True, listen_dsn=dsn) as client:
            for _ in range(10):
                await client.get_task(task_id)
            with held_elsewhere(pooled):
                return (await client.get_task(task_id))["state"]

    assert asyncio.run(asyncio.wait_for(asynchronously(), DEADLINE)) == "pending"


def test_a_client_given_a_queue_takes_its_pooler_setting_and_refuses_another(pooled_queue):
    for client in (TaskQueueClient, AsyncTaskQueueClient):
        for setting in ("pooler", "listen_dsn", "read_dsn"):
            value = True if setting == "pooler" else pooled_queue.dsn
            with pytest.raises(ConfigurationError, match=rf"TaskQueue\(\.\.\., {setting}="):
                client(local_queue=pooled_queue, **{setting: value})

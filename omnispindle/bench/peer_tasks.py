"""Tasks the peer benchmark's worker processes run, for procrastinate and pgqueuer.

A worker learns its database from ``OMNISPINDLE_BENCH_PEER_DSN`` and, for pgqueuer,
its index from ``OMNISPINDLE_BENCH_PEER_WORKER``. Each peer is imported only by
the worker that needs it. ``python -m omnispindle.bench.peer_tasks BATCH MAX_TASKS``
runs a pgqueuer worker the way ``pgq run`` does.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from omnispindle.bench.queries import statement

DSN_ENV = "OMNISPINDLE_BENCH_PEER_DSN"
WORKER_ENV = "OMNISPINDLE_BENCH_PEER_WORKER"
NOOP = "noop"
NAP = "nap"
LATENCY = "latency"
# The steady scenario's task: a millisecond's wait, as on I/O.
NAP_SECONDS = 0.001

_latency_conn: psycopg.AsyncConnection | None = None


def ready_task(index: int | str) -> str:
    """The task only worker ``index`` handles: its completion shows that worker is consuming."""
    return f"ready{index}"


async def record_start(sample: int) -> None:
    """Write when the latency probe ``sample`` started; the clock is read before any I/O."""
    global _latency_conn
    started = time.time()
    if _latency_conn is None:
        _latency_conn = await psycopg.AsyncConnection.connect(os.environ[DSN_ENV], autocommit=True)
    await _latency_conn.execute(
        statement("peer_record_latency"), {"id": sample, "started": started}
    )


async def _noop(*_: Any) -> None:
    return None


async def _nap(*_: Any) -> None:
    await asyncio.sleep(NAP_SECONDS)


async def _procrastinate_latency(sample: int) -> None:
    await record_start(sample)


def procrastinate_app(dsn: str) -> Any:
    """A procrastinate app on ``dsn`` with the no-op and the latency probe."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    app.task(name=NOOP)(_noop)
    app.task(name=NAP)(_nap)
    app.task(name=LATENCY)(_procrastinate_latency)
    return app


async def _pgqueuer_latency(job: Any) -> None:
    await record_start(int(job.payload))


@asynccontextmanager
async def pgqueuer_manager() -> AsyncIterator[Any]:
    """The factory the pgqueuer worker runs: a QueueManager with this worker's tasks, over
    asyncpg as ``pgq run``'s own factory prefers, else over psycopg."""
    from pgqueuer import Queries, QueueManager

    async with pgqueuer_driver(os.environ[DSN_ENV]) as driver:
        manager = QueueManager(Queries(driver))
        manager.entrypoint(NOOP)(_noop)
        manager.entrypoint(NAP)(_nap)
        manager.entrypoint(ready_task(os.environ[WORKER_ENV]))(_noop)
        manager.entrypoint(LATENCY)(_pgqueuer_latency)
        yield manager


@asynccontextmanager
async def pgqueuer_driver(dsn: str) -> AsyncIterator[Any]:
    """pgqueuer's asyncpg driver when asyncpg is installed, else its psycopg driver."""
    from pgqueuer import AsyncpgDriver, PsycopgDriver

    try:
        import asyncpg
    except ImportError:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            yield PsycopgDriver(conn)
        return
    conn = await asyncpg.connect(**asyncpg_arguments(dsn))
    try:
        yield AsyncpgDriver(conn)
    finally:
        await conn.close()


def asyncpg_arguments(dsn: str) -> dict[str, Any]:
    """``asyncpg.connect`` arguments for a libpq DSN, which asyncpg cannot parse unless a URL."""
    params = conninfo_to_dict(dsn)
    arguments: dict[str, Any] = {
        "host": params.get("host"),
        "port": params.get("port"),
        "user": params.get("user"),
        "password": params.get("password"),
        "database": params.get("dbname"),
        "ssl": params.get("sslmode"),
    }
    if "application_name" in params:
        arguments["server_settings"] = {"application_name": params["application_name"]}
    if arguments["port"] is not None:
        arguments["port"] = int(arguments["port"])
    return {key: value for key, value in arguments.items() if value is not None}


def run_pgqueuer_worker(batch_size: int, max_concurrent_tasks: int) -> None:
    """What ``pgq run ... --batch-size B --max-concurrent-tasks M`` does, through pgqueuer's
    programmatic entry point: its 1.6 CLI fails to parse its own ``--log-level`` default."""
    import pgqueuer

    worker = pgqueuer.run(
        pgqueuer_manager, batch_size=batch_size, max_concurrent_tasks=max_concurrent_tasks
    )
    try:
        import uvloop  # the CLI's event loop where installed
    except ImportError:
        asyncio.run(worker)
    else:
        uvloop.run(worker)


def __getattr__(name: str) -> Any:
    # procrastinate's CLI loads ``--app`` as a module attribute; building it on
    # access keeps procrastinate unimported in pgqueuer's workers.
    if name == "worker_app":
        return procrastinate_app(os.environ[DSN_ENV])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    run_pgqueuer_worker(int(sys.argv[1]), int(sys.argv[2]))

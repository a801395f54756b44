"""Typed statements on workers (``sql/queries/workers.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from omnispindle._db.query import Query, column, first, nothing, rows, value
from omnispindle._db.rows import HeldLease, ProcessBacklog, WorkerRow
from omnispindle._db.statements import RUNTIME


def register_worker(
    *,
    name: str,
    host: str,
    pid: int,
    capabilities: Sequence[str],
    task_types: Sequence[str],
    concurrency: int,
    version: str,
    lease_timeout: float,
) -> Query[UUID]:
    """Add a worker to the membership list; its id."""
    return Query(
        RUNTIME["register_worker"],
        {
            "name": name,
            "host": host,
            "pid": pid,
            "capabilities": list(capabilities),
            "task_types": list(task_types),
            "concurrency": concurrency,
            "version": version,
            "lease_timeout": lease_timeout,
        },
        value("id"),
    )


def database_clock() -> Query[float]:
    """The database's clock, in seconds since the epoch."""
    return Query(RUNTIME["database_clock"], {}, value("epoch"))


def heartbeat(
    *,
    worker_id: UUID,
    lease_seconds: float,
    ids: Sequence[int],
    tokens: Sequence[str],
    concurrency: int,
) -> Query[list[HeldLease]]:
    """Mark the worker alive with its current ``concurrency``, and extend the leases
    it still holds; those it holds.

    Lists, not literals (as ``cancel_requests``): a beat comes every few seconds.
    """
    return Query(
        RUNTIME["heartbeat"],
        {
            "worker_id": worker_id,
            "concurrency": concurrency,
            "lease_seconds": lease_seconds,
            "ids": list(ids),
            "tokens": list(tokens),
        },
        rows,
    )


def stop_worker(worker_id: UUID) -> Query[None]:
    """Mark a worker stopped."""
    return Query(RUNTIME["stop_worker"], {"worker_id": worker_id}, nothing)


def mark_dead_workers(*, dead_after: float, limit: int) -> Query[list[UUID]]:
    """Declare dead up to ``limit`` workers silent for ``dead_after`` seconds; their ids."""
    return Query(
        RUNTIME["mark_dead_workers"], {"dead_after": dead_after, "limit": limit}, column("id")
    )


def forget_stopped_workers(*, keep_seconds: float, limit: int) -> Query[list[UUID]]:
    """Delete up to ``limit`` workers stopped or dead for over ``keep_seconds``; their ids."""
    return Query(
        RUNTIME["forget_stopped_workers"],
        {"keep_seconds": keep_seconds, "limit": limit},
        column("id"),
    )


def list_workers() -> Query[list[WorkerRow]]:
    """Every registered worker with its health."""
    return Query(RUNTIME["list_workers"], None, rows)


def process_backlog(*, host: str, pids: Sequence[int], limit: int) -> Query[ProcessBacklog]:
    """The ready tasks (up to ``limit``) the workers with ``pids`` on ``host`` could
    claim, and the tasks they run: what a supervisor scales its processes on."""
    return Query(
        RUNTIME["process_backlog"], {"host": host, "pids": list(pids), "limit": limit}, first
    )


def take_maintenance(
    *, duty: str, holder: UUID, host: str, pid: int, seconds: float
) -> Query[bool]:
    """Take or renew ``duty``'s lease for ``seconds``; whether ``holder`` holds it now."""
    return Query(
        RUNTIME["take_maintenance"],
        {"duty": duty, "holder": holder, "host": host, "pid": pid, "seconds": seconds},
        value("held"),
    )


def give_up_maintenance(holder: UUID) -> Query[None]:
    """Free every maintenance lease ``holder`` holds."""
    return Query(RUNTIME["give_up_maintenance"], {"holder": holder}, nothing)

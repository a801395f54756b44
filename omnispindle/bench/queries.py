"""The bench wing's own statements (``sql/bench``), typed as the runtime's are.

They watch and clear only the benchmark's own tasks; none of them ships among
the runtime's statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from typing_extensions import LiteralString

from omnispindle._db.query import Query, first_or_none, nothing, value
from omnispindle._db.statements import Statements, data_dir

BENCH = Statements(data_dir("sql") / "bench")


def statement(name: str) -> LiteralString:
    """The text of a bench statement, for a peer's own connection.

    Raises:
        KeyError: no bench statement has that name.
    """
    return BENCH[name].text


def vacuum_tasks() -> Query[None]:
    """Vacuum and analyse the tasks tables, so every sample starts alike."""
    return Query(BENCH["vacuum_tasks"], None, nothing)


def unfinished(first: int, last: int) -> Query[int]:
    """How many tasks with ids from ``first`` to ``last`` have not finished."""
    return Query(BENCH["bench_unfinished"], {"first": first, "last": last}, value("count"))


def finished(task_id: int) -> Query[bool]:
    """Whether a task has finished; one that is gone was pruned, so it had."""
    return Query(
        BENCH["bench_finished"],
        {"id": task_id},
        lambda found: not found or bool(found[0]["finished"]),
    )


def span_seconds(first: int, last: int) -> Query[float]:
    """Seconds from the first start to the last finish of a range of tasks."""
    return Query(BENCH["bench_span"], {"first": first, "last": last}, value("seconds"))


def delete_type(task_type: str) -> Query[None]:
    """Delete the benchmark's tasks of one type."""
    return Query(BENCH["bench_delete_type"], {"task_type": task_type}, nothing)


def delete_pending(task_type: str) -> Query[None]:
    """Delete the benchmark's tasks of one type that have not started."""
    return Query(BENCH["bench_delete_pending"], {"task_type": task_type}, nothing)


def table_bytes() -> Query[int]:
    """The tasks table's size with its indexes and TOAST."""
    return Query(BENCH["bench_table_bytes"], None, value("bytes"))


def waiting(task_type: str) -> Query[int]:
    """How many tasks of a type wait to start."""
    return Query(BENCH["bench_waiting"], {"task_type": task_type}, value("count"))


def wal_position() -> Query[int]:
    """Where the server's WAL ends, in bytes."""
    return Query(BENCH["bench_wal_position"], None, value("bytes"))


def steady_figures(first: int, last: int, grace: float) -> Query[dict[str, Any]]:
    """A steady run's counts, feed length and submission-to-start delays."""
    return Query(
        BENCH["bench_steady"],
        {"first": first, "last": last, "grace": grace},
        lambda found: dict(found[0]),
    )


def take_snapshot() -> Query[None]:
    """The first statement of a REPEATABLE READ transaction: it fixes the snapshot held."""
    return Query(BENCH["bench_take_snapshot"], None, nothing)


def running_on_worker(name: str, ids: Sequence[int]) -> Query[int]:
    """How many of these tasks run on the named worker."""
    return Query(
        BENCH["count_running_on_worker"], {"name": name, "ids": list(ids)}, value("running")
    )


def fill_dashboard(tasks: int) -> Query[None]:
    """Insert the dashboard benchmark's ``tasks`` finished and pending tasks."""
    return Query(BENCH["bench_fill_dashboard"], {"tasks": tasks}, nothing)


def delete_dashboard() -> Query[None]:
    """Delete the dashboard benchmark's tasks."""
    return Query(BENCH["bench_delete_dashboard"], None, nothing)


def delete_dashboard_outcomes() -> Query[None]:
    """Delete the dashboard benchmark's minutes from the outcome rollup."""
    return Query(BENCH["bench_delete_dashboard_outcomes"], None, nothing)


def clock() -> Query[float]:
    """The server's clock, in seconds since the epoch."""
    return Query(BENCH["bench_clock"], None, value("now"))


def group_starts(task_type: str, start: float, end: float) -> Query[dict[str, int]]:
    """Starts of ``task_type``'s tasks per group from ``start`` to ``end`` (the
    server's clock); the tasks without a group under ''."""
    return Query(
        BENCH["bench_group_starts"],
        {"task_type": task_type, "start": start, "end": end},
        lambda found: {row["group_key"]: row["starts"] for row in found},
    )


def database_connections(excluded: list[int]) -> Query[int]:
    """The client connections the server holds to this database, but ``excluded`` backends."""
    return Query(BENCH["database_connections"], {"excluded": excluded}, value("count"))


def backend_pid() -> Query[int]:
    """The backend of the connection the query runs on."""
    return Query(BENCH["backend_pid"], None, value("pid"))


def sweep_holder() -> Query[dict[str, Any] | None]:
    """The pid holding the sweeper's lease (as ``{"pid"}``); None while nobody holds it."""
    return Query(BENCH["sweep_holder"], None, first_or_none)

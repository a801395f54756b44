"""Typed statements on tasks (``sql/queries/tasks.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, TypedDict
from uuid import UUID

from psycopg.types.json import Jsonb

from omnispindle._core import defaults
from omnispindle._db.pg_arrays import ArrayLiteral, plain_array, text_array
from omnispindle._db.query import Query, Row, column, first, first_or_none, nothing, rows, value
from omnispindle._db.rows import (
    CancelResult,
    ClaimedTask,
    FailedAttempt,
    StateCount,
    StepRow,
    StoredOutcome,
    StreamRow,
    TaskRecord,
)
from omnispindle._db.statements import RUNTIME

_ids = column("id")


class Results(NamedTuple):
    """Attempts' results to store, in parallel: tasks, their lease tokens, results as JSON."""

    ids: Sequence[int]
    tokens: Sequence[object]
    results: Sequence[str]


def _result_arrays(results: Results) -> dict[str, object]:
    return {
        "ids": plain_array(results.ids),
        "tokens": plain_array(results.tokens),
        "results": text_array(results.results),
    }


class SubmitColumns(TypedDict):
    """``omnispindle.submit_tasks``' parallel arrays: element i describes task i."""

    task_types: list[str]
    parameters: list[str]  # JSON objects
    priorities: list[int]
    max_attempts: list[int]
    retry_backoffs: list[float]
    timeouts: list[float | None]
    required_capabilities: list[Jsonb]  # JSON arrays of names
    dependencies: list[Jsonb]  # JSON arrays of existing task ids
    entry_dependencies: list[Jsonb]  # JSON arrays of positions in the batch, from 1
    allow_failed: list[bool]
    run_after: list[datetime | None] | None  # None: every task runs as soon as it can
    idempotency_keys: list[str | None] | None  # None: no task has a key
    trace_contexts: list[Jsonb] | None
    group_keys: list[str | None] | None  # None: no task has a group


class Submission(NamedTuple):
    """A submit call's key, and which of its statements this is (from 0)."""

    key: UUID
    part: int = 0


def _recorded(submission: Submission | None) -> dict[str, object]:
    if submission is None:
        return {"submission": None, "part": 0}
    return {"submission": submission.key, "part": submission.part}


def submit_tasks(columns: SubmitColumns, submission: Submission | None = None) -> Query[list[int]]:
    """Insert tasks through ``omnispindle.submit_tasks``, which checks parents and keys,
    all or nothing, recording the ids under ``submission``. Returns the ids in entry order."""
    return Query(RUNTIME["submit_tasks"], {**columns, **_recorded(submission)}, _ids)


def insert_tasks_bulk(
    rows_json: str, trace_context: dict[str, str] | None, submission: Submission | None = None
) -> Query[list[int]]:
    """Insert tasks without dependencies or keys, given as one JSON array of objects
    that leave out fields holding their defaults, recording the ids under
    ``submission``. Returns the new ids in entry order (the statement returns
    them as runs of consecutive ids)."""
    return Query(
        RUNTIME["insert_tasks_bulk"], _bulk(rows_json, trace_context, submission), _ids_of_runs
    )


def insert_linked_bulk(
    rows_json: str, trace_context: dict[str, str] | None, submission: Submission | None = None
) -> Query[list[int]]:
    """As :func:`insert_tasks_bulk`, where objects may also name parents among the
    batch's entries ("after": 0-based positions) and allow them to fail."""
    return Query(
        RUNTIME["insert_linked_bulk"], _bulk(rows_json, trace_context, submission), _ids_of_runs
    )


def _bulk(
    rows_json: str, trace_context: dict[str, str] | None, submission: Submission | None
) -> dict[str, object]:
    return {
        **_recorded(submission),
        "rows": rows_json,
        "trace_context": None if trace_context is None else Jsonb(trace_context),
        "default_priority": defaults.PRIORITY,
        "default_max_attempts": defaults.MAX_ATTEMPTS,
        "default_retry_backoff": defaults.RETRY_BACKOFF,
    }


def claim_tasks(
    *,
    task_types: Sequence[str],
    capabilities: Sequence[str],
    limit: int,
    worker_id: UUID,
    lease_seconds: float,
) -> Query[list[ClaimedTask]]:
    """Claim up to ``limit`` ready tasks for a worker, from the head of the ready index."""
    return Query(
        RUNTIME["claim_tasks"],
        {
            "task_types": list(task_types),
            "capabilities": list(capabilities),
            "limit": limit,
            "worker_id": worker_id,
            "lease_seconds": lease_seconds,
        },
        rows,
    )


def complete_and_claim(
    results: Results,
    *,
    task_types: ArrayLiteral,
    capabilities: ArrayLiteral,
    limit: int,
    worker_id: UUID,
    lease_seconds: float,
    after_priority: int | None,
    after_id: int | None,
) -> Query[list[StepRow]]:
    """A worker's step: store results (fenced by lease token), then claim up to ``limit``
    tasks from the cursor ``(after_priority, after_id)``, or the head when both are None."""
    return Query(
        RUNTIME["complete_and_claim"],
        {
            **_result_arrays(results),
            "task_types": task_types,
            "capabilities": capabilities,
            "limit": limit,
            "worker_id": worker_id,
            "lease_seconds": lease_seconds,
            "after_priority": after_priority,
            "after_id": after_id,
        },
        rows,
    )


def complete_tasks(results: Results) -> Query[list[StoredOutcome]]:
    """Store results, fenced by lease token; a row per result stored."""
    return Query(RUNTIME["complete_tasks"], _result_arrays(results), rows)


def fail_tasks(
    *, ids: Sequence[int], tokens: Sequence[object], errors: Sequence[str]
) -> Query[list[FailedAttempt]]:
    """Store failed attempts (errors as JSON), fenced by lease token; a row per one stored."""
    return Query(
        RUNTIME["fail_tasks"],
        {"ids": plain_array(ids), "tokens": plain_array(tokens), "errors": text_array(errors)},
        rows,
    )


def release_tasks(*, ids: Sequence[int], tokens: Sequence[str]) -> Query[list[int]]:
    """Hand running tasks back to pending without counting the attempt; the ids released."""
    return Query(RUNTIME["release_tasks"], {"ids": list(ids), "tokens": list(tokens)}, _ids)


def submitted(key: UUID) -> Query[list[int] | None]:
    """The ids a submit call recorded under ``key``, in order; None if none committed."""
    return Query(RUNTIME["submitted"], {"submission": key}, _recorded_ids)


def _recorded_ids(found: list[Row]) -> list[int] | None:
    if not found:
        return None
    return [task_id for row in found for task_id in row["task_ids"]]


def forget_submissions(limit: int) -> Query[None]:
    """Delete up to ``limit`` submission records older than an hour."""
    return Query(RUNTIME["forget_submissions"], {"limit": limit}, nothing)


def release_unheld(worker_id: UUID, held: Sequence[int]) -> Query[list[int]]:
    """Hand back the running tasks of ``worker_id`` but ``held``, without counting the
    attempt; the ids released."""
    return Query(RUNTIME["release_unheld"], {"worker_id": worker_id, "held": list(held)}, _ids)


def stored_results(worker_id: UUID, ids: Sequence[int]) -> Query[list[int]]:
    """Of ``ids``, those that succeeded under ``worker_id``."""
    return Query(RUNTIME["stored_results"], {"worker_id": worker_id, "ids": list(ids)}, _ids)


def recover_expired_leases(limit: int) -> Query[list[FailedAttempt]]:
    """End up to ``limit`` attempts whose lease expired, as failures."""
    return Query(RUNTIME["recover_expired_leases"], {"limit": limit}, rows)


def next_lease_expiry() -> Query[float | None]:
    """Seconds until the first lease lapses (negative if one has), None if nothing runs."""
    return Query(RUNTIME["next_lease_expiry"], None, value("seconds"))


def reconcile_blocked(limit: int) -> Query[list[int]]:
    """Repair up to ``limit`` blocked tasks whose parents finished unseen; their ids."""
    return Query(RUNTIME["reconcile_blocked"], {"limit": limit}, _ids)


def get_tasks(ids: Sequence[int], *, finished_only: bool = False) -> Query[list[TaskRecord]]:
    """The records of the tasks with these ids (only the finished ones if asked)."""
    return Query(RUNTIME["get_tasks"], {"ids": list(ids), "finished_only": finished_only}, rows)


def count_tasks_by_state() -> Query[list[StateCount]]:
    """How many tasks are in each state that has any."""
    return Query(RUNTIME["count_tasks_by_state"], None, rows)


def cancel_task(task_id: int, reason: str) -> Query[CancelResult]:
    """Cancel a task and its dependents (a running one is asked to stop)."""
    return Query(RUNTIME["cancel_task"], {"id": task_id, "reason": reason}, first)


def cancel_requests(*, ids: Sequence[int], tokens: Sequence[str]) -> Query[list[int]]:
    """Which of these held tasks have been asked to stop.

    Lists, not literals: it runs after a cancel notification only, and with a
    list parameter the generic plan keeps to the key even on a small table.
    """
    return Query(RUNTIME["cancel_requests"], {"ids": list(ids), "tokens": list(tokens)}, _ids)


def emit_partial(task_id: int, token: object, payload_json: str) -> Query[int | None]:
    """Append a partial result; its sequence number, or None when the lease is gone."""
    return Query(
        RUNTIME["emit_partial"], {"id": task_id, "token": token, "payload": payload_json}, _seq
    )


def read_stream(task_id: int, after: int) -> Query[list[StreamRow]]:
    """A task's partial results after sequence number ``after``, in order."""
    return Query(RUNTIME["read_stream"], {"id": task_id, "after": after}, rows)


def _ids_of_runs(runs: list[Row]) -> list[int]:
    return [i for run in runs for i in range(run["first"], run["last"] + 1)]


def _seq(found: list[Row]) -> int | None:
    row = first_or_none(found)
    return None if row is None else int(row["seq"])

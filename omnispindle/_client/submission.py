"""The statement and parameters that insert validated tasks, for the sync and async clients.

A batch without dependencies or idempotency keys, the common case, goes in as
one JSON document expanded by ``jsonb_to_recordset``: one parameter to send,
and no per-entry work in PL/pgSQL (a long one as several documents, pipelined
in one transaction: see ``batches.plain_chunks``). Anything else goes through
the ``submit_tasks`` function, which checks parents and keys.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from psycopg.types.json import Jsonb

from omnispindle._core.validation import TaskSpec

# What insert_tasks_bulk's coalesce calls fill in for a field left out.
DEFAULT_PRIORITY = 0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_RETRY_BACKOFF = 1.0


def insert_statement(specs: list[TaskSpec],
                     trace_context: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
    """The named statement for ``specs`` and its parameters; it returns ids in order."""
    if any(s.dependencies or s.entry_dependencies or s.idempotency_key for s in specs):
        return "submit_tasks", submit_params(specs, trace_context)
    return "insert_tasks_bulk", bulk_params(specs, trace_context)


def bulk_params(specs: list[TaskSpec], trace_context: dict[str, str] | None) -> dict[str, Any]:
    """Parameters of insert_tasks_bulk, for specs without dependencies or keys."""
    return {
        "rows": "[" + ",".join(map(_json_row, specs)) + "]",
        "trace_context": None if trace_context is None else Jsonb(trace_context),
    }


def inserted_ids(statement: str, rows: list[dict[str, Any]]) -> list[int]:
    """The new tasks' ids in entry order, from the rows ``statement`` returned:
    ids from submit_tasks, runs of consecutive ids from insert_tasks_bulk."""
    if statement == "submit_tasks":
        return [row["id"] for row in rows]
    return [i for row in rows for i in range(row["first"], row["last"] + 1)]


def chunked_ids(results: list[list[dict[str, Any]]]) -> list[int]:
    """The new tasks' ids in entry order, from the rows of each pipelined
    insert_tasks_bulk statement of a long batch."""
    return [i for rows in results for i in inserted_ids("insert_tasks_bulk", rows)]


def _json_row(spec: TaskSpec) -> str:
    """One entry as a JSON object; its parameters are JSON already. A field that
    holds the default insert_tasks_bulk fills in is left out: parsing the
    document is most of the statement's cost, and it grows with every key."""
    row = f'{{"task_type":{_json_once(spec.task_type)}'
    if spec.parameters_json != "{}":
        row += f',"parameters":{spec.parameters_json}'
    if spec.priority != DEFAULT_PRIORITY:
        row += f',"priority":{spec.priority}'
    if spec.max_attempts != DEFAULT_MAX_ATTEMPTS:
        row += f',"max_attempts":{spec.max_attempts}'
    if spec.retry_backoff != DEFAULT_RETRY_BACKOFF:
        row += f',"retry_backoff":{spec.retry_backoff!r}'
    if spec.timeout is not None:
        row += f',"timeout_seconds":{spec.timeout!r}'
    if spec.required_capabilities:
        row += f',"required_capabilities":{_json_once(spec.required_capabilities)}'
    if spec.run_after is not None:
        row += f',"run_after":"{spec.run_after.isoformat()}"'
    return row + "}"


@functools.lru_cache(maxsize=1024)
def _json_once(value: str | tuple[str, ...]) -> str:
    """Task types and capability sets repeat across a batch: encode each once."""
    return json.dumps(value)


def submit_params(specs: list[TaskSpec], trace_context: dict[str, str] | None) -> dict[str, Any]:
    """Parallel arrays, one element per task; optional columns are NULL when unused."""
    return {
        "task_types": [s.task_type for s in specs],
        "parameters": [s.parameters_json for s in specs],
        "priorities": [s.priority for s in specs],
        "max_attempts": [s.max_attempts for s in specs],
        "retry_backoffs": [s.retry_backoff for s in specs],
        "timeouts": [s.timeout for s in specs],
        "required_capabilities": [Jsonb(list(s.required_capabilities)) for s in specs],
        "dependencies": [Jsonb(list(s.dependencies)) for s in specs],
        "entry_dependencies": [Jsonb([p + 1 for p in s.entry_dependencies]) for s in specs],
        "allow_failed": [s.allow_failed_dependencies for s in specs],
        "run_after": _optional([s.run_after for s in specs]),
        "idempotency_keys": _optional([s.idempotency_key for s in specs]),
        "trace_contexts": None if trace_context is None else [Jsonb(trace_context)] * len(specs),
    }


def _optional(values: list[Any]) -> list[Any] | None:
    return values if any(v is not None for v in values) else None

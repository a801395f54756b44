"""The statement and parameters that insert validated tasks, for the sync and async clients.

A batch without dependencies or idempotency keys, the common case, goes in as
one JSON document expanded by ``jsonb_to_recordset``: one parameter to send,
and no per-entry work in PL/pgSQL. Anything else goes through the
``submit_tasks`` function, which checks parents and keys.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from .validation import TaskSpec


def insert_statement(specs: list[TaskSpec],
                     trace_context: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
    """The named statement for ``specs`` and its parameters; it returns ids in order."""
    if any(s.dependencies or s.entry_dependencies or s.idempotency_key for s in specs):
        return "submit_tasks", submit_params(specs, trace_context)
    return "insert_tasks_bulk", {
        "rows": "[" + ",".join(map(_json_row, specs)) + "]",
        "trace_context": None if trace_context is None else Jsonb(trace_context),
    }


def _json_row(spec: TaskSpec) -> str:
    """One entry as a JSON object; its parameters are JSON already."""
    return (f'{{"task_type":{json.dumps(spec.task_type)},"parameters":{spec.parameters_json},'
            f'"priority":{spec.priority},"max_attempts":{spec.max_attempts},'
            f'"retry_backoff":{spec.retry_backoff!r},"timeout_seconds":{_number(spec.timeout)},'
            f'"required_capabilities":{json.dumps(spec.required_capabilities)},'
            f'"run_after":{_instant(spec.run_after)}}}')


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


def _instant(value: Any) -> str:
    return "null" if value is None else f'"{value.isoformat()}"'


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

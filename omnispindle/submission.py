"""The parameters of the ``submit_tasks`` statement, for the sync and async clients alike."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from .validation import TaskSpec


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

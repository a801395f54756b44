"""Inserting validated tasks: which statement, with what parameters, for both clients.

A batch without dependencies or idempotency keys, the common case, goes in as
one JSON document expanded by ``jsonb_to_recordset``: one parameter to send,
and no per-entry work in PL/pgSQL (a long one as several documents, pipelined
in one transaction: see ``batches.plain_chunks``). So does a batch whose
dependencies are all entries of itself (a fan-out, a chain): its parents are
new, so there is nothing to check or lock. Anything else goes through the
``submit_tasks`` function, which checks existing parents and keys. Given a
submission key, each statement also records the ids it inserted under it (see
:mod:`omnispindle._client.resubmission`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import TypeVar
from uuid import UUID

from psycopg.types.json import Jsonb

from omnispindle._core import defaults
from omnispindle._core.specs import TaskSpec
from omnispindle._db import queries as q
from omnispindle._db.query import Pipelined, Query

TraceContext = dict[str, str] | None
V = TypeVar("V")


def insert(
    specs: list[TaskSpec], trace_context: TraceContext, key: UUID | None = None
) -> Query[list[int]]:
    """The insert of ``specs``, recorded under ``key``; its result is the new ids,
    in entry order."""
    submission = None if key is None else q.tasks.Submission(key)
    if any(s.dependencies or s.idempotency_key for s in specs):
        return q.tasks.submit_tasks(submit_columns(specs, trace_context), submission)
    if any(s.entry_dependencies for s in specs):
        rows_json = "[" + ",".join(map(_linked_json_row, specs)) + "]"
        return q.tasks.insert_linked_bulk(rows_json, trace_context, submission)
    return bulk_insert(specs, trace_context, submission)


def insert_chunks(
    chunks: Iterable[list[TaskSpec]], trace_context: TraceContext, key: UUID | None = None
) -> Pipelined[list[int], list[int]]:
    """A long plain batch as pipelined bulk inserts, one per chunk, all or nothing,
    each recorded under ``key`` as one part; the chunks may come from a generator
    that validates them as they are sent."""
    return Pipelined(
        (
            bulk_insert(specs, trace_context, None if key is None else q.tasks.Submission(key, n))
            for n, specs in enumerate(chunks)
        ),
        lambda results: [i for ids in results for i in ids],
    )


def bulk_insert(
    specs: list[TaskSpec], trace_context: TraceContext, submission: q.tasks.Submission | None
) -> Query[list[int]]:
    """The bulk insert of specs without dependencies or keys; the new ids in order."""
    rows_json = "[" + ",".join(map(_json_row, specs)) + "]"
    return q.tasks.insert_tasks_bulk(rows_json, trace_context, submission)


def _json_row(spec: TaskSpec) -> str:
    """One entry as a JSON object; its parameters are JSON already. A field that
    holds the default the statement fills in is left out: parsing the document
    is most of the statement's cost, and it grows with every key."""
    row = f'{{"task_type":{_json_once(spec.task_type)}'
    if spec.parameters_json != "{}":
        row += f',"parameters":{spec.parameters_json}'
    if spec.priority != defaults.PRIORITY:
        row += f',"priority":{spec.priority}'
    if spec.max_attempts != defaults.MAX_ATTEMPTS:
        row += f',"max_attempts":{spec.max_attempts}'
    if spec.retry_backoff != defaults.RETRY_BACKOFF:
        row += f',"retry_backoff":{spec.retry_backoff!r}'
    if spec.timeout is not None:
        row += f',"timeout_seconds":{spec.timeout!r}'
    if spec.required_capabilities:
        row += f',"required_capabilities":{_json_once(spec.required_capabilities)}'
    if spec.run_after is not None:
        row += f',"run_after":"{spec.run_after.isoformat()}"'
    if spec.group_key is not None:
        row += f',"group_key":{json.dumps(spec.group_key)}'
    return row + "}"


def _linked_json_row(spec: TaskSpec) -> str:
    """One entry of a batch linked within itself: its parents by position."""
    row = _json_row(spec)[:-1]
    if spec.entry_dependencies:
        row += f',"after":[{",".join(map(str, spec.entry_dependencies))}]'
    if spec.allow_failed_dependencies:
        row += ',"allow_failed":true'
    return row + "}"


@functools.lru_cache(maxsize=1024)
def _json_once(value: str | tuple[str, ...]) -> str:
    """Task types and capability sets repeat across a batch: encode each once."""
    return json.dumps(value)


def submit_columns(specs: list[TaskSpec], trace_context: TraceContext) -> q.tasks.SubmitColumns:
    """``submit_tasks``' parallel arrays, one element per task; optional columns are
    NULL when unused."""
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
        "group_keys": _optional([s.group_key for s in specs]),
    }


def _optional(values: list[V | None]) -> list[V | None] | None:
    return values if any(v is not None for v in values) else None

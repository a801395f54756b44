"""How validated tasks become an insert, and its rows become ids."""

from __future__ import annotations

import json

from omnispindle._client._submission import insert
from omnispindle._core.specs import TaskOptions, task_spec


def test_bulk_ids_come_back_as_runs_expanded_in_order():
    runs = [{"first": 10, "last": 12}, {"first": 20, "last": 20}, {"first": 30, "last": 31}]
    assert insert([task_spec("plain")], None).read(runs) == [10, 11, 12, 20, 30, 31]


def test_checked_ids_come_back_one_per_row():
    query = insert([task_spec("t", None, TaskOptions(idempotency_key="k"))], None)
    assert query.statement.name == "submit_tasks"
    assert query.read([{"id": 7}, {"id": 3}]) == [7, 3]


def test_the_bulk_document_holds_only_fields_that_differ_from_their_defaults():
    specs = [
        task_spec("plain"),
        task_spec("plain", {}, TaskOptions(priority=0, max_retries=3, retry_backoff=1.0)),
        task_spec(
            "full",
            {"a": 1},
            TaskOptions(
                priority=5,
                max_retries=0,
                retry_backoff=2.0,
                timeout=3.0,
                required_capabilities=["gpu"],
            ),
        ),
    ]
    query = insert(specs, None)
    assert query.statement.name == "insert_tasks_bulk"
    assert json.loads(query.params["rows"]) == [
        {"task_type": "plain"},
        {"task_type": "plain"},
        {
            "task_type": "full",
            "parameters": {"a": 1},
            "priority": 5,
            "max_attempts": 1,
            "retry_backoff": 2.0,
            "timeout_seconds": 3.0,
            "required_capabilities": ["gpu"],
        },
    ]

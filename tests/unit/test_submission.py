"""How validated tasks become a statement's parameters, and its rows become ids."""

from __future__ import annotations

import json

from omnispindle._client.submission import insert_statement, inserted_ids
from omnispindle._core.validation import task_spec


def test_bulk_ids_come_back_as_runs_expanded_in_order():
    rows = [{"first": 10, "last": 12}, {"first": 20, "last": 20}, {"first": 30, "last": 31}]
    assert inserted_ids("insert_tasks_bulk", rows) == [10, 11, 12, 20, 30, 31]


def test_checked_ids_come_back_one_per_row():
    assert inserted_ids("submit_tasks", [{"id": 7}, {"id": 3}]) == [7, 3]


def test_the_bulk_document_holds_only_fields_that_differ_from_their_defaults():
    specs = [task_spec("plain"),
             task_spec("plain", {}, priority=0, max_retries=3, retry_backoff=1.0),
             task_spec("full", {"a": 1}, priority=5, max_retries=0, retry_backoff=2.0,
                       timeout=3.0, required_capabilities=["gpu"])]
    statement, params = insert_statement(specs, None)
    assert statement == "insert_tasks_bulk"
    assert json.loads(params["rows"]) == [
        {"task_type": "plain"},
        {"task_type": "plain"},
        {"task_type": "full", "parameters": {"a": 1}, "priority": 5, "max_attempts": 1,
         "retry_backoff": 2.0, "timeout_seconds": 3.0, "required_capabilities": ["gpu"]},
    ]

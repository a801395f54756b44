"""Properties over hostile input (issue 18): a submission is stored exactly or
refused with a typed error and nothing stored, and a worker survives any row
the database accepts, however it was written."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnispindle import OmnispindleError

from ..acceptance.workers import poll

DEADLINE = 60
FINISHED = ("succeeded", "failed", "cancelled")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
# Lists nested this deep, as a value inside an object.
deep = st.integers(min_value=150, max_value=1200).map(
    lambda n: {"x": json.loads("[" * n + "]" * n)}
)
parameters = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    deep,
    json_values,  # mostly not an object, which is refused
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=4),
)
OPTIONAL = object()  # an argument left out


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just(OPTIONAL), strategy)


def by_value(value: object) -> object:
    """A JSON value with its numbers as Decimals: JSON numbers are compared by value,
    as Postgres stores them (``1e+308`` comes back written out in full)."""
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def holding(conn, key: object) -> int | None:
    """The unfinished task that holds an idempotency key, if any."""
    if not isinstance(key, str) or "\x00" in key or not key.isprintable() and _unstorable(key):
        return None  # a key Postgres cannot hold: the submission is refused
    row = conn.execute(
        "SELECT id FROM omnispindle.tasks WHERE idempotency_key = %s "
        "AND state IN ('blocked', 'pending', 'running')",
        [key],
    ).fetchone()
    return row[0] if row else None


def _unstorable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def count(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    task_type=st.text(max_size=220),
    params=parameters,
    priority=maybe(st.one_of(st.integers(-1500, 1500), st.floats(), st.none(), st.booleans())),
    max_retries=maybe(st.one_of(st.integers(-3, 120), st.none())),
    timeout=maybe(st.one_of(st.none(), st.floats(), st.integers(-5, 10**9))),
    key=maybe(st.one_of(st.none(), st.text(max_size=220))),
    capabilities=maybe(st.lists(st.text(max_size=210), max_size=70)),
)
def test_a_submission_is_stored_exactly_or_refused_with_nothing_stored(
    client, conn, task_type, params, priority, max_retries, timeout, key, capabilities
):
    options = {
        name: value
        for name, value in (
            ("priority", priority),
            ("max_retries", max_retries),
            ("timeout", timeout),
            ("idempotency_key", key),
            ("required_capabilities", capabilities),
        )
        if value is not OPTIONAL
    }
    before = count(conn)
    holder = holding(conn, options.get("idempotency_key"))
    try:
        task_id = client.submit_task(task_type, params, **options)
    except OmnispindleError:
        assert count(conn) == before
        return
    if holder is not None:  # the key's unfinished task answers, and nothing is added
        assert task_id == holder and count(conn) == before
        return
    record = client.get_task(task_id)
    assert record["task_type"] == task_type
    assert by_value(record["parameters"]) == by_value(params if params is not None else {})
    stored = conn.execute(
        "SELECT parameters::text, priority, max_attempts, timeout_seconds, "
        "required_capabilities, idempotency_key FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()
    assert json.loads(stored[0], parse_float=Decimal, parse_int=Decimal) == by_value(
        params if params is not None else {}
    )
    if "priority" in options:
        assert stored[1] == priority
    if "max_retries" in options:
        assert stored[2] == max_retries + 1
    if options.get("timeout") is not None:
        assert math.isclose(stored[3], timeout)
    if options.get("required_capabilities"):
        assert stored[4] == list(dict.fromkeys(capabilities))
    if options.get("idempotency_key") is not None:
        assert stored[5] == key


json_texts = st.one_of(
    json_values.filter(lambda v: not _has_nan(v)).map(json.dumps),
    st.integers(min_value=0, max_value=3000).map(lambda n: "[" * n + "]" * n),
)


def _has_nan(value: object) -> bool:
    text = json.dumps(value)
    return "NaN" in text or "Infinity" in text


rows = st.fixed_dictionaries(
    {
        "parameters": json_texts,
        "trace_context": st.one_of(st.none(), json_texts),
        "timeout_seconds": st.one_of(st.none(), st.floats(min_value=1e-300, max_value=1e300)),
        "retry_backoff": st.floats(min_value=0, max_value=3600),
        "priority": st.integers(-1000, 1000),
    }
)


@pytest.fixture
def serving_worker(client, start_worker):
    """A worker that echoes parameters; and a check that it still serves."""
    start_worker({"t": lambda task: {"got": task["parameters"]}}, concurrency=4)

    def still_serves() -> None:
        task_id = client.submit_task("t", {"alive": True}, priority=1000)
        assert client.wait_for_task(task_id, timeout=DEADLINE)["result"] == {"got": {"alive": True}}

    return still_serves


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(rows, min_size=1, max_size=4))
def test_a_worker_survives_any_row_the_database_accepts(client, conn, serving_worker, batch):
    accepted = []
    for row in batch:
        try:
            accepted.append(
                conn.execute(
                    "INSERT INTO omnispindle.tasks (task_type, parameters, trace_context, "
                    "timeout_seconds, retry_backoff, priority, max_attempts) "
                    "VALUES ('t', %(parameters)s::jsonb, %(trace_context)s::jsonb, "
                    "%(timeout_seconds)s, %(retry_backoff)s, %(priority)s, 1) RETURNING id",
                    row,
                ).fetchone()[0]
            )
        except psycopg.Error:
            continue  # refused by a CHECK: nothing to serve
    started = time.monotonic()
    for task_id in accepted:
        poll(
            lambda task_id=task_id: client.get_task(task_id)["state"] in FINISHED,
            DEADLINE - (time.monotonic() - started),
        )
    serving_worker()

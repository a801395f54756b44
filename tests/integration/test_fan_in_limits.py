"""A fan-in whose parents' results together do not fit in one jsonb value
(255 MiB): its task fails alone, and the worker goes on with other work."""

from __future__ import annotations

import pytest

# 17 results of 16,000,000 characters each: every one within the default
# result limit (16 MiB), together past jsonb's 268,435,455 bytes. Repeated
# text, which TOAST compresses to a few MB in all.
PARENTS = 17
PARENTS_SQL = (
    "INSERT INTO omnispindle.tasks (task_type, state, attempts, started_at, finished_at, result) "
    "SELECT 'parent', 'succeeded', 1, now(), now(), "
    "jsonb_build_object('text', repeat(md5(n::text), 500000)) "
    "FROM generate_series(1, %s) n RETURNING id"
)


@pytest.mark.parametrize("last_parent_by_the_worker", [False, True])
def test_a_fan_in_over_jsonbs_limit_fails_alone(
    client, conn, start_worker, last_parent_by_the_worker
):
    """Each claim raised 'total size of jsonb object elements exceeds the maximum':
    the worker retried it for ever without a word, ran nothing else, and did not stop."""
    parents = [row[0] for row in conn.execute(PARENTS_SQL, [PARENTS])]
    if last_parent_by_the_worker:
        # Its step counts the child down and hands it over in the same statement.
        parents.append(client.submit_task("last", priority=10))
    child = client.submit_task("sink", dependencies=parents, max_retries=0)
    other = client.submit_task("other", priority=-1)
    ran = []
    start_worker(
        {"sink": ran.append, "last": lambda task: {"small": True}, "other": lambda task: {}}
    )

    failed = client.wait_for_task(child, timeout=60)
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "UnreadableTask"
    assert "parents' results come to more than" in failed["error"]["message"]
    assert ran == []
    assert client.wait_for_task(other, timeout=30)["state"] == "succeeded"

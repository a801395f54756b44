"""The outcome rollup: each finished task counted once, whatever the passes do."""

from __future__ import annotations

import threading

from omnispindle._maintenance import rollup
from omnispindle._maintenance.sweeper import Sweeper

# Finished tasks made directly: `count` of them, one a second, the newest
# `age` ago; every third one failed, every fifth finished after two attempts.
FINISHED = """
INSERT INTO omnispindle.tasks (task_type, state, attempts, result, errors, finished_at)
SELECT 'job_' || (g %% 3), s.state, CASE WHEN g %% 5 = 0 THEN 2 ELSE 1 END,
       CASE WHEN s.state = 'succeeded' THEN '{}'::jsonb END,
       CASE WHEN s.state = 'failed' THEN '[{"type": "Boom"}]'::jsonb ELSE '[]'::jsonb END,
       now() - %(age)s::interval - (%(count)s - g) * interval '1 second'
FROM generate_series(1, %(count)s) AS g
CROSS JOIN LATERAL (SELECT CASE WHEN g %% 3 = 0 THEN 'failed' ELSE 'succeeded' END
                               ::omnispindle.task_state AS state) AS s
"""
ROLLED_UP = """
SELECT coalesce(sum(succeeded), 0) AS succeeded, coalesce(sum(failed), 0) AS failed,
       coalesce(sum(retried), 0) AS retried
FROM omnispindle.outcome_minutes
"""
EXACT = """
SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE attempts > 1) AS retried
FROM omnispindle.tasks WHERE finished_at IS NOT NULL
"""
VIEWED = """
SELECT coalesce(sum(succeeded), 0) AS succeeded, coalesce(sum(failed), 0) AS failed,
       coalesce(sum(retried), 0) AS retried
FROM omnispindle.outcomes_per_minute
"""


def finish(conn, count: int, age: str) -> None:
    conn.execute(FINISHED, {"count": count, "age": age})


def counts(conn, statement: str) -> tuple[int, int, int]:
    return tuple(int(value) for value in conn.execute(statement).fetchone())  # type: ignore[return-value]


def test_passes_count_each_task_once_as_time_moves_on(queue, conn):
    finish(conn, 120, "20 minutes")
    # A settle lag of 15 minutes counts only the older tasks: their minutes come
    # from the rollup, the newer ones from the live tail, none from both.
    assert rollup.roll_up(queue.db, settle=15 * 60) == 120
    finish(conn, 60, "5 minutes")
    assert counts(conn, VIEWED) == counts(conn, EXACT)
    assert rollup.roll_up(queue.db, settle=15 * 60) == 0
    assert rollup.roll_up(queue.db, settle=0) == 60
    assert rollup.roll_up(queue.db, settle=0) == 0
    assert counts(conn, ROLLED_UP) == counts(conn, EXACT) == counts(conn, VIEWED)


def test_two_racing_passes_never_count_a_task_twice(queue, conn, dsn):
    finish(conn, 300, "10 minutes")
    start = threading.Barrier(2)
    counted: list[int | None] = []

    def passes() -> None:
        start.wait()
        counted.extend(rollup.roll_up(queue.db, settle=0) for _ in range(20))

    racers = [threading.Thread(target=passes) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert sum(n or 0 for n in counted) == 300
    assert counts(conn, ROLLED_UP) == counts(conn, EXACT)


def test_a_pass_that_finds_the_watermark_held_counts_nothing(queue, conn, dsn):
    finish(conn, 10, "1 minute")
    with conn.transaction():
        conn.execute("SELECT * FROM omnispindle.outcome_rollup FOR UPDATE")
        assert rollup.roll_up(queue.db, settle=0) is None
    assert rollup.roll_up(queue.db, settle=0) == 10


def test_pruning_leaves_the_rollup_as_it_was(queue, conn):
    finish(conn, 90, "10 minutes")
    rollup.roll_up(queue.db, settle=0)
    before = counts(conn, VIEWED)
    assert queue.prune(older_than=60) == 90
    assert counts(conn, EXACT) == (0, 0, 0)
    assert counts(conn, ROLLED_UP) == counts(conn, VIEWED) == before != (0, 0, 0)


def test_a_task_finishing_after_the_watermark_is_counted_live(queue, conn, client):
    finish(conn, 5, "2 minutes")
    rollup.roll_up(queue.db, settle=0)
    task_id = client.submit_task("late", {})
    client.cancel_task(task_id)
    cancelled = conn.execute(
        "SELECT sum(cancelled) FROM omnispindle.outcomes_per_minute WHERE task_type = 'late'"
    ).fetchone()[0]
    in_rollup = conn.execute(
        "SELECT count(*) FROM omnispindle.outcome_minutes WHERE task_type = 'late'"
    ).fetchone()[0]
    assert (cancelled, in_rollup) == (1, 0)


def test_a_sweep_rolls_up(queue, conn):
    finish(conn, 7, "1 minute")
    assert Sweeper(queue.db).run_once().counted == 7

"""The aging strategy: a waiting task's effective priority grows with its wait, so a
flood of higher priorities cannot starve it; without it, strict priority as before."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from omnispindle import ValidationError

from .test_roles import command
from .test_type_limits import xact_tasks_fetched

AGING = 0.1  # seconds of waiting per step of priority
FLOOD_PRIORITY = 10
DEADLINE = 60


def flood_and_one_low_task(client, start_worker):
    """Submit priority-10 tasks faster than a worker runs them for 3 s, and one
    priority-0 task half a second in; return (low task id, flood ids)."""
    start_worker({"work": lambda task: time.sleep(0.01) or {}}, concurrency=1)
    flood: list[int] = []
    low: list[int] = []
    stop = threading.Event()

    def submit():
        began = time.monotonic()
        while time.monotonic() - began < 3:
            flood.extend(
                client.submit_batch([{"task_type": "work", "priority": FLOOD_PRIORITY}] * 3)
            )
            if not low and time.monotonic() - began > 0.5:
                low.append(client.submit_task("work", priority=0))
            stop.wait(0.02)

    submitter = threading.Thread(target=submit)
    submitter.start()
    submitter.join()
    client.wait_for_batch([*flood, *low], timeout=DEADLINE)
    return low[0], flood


def times(conn, ids):
    return conn.execute(
        "SELECT id, extract(epoch FROM run_after)::float8, extract(epoch FROM started_at)::float8 "
        "FROM omnispindle.tasks WHERE id = ANY(%s)",
        [list(ids)],
    ).fetchall()


def test_an_aged_low_priority_task_overtakes_the_flood_that_came_after_it(
    client, conn, start_worker
):
    client.set_task_type_strategy("work", "aging", aging_seconds=AGING)
    low, flood = flood_and_one_low_task(client, start_worker)
    [(_, low_ready, low_started)] = times(conn, [low])
    later = [row for row in times(conn, flood) if row[1] > low_ready]
    # Its effective priority passes a flood task's once it became ready more than
    # (10 - 0) * AGING seconds earlier (one step more for the rounding down).
    overtaken = [row for row in later if row[1] > low_ready + (FLOOD_PRIORITY + 1) * AGING]
    assert overtaken, "the flood ended too soon to show anything"
    assert all(started > low_started for _, _, started in overtaken)
    flood_after = [started for _, _, started in later]
    assert low_started < max(flood_after), "the low task waited for the whole flood"
    print(f"\nlow-priority task waited {low_started - low_ready:.2f} s under the flood")


def test_without_aging_the_low_task_waits_for_the_whole_flood(client, conn, start_worker):
    low, flood = flood_and_one_low_task(client, start_worker)
    [(_, low_ready, low_started)] = times(conn, [low])
    assert all(started < low_started for _, _, started in times(conn, flood))
    print(f"\nwithout aging it waited {low_started - low_ready:.2f} s, for the whole flood")


def test_priority_removes_the_strategy_and_bad_input_changes_nothing(client):
    client.set_task_type_strategy("work", "aging", aging_seconds=2.5)
    [kept] = client.task_type_strategies()
    assert (kept["task_type"], kept["strategy"], kept["aging_seconds"]) == ("work", "aging", 2.5)
    for strategy, seconds in [
        ("fifo", None),
        ("aging", None),
        ("priority", 3),
        ("aging", 0),
        ("aging", float("nan")),
        ("aging", 2e6),
        ("aging", 1e-320),
        (None, None),
    ]:
        with pytest.raises(ValidationError):
            client.set_task_type_strategy("work", strategy, aging_seconds=seconds)
    assert client.task_type_strategies() == [kept]
    client.set_task_type_strategy("work", "priority")
    assert client.task_type_strategies() == []


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT omnispindle.set_task_type_strategy('', 'aging', 1)",
        "SELECT omnispindle.set_task_type_strategy('t', 'fifo')",
        "SELECT omnispindle.set_task_type_strategy('t', NULL)",
        "SELECT omnispindle.set_task_type_strategy('t', 'aging')",
        "SELECT omnispindle.set_task_type_strategy('t', 'aging', 'NaN')",
        "SELECT omnispindle.set_task_type_strategy('t', 'priority', 1)",
        "SELECT omnispindle.set_task_type_strategy('t', 'aging', 1e-320)",
    ],
)
def test_the_sql_function_refuses_bad_input(conn, statement):
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(statement)
    assert refused.value.sqlstate == "OS005"
    assert conn.execute("SELECT count(*) FROM omnispindle.task_type_strategies").fetchone() == (0,)


def test_the_command_sets_the_strategy_and_status_shows_it(dsn, client):
    done = command("strategy", "reports", "aging", "--aging-seconds", "30", "--dsn", dsn)
    assert (done.returncode, done.stdout) == (
        0,
        "task type reports ordered by aging (+1 priority every 30 s of waiting)\n",
    )
    [shown] = json.loads(command("status", "--json", "--dsn", dsn).stdout)["strategies"]
    assert (shown["task_type"], shown["aging_seconds"]) == ("reports", 30.0)
    assert command("strategy", "reports", "aging", "--dsn", dsn).returncode == 2
    assert command("strategy", "reports", "fifo", "--dsn", dsn).returncode == 2
    assert command("strategy", "reports", "priority", "--dsn", dsn).returncode == 0
    assert client.task_type_strategies() == []


def test_a_type_that_ages_and_has_a_limit_keeps_both(client, queue, conn):
    client.set_task_type_strategy("work", "aging", aging_seconds=AGING)
    client.set_task_type_limit("work", max_running=2)
    conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, priority, run_after) VALUES "
        "('work', 5, now()), ('work', 5, now()), ('work', 0, now() - interval '10 s')"
    )
    claimed = conn.execute(
        "SELECT priority FROM omnispindle.claim_tasks('{work}', '{}', 10, gen_random_uuid(), 30)"
    ).fetchall()
    # The old priority-0 task's effective priority (100) beats the fresh 5s; two at most.
    assert sorted(claimed) == [(0,), (5,)]


def test_concurrent_claims_of_an_aging_type_take_different_tasks(client, dsn, conn):
    """The second of two overlapping claims found the first one's candidates locked,
    skipped them and claimed nothing, with tasks still ready."""
    client.set_task_type_strategy("work", "aging", aging_seconds=AGING)
    client.submit_batch([{"task_type": "work", "priority": p % 3} for p in range(10)])
    claim = "SELECT id FROM omnispindle.claim_tasks('{work}', '{}', 2, gen_random_uuid(), 30)"
    with psycopg.connect(dsn) as first:  # its claim stays uncommitted
        held = first.execute(claim).fetchall()
        taken = conn.execute(claim).fetchall()
        assert len(held) == len(taken) == 2
        assert not set(held) & set(taken)


@pytest.mark.parametrize("own", [0, 6], ids=["none-ready", "some-ready"])
def test_a_claim_of_an_aging_type_reads_none_of_another_types_backlog(client, dsn, conn, own):
    """Its probes of the priorities walked the ready index of every type: each
    claim stepped over the whole backlog of other types at its priorities and
    above (20,000 rows read behind 20,000 of them), even with nothing to claim."""
    client.set_task_type_strategy("work", "aging", aging_seconds=AGING)
    client.submit_batch([{"task_type": "other", "priority": p % 3} for p in range(3000)])
    client.submit_batch([{"task_type": "work", "priority": p % 3} for p in range(own)])
    conn.execute("ANALYZE omnispindle.tasks")
    with psycopg.connect(dsn) as fresh:  # one transaction: its own statistics
        claimed = fresh.execute(
            "SELECT task_type FROM omnispindle.claim_tasks('{work}', '{}', 4, "
            "gen_random_uuid(), 30)"
        ).fetchall()
        fetched = xact_tasks_fetched(fresh)
    assert claimed == [("work",)] * min(own, 4)
    assert fetched < 50, fetched


def test_an_aging_type_with_group_keys_is_claimed_in_its_order(client, conn):
    client.set_task_type_strategy("work", "aging", aging_seconds=1000)
    client.submit_batch([{"task_type": "other", "priority": 9}] * 10)
    client.submit_batch(
        [{"task_type": "work", "priority": p, "group_key": f"g{p}"} for p in (1, 4, 2)]
        + [{"task_type": "work", "priority": 3}]
    )
    claimed = conn.execute(
        "SELECT priority FROM omnispindle.claim_tasks('{work}', '{}', 3, gen_random_uuid(), 30)"
    ).fetchall()
    assert sorted(claimed, reverse=True) == [(4,), (3,), (2,)]

"""The fair strategy: a type's ready tasks shared between the groups their
submitters set (``group_key``), inside the claim."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid

import psycopg
import pytest

from omnispindle import AsyncTaskQueueClient, ValidationError, entry
from omnispindle._db import queries as q

from .test_roles import command
from .test_type_limits import (
    claim_query,
    finish,
    poll,
    waiting_for_a_lock,
    xact_tasks_fetched,
)


def claim_groups(queue, limit=1, task_types=("shared",)):
    """One claim by a fresh worker id: the groups of the tasks it took."""
    ids = [row["id"] for row in queue.db.run(claim_query(task_types, limit))]
    return [group_of(queue, task_id) for task_id in ids]


def group_of(queue, task_id):
    with psycopg.connect(queue.dsn) as conn:
        return conn.execute(
            "SELECT group_key FROM omnispindle.tasks WHERE id = %s", [task_id]
        ).fetchone()[0]


def flood(client, big=200, small=10, task_type="shared"):
    """``big`` tasks of group 'big', then ``small`` of group 'small'."""
    client.submit_batch([{"task_type": task_type, "group_key": "big"}] * big)
    client.submit_batch([{"task_type": task_type, "group_key": "small"}] * small)


def test_get_task_returns_the_group_key_it_was_submitted_with(client, dsn):
    grouped = client.submit_task("shared", group_key="tenant-7")
    alone = client.submit_task("shared")
    assert client.get_task(grouped)["group_key"] == "tenant-7"
    assert client.get_task(alone)["group_key"] is None

    async def read() -> object:
        async with AsyncTaskQueueClient(dsn=dsn) as async_client:
            return (await async_client.get_task(grouped))["group_key"]

    assert asyncio.run(read()) == "tenant-7"


def test_a_flood_does_not_starve_a_small_group(client, queue):
    """One group submits 100 times more, first: strict order would give it the
    first 1,000 claims."""
    client.set_task_type_strategy("shared", "fair")
    flood(client, big=1000, small=10)
    taken = [group for _ in range(20) for group in claim_groups(queue)]
    # The group with fewer running tasks goes first: never two ahead.
    for n in range(2, 21, 2):
        assert taken[:n].count("small") == n // 2, taken


def test_one_claim_shares_its_slots_between_the_groups(client, queue):
    client.set_task_type_strategy("shared", "fair")
    flood(client, big=50, small=8)
    assert collections.Counter(claim_groups(queue, limit=10)) == {"big": 5, "small": 5}
    # 5 running each: the next claim again splits evenly, then the small group runs out.
    assert collections.Counter(claim_groups(queue, limit=4)) == {"big": 2, "small": 2}
    assert collections.Counter(claim_groups(queue, limit=6)) == {"big": 5, "small": 1}


def test_groups_with_equal_running_tasks_take_turns_at_random(client, queue, conn):
    """Tasks that finish at once leave every group at 0 running: each claim draws."""
    client.set_task_type_strategy("shared", "fair")
    flood(client, big=400, small=400)
    taken = []
    for _ in range(200):
        taken += claim_groups(queue)
        finish(conn, 1, "shared")
    small = taken.count("small")
    assert 60 <= small <= 140, small  # a fair coin: 100 +- 40 is over 5 standard deviations


def test_the_tasks_without_a_group_are_one_group(client, queue):
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared"}] * 30)
    client.submit_task("shared", group_key="a")
    client.submit_task("shared", group_key="a")
    assert collections.Counter(claim_groups(queue, limit=4)) == {None: 2, "a": 2}


def test_within_a_group_priority_then_age(client, queue):
    client.set_task_type_strategy("shared", "fair")
    low = client.submit_task("shared", priority=0, group_key="a")
    high = client.submit_task("shared", priority=5, group_key="a")
    claim = claim_query(["shared"], limit=1)
    assert [row["id"] for _ in range(2) for row in queue.db.run(claim)] == [high, low]


def test_without_the_strategy_the_group_key_changes_nothing(client, queue):
    flood(client, big=20, small=5)
    assert claim_groups(queue, limit=20) == ["big"] * 20


def test_a_running_limit_is_shared_between_the_groups(client, queue):
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running=4)
    flood(client, big=50, small=50)
    assert collections.Counter(claim_groups(queue, limit=10)) == {"big": 2, "small": 2}
    assert claim_groups(queue, limit=10) == []


def test_concurrent_claims_take_different_tasks_and_all_of_them(client, queue):
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 7}"} for n in range(300)])
    taken: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        worker_id = uuid.uuid4()
        while True:
            rows = queue.db.run(
                q.tasks.claim_tasks(
                    task_types=["shared"], capabilities=[], limit=5, worker_id=worker_id,
                    lease_seconds=30,
                )
            )  # fmt: skip
            with lock:
                taken.extend(row["id"] for row in rows)
                if len(taken) >= 300:
                    return

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(taken) == len(set(taken)) == 300


def test_every_submit_path_stores_the_group(client, queue, conn):
    parent = client.submit_task("shared", group_key="p")
    ids = client.submit_batch(
        [
            {"task_type": "shared", "group_key": "b", "dependencies": [parent]},
            {"task_type": "shared", "group_key": "c", "idempotency_key": "once"},
            {"task_type": "shared", "dependencies": [entry(0)]},
        ]
    )
    groups = dict(
        conn.execute(
            "SELECT id, group_key FROM omnispindle.tasks WHERE id = ANY (%s)", [[parent, *ids]]
        ).fetchall()
    )
    assert [groups[i] for i in (parent, *ids)] == ["p", "b", "c", None]


@pytest.mark.parametrize("group_key", ["", "x" * 201, 5, "a\x00b", ["a"]])
def test_a_bad_group_key_is_a_validation_error_that_inserts_nothing(client, conn, group_key):
    before = conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()
    with pytest.raises(ValidationError, match="group_key"):
        client.submit_task("shared", group_key=group_key)
    with pytest.raises(ValidationError, match="group_key"):
        client.submit_batch(
            [{"task_type": "shared"}, {"task_type": "shared", "group_key": group_key}]
        )
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone() == before


def test_the_table_refuses_a_bad_group_key_from_sql(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO omnispindle.tasks (task_type, group_key) VALUES ('shared', '')")


def test_the_commands_submit_with_a_group_and_set_the_fair_strategy(dsn, client, queue):
    done = command("strategy", "shared", "fair", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert [s["strategy"] for s in client.task_type_strategies()] == ["fair"]
    done = command("submit", "shared", "--group-key", "acme", "--json", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert claim_groups(queue) == ["acme"]
    done = command("submit", "shared", "--group-key", "", "--dsn", dsn)
    assert done.returncode != 0 and "group_key" in done.stderr


def test_groups_with_nothing_this_worker_may_start_take_no_turn(client, queue):
    """Groups whose tasks were all delayed, or needed another capability, took the
    claim's turns and came back empty: a type with 100 ready tasks ran one at a time."""
    client.set_task_type_strategy("shared", "fair")
    for n in range(5):
        client.submit_task("shared", group_key=f"later{n}", delay=3600)
        client.submit_task("shared", group_key=f"gpu{n}", required_capabilities=["gpu"])
    client.submit_batch([{"task_type": "shared", "group_key": "ready"}] * 20)
    assert claim_groups(queue, limit=5) == ["ready"] * 5


def test_a_claim_locks_little_beyond_what_it_takes(client, queue, dsn, conn):
    """Each group offered as many candidates as the claim had slots: a claim of 50
    across 50 groups held 2,450 rows it did not take until it committed."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 20}"} for n in range(400)])
    with psycopg.connect(dsn) as claimer:  # the claim's transaction stays open
        claimer.execute(
            "SELECT count(*) FROM omnispindle.claim_tasks(ARRAY['shared'], ARRAY[]::text[], "
            "20, gen_random_uuid(), 30)"
        )
        with conn.transaction():
            free = conn.execute(
                "SELECT count(*) FROM (SELECT id FROM omnispindle.tasks "
                "WHERE task_type = 'shared' FOR UPDATE SKIP LOCKED) r"
            ).fetchone()[0]
        claimer.rollback()
    held_not_taken = 400 - free - 20
    assert held_not_taken <= 20, held_not_taken  # at most one more per group


def test_the_group_without_a_key_is_found_without_walking_other_types(client, queue, dsn):
    """By priority alone, the probe for it walked every type's pending tasks."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "other", "priority": 5}] * 2000)
    client.submit_batch([{"task_type": "shared"}] * 3)
    with psycopg.connect(dsn) as conn:  # one transaction: its own statistics
        conn.execute(
            "SELECT count(*) FROM omnispindle.claim_tasks(ARRAY['shared'], ARRAY[]::text[], "
            "3, gen_random_uuid(), 30)"
        )
        fetched = xact_tasks_fetched(conn)
    assert fetched < 100, fetched


def test_a_claim_planned_on_an_empty_queue_reads_only_its_groups_under_a_flood(client, dsn):
    """A worker plans its claims once per session, often on an empty queue. With
    an equality on group_key, that plan walked tasks_ready_idx over every pending
    task to find each group's first ones: a claim of 4 read 5,000 index entries."""
    client.set_task_type_strategy("shared", "fair")
    with psycopg.connect(dsn, autocommit=True) as worker:
        assert fair_claim(worker, 4) == []  # planned now, on an empty queue
        flood(client, big=5000, small=10)
        before = index_entries_read(worker)
        assert len(fair_claim(worker, 4)) == 4
        assert index_entries_read(worker) - before < 200


def test_a_claim_reads_a_window_of_the_groups_however_many_there_are(client, dsn):
    """Every claim probed every group with pending tasks: at 1,000 groups a claim
    took 15 ms, at 16,000 190 ms."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n:04}"} for n in range(3000)])
    with psycopg.connect(dsn) as worker:  # one transaction: its own statistics
        assert len(fair_claim(worker, 4)) == 4
        [probes] = worker.execute(
            "SELECT pg_stat_get_xact_numscans('omnispindle.tasks_group_ready_idx'::regclass)"
        ).fetchone()
    # A window of 4 + 16 groups, and each chosen group's candidates.
    assert probes <= 30, probes


def test_many_groups_take_turns_each_once_a_round(client, dsn, conn):
    """Past the window a claim reads, the groups' turn goes on from where the
    connection's last claim left off: with every group at 0 running, each group
    starts one task a round, the tasks without a group_key included. Drawing lots
    between the groups of each window gave some groups two starts a round, and
    others none."""
    client.set_task_type_strategy("shared", "fair")
    keys = [f"g{n:02}" for n in range(59)]
    client.submit_batch([{"task_type": "shared", "group_key": key} for key in keys * 3])
    client.submit_batch([{"task_type": "shared"}] * 10)
    with psycopg.connect(dsn, autocommit=True) as worker:
        for _ in range(2):
            started = []
            for _ in range(12):
                ids = [row[0] for row in fair_claim(worker, 5)]
                started += [group_of_id(conn, task_id) for task_id in ids]
                finish(conn, len(ids), "shared")
            assert collections.Counter(started) == dict.fromkeys([*keys, None], 1)


def test_a_window_of_groups_at_their_limit_holds_back_no_other_group(client, dsn):
    """The window counts the groups running beside the claim's slots: those a
    limit per group holds back never fill it."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=1)
    client.submit_batch(
        [{"task_type": "shared", "group_key": f"g{n % 100:02}"} for n in range(200)]
    )
    with psycopg.connect(dsn, autocommit=True) as worker:
        assert [len(fair_claim(worker, 30)) for _ in range(5)] == [30, 30, 30, 10, 0]


def test_groups_take_turns_at_the_starts_a_limit_lets_through(client, dsn, conn):
    """A claim offers more candidates than a limit may let start; the turn goes on
    past the groups of those that start, so that the next group is first next
    time."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running=1)
    flood(client, big=20, small=20)
    started = []
    with psycopg.connect(dsn, autocommit=True) as worker:
        for _ in range(10):
            [[task_id]] = fair_claim(worker, 8)
            started.append(group_of_id(conn, task_id))
            finish(conn, 1, "shared")
    assert started == ["small", "big"] * 5, started


def test_groups_with_nothing_to_start_leave_the_window_to_the_others(client, dsn):
    """Groups whose tasks are all delayed or need a capability the worker lacks
    come first in the turn: a window counted by place was all theirs, and the
    first two claims of 10 came back empty, 10 groups having tasks ready."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch(
        [{"task_type": "shared", "group_key": f"d{n:02}", "delay": 3600} for n in range(30)]
        + [
            {"task_type": "shared", "group_key": f"c{n:02}", "required_capabilities": ["gpu"]}
            for n in range(30)
        ]
        + [{"task_type": "shared", "group_key": f"a{n}"} for n in range(10)]
    )
    with psycopg.connect(dsn, autocommit=True) as worker:
        assert len(fair_claim(worker, 10)) == 10


def test_groups_out_of_tokens_leave_the_window_to_the_others(client, dsn, conn):
    """As groups with nothing ready: a window of groups out of tokens came back
    empty."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", starts_per_second_per_group=0.001)
    client.submit_batch([{"task_type": "shared", "group_key": f"d{n:02}"} for n in range(60)] * 2)
    with psycopg.connect(dsn, autocommit=True) as worker:
        assert len(fair_claim(worker, 60)) == 60
    finish(conn, 60, "shared")
    client.submit_task("shared", group_key="a")
    with psycopg.connect(dsn, autocommit=True) as worker:  # from the top: d59 first
        assert len(fair_claim(worker, 1)) == 1


@pytest.mark.parametrize("value", ["x", "[1, 2]", '"g1"', "42"])
def test_a_session_setting_the_turns_to_what_is_not_a_map_still_claims(client, dsn, value):
    """omnispindle_fair.after set by hand, not a JSON object: every claim of a
    fair type failed (invalid json, or no path to set in it)."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n}"} for n in range(3)])
    with psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute("SELECT set_config('omnispindle_fair.after', %s, false)", [value])
        assert [len(fair_claim(worker, 1)) for _ in range(3)] == [1, 1, 1]


def test_a_claim_beside_another_takes_the_next_group_in_turn(client, dsn, conn):
    """Two workers' claims at the same moment follow the same turn: the second,
    finding the task of its turn's group held by the first, came back with
    nothing (17 claims of 160 empty with 4 workers claiming at once)."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n:03}"} for n in range(200)])
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        [[held]] = fair_claim(first, 1)  # its transaction stays open
        [[taken]] = fair_claim(second, 1)
        assert group_of_id(conn, taken) != group_of_id(conn, held)
        first.rollback()


def group_of_id(conn, task_id):
    return conn.execute(
        "SELECT group_key FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]


def fair_claim(worker, limit):
    """A claim of ``limit`` on the worker's own connection (so its own cached plan)."""
    return worker.execute(
        "SELECT id FROM omnispindle.claim_tasks(ARRAY['shared'], ARRAY[]::text[], %s, "
        "gen_random_uuid(), 30)",
        [limit],
    ).fetchall()


def index_entries_read(session):
    """The entries of the tasks' indexes read so far, the session's own reads flushed."""
    session.execute("SELECT pg_stat_force_next_flush()")
    return session.execute(
        "SELECT sum(idx_tup_read) FROM pg_stat_user_indexes "
        "WHERE relid = 'omnispindle.tasks'::regclass"
    ).fetchone()[0]


def test_a_limit_per_group_caps_each_group_and_the_rest_take_its_slots(client, queue, conn):
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=2)
    flood(client, big=50, small=50)
    client.submit_batch([{"task_type": "shared", "group_key": "third"}] * 50)
    assert collections.Counter(claim_groups(queue, limit=10)) == {"big": 2, "small": 2, "third": 2}
    assert claim_groups(queue, limit=10) == []
    [limit] = client.task_type_limits()
    assert (limit["max_running_per_group"], limit["running"], limit["held_back"]) == (2, 6, 144)
    conn.execute(
        "SELECT omnispindle.complete_attempts(array_agg(id), array_agg(lease_token), "
        "array_agg('{}'::jsonb)) FROM omnispindle.tasks "
        "WHERE state = 'running' AND group_key = 'small'"
    )
    assert claim_groups(queue, limit=10) == ["small", "small"]


def test_the_tasks_without_a_group_are_one_group_for_its_limit(client, queue):
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=3)
    client.submit_batch([{"task_type": "shared"}] * 20)
    assert claim_groups(queue, limit=10) == [None] * 3


def test_concurrent_claims_never_run_more_of_a_group_than_its_limit(client, queue, conn):
    """Each claim picks its candidates before the limits' lock; it counts each
    group's running tasks again under the lock."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=3)
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 7}"} for n in range(300)])
    barrier = threading.Barrier(6)

    def claimer() -> None:
        barrier.wait(10)
        for _ in range(10):
            queue.db.run(claim_query(["shared"], limit=4))

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    running = dict(
        conn.execute(
            "SELECT group_key, count(*) FROM omnispindle.tasks WHERE state = 'running' "
            "GROUP BY group_key"
        ).fetchall()
    )
    assert running == {f"g{n}": 3 for n in range(7)}


@pytest.mark.parametrize(
    "limits",
    [{"max_running_per_group": bad} for bad in (0, -1, True, 2.5, 10**12, "2")]
    + [
        {"starts_per_second_per_group": bad}
        for bad in (0, -1, float("nan"), float("inf"), 2e6, "5")
    ],
)
def test_a_bad_limit_per_group_is_a_validation_error_that_changes_nothing(client, limits):
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=4)
    with pytest.raises(ValidationError, match="per_group"):
        client.set_task_type_limit("shared", **limits)
    [kept] = client.task_type_limits()
    assert (kept["max_running_per_group"], kept["starts_per_second_per_group"]) == (4, None)


def test_a_limit_per_group_needs_the_fair_strategy_and_keeps_it(client, conn):
    with pytest.raises(ValidationError, match="fair strategy"):
        client.set_task_type_limit("shared", max_running_per_group=2)
    with pytest.raises(ValidationError, match="fair strategy"):
        client.set_task_type_limit("shared", starts_per_second_per_group=2)
    client.set_task_type_strategy("shared", "aging", aging_seconds=5)
    with pytest.raises(ValidationError, match="fair strategy"):
        client.set_task_type_limit("shared", max_running_per_group=2)
    assert client.task_type_limits() == []
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", max_running_per_group=2)
    for strategy, aging in (("priority", None), ("aging", 5)):
        with pytest.raises(ValidationError, match="limit per group"):
            client.set_task_type_strategy("shared", strategy, aging_seconds=aging)
    assert [s["strategy"] for s in client.task_type_strategies()] == ["fair"]
    with pytest.raises(psycopg.Error) as refused:
        conn.execute("SELECT omnispindle.set_task_type_limit('other', max_running_per_group => 2)")
    assert refused.value.sqlstate == "OS005"


def test_a_limit_per_group_waits_out_a_strategy_set_again_and_finds_it_fair(client, dsn, conn):
    """A transaction set the strategy to priority and back to fair (a delete and
    an insert) while a limit per group waited for the strategy's row: the limit
    found the old row gone and the new one outside its snapshot, and was refused
    for want of the fair strategy."""
    client.set_task_type_strategy("shared", "fair")
    outcome: dict[str, object] = {}

    def set_limit() -> None:
        try:
            client.set_task_type_limit("shared", max_running_per_group=2)
            outcome["set"] = True
        except ValidationError as exc:
            outcome["error"] = exc

    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT omnispindle.set_task_type_strategy('shared', 'priority')")
        holder.execute("SELECT omnispindle.set_task_type_strategy('shared', 'fair')")
        thread = threading.Thread(target=set_limit)
        thread.start()
        poll(lambda: outcome or waiting_for_a_lock(conn, "set_task_type_limit"))
        holder.commit()
        thread.join(30)
    assert outcome == {"set": True}
    assert [limit["max_running_per_group"] for limit in client.task_type_limits()] == [2]


def test_the_command_sets_a_limit_per_group(dsn, client):
    client.set_task_type_strategy("shared", "fair")
    done = command("limit", "shared", "--max-running-per-group", "2", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert "at most 2 running per group" in done.stdout
    assert [limit["max_running_per_group"] for limit in client.task_type_limits()] == [2]
    done = command("limit", "shared", "--max-running-per-group", "0", "--dsn", dsn)
    assert done.returncode == 2 and "max running per group" in done.stderr
    done = command("limit", "other", "--max-running-per-group", "2", "--dsn", dsn)
    assert done.returncode == 2 and "needs the fair strategy" in done.stderr
    done = command("strategy", "shared", "priority", "--dsn", dsn)
    assert done.returncode == 2 and "limit per group" in done.stderr
    done = command("limit", "shared", "--starts-per-second-per-group", "3", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    assert "at most 3 starts/s per group" in done.stdout
    [limit] = client.task_type_limits()
    assert (limit["max_running_per_group"], limit["starts_per_second_per_group"]) == (None, 3.0)


def test_a_rate_per_group_starts_each_group_no_faster_than_its_rate(client, queue, conn):
    client.set_task_type_strategy("shared", "fair")
    # A bucket of 1 per group, refilled once every 1,000 s: none comes during the test.
    client.set_task_type_limit("shared", starts_per_second_per_group=0.001)
    flood(client, big=50, small=50)
    assert collections.Counter(claim_groups(queue, limit=10)) == {"big": 1, "small": 1}
    assert claim_groups(queue, limit=10) == []
    buckets = conn.execute(
        "SELECT group_tokens FROM omnispindle.task_type_limits WHERE task_type = 'shared'"
    ).fetchone()[0]
    assert sorted(buckets) == ["big", "small"] and all(t < 1 for t, _ in buckets.values())
    # As if 1,000 s had passed: each group has a token again.
    conn.execute(
        "UPDATE omnispindle.task_type_limits SET group_tokens = (SELECT jsonb_object_agg("
        "key, jsonb_build_array((value ->> 0)::float8, (value ->> 1)::float8 - 1000)) "
        "FROM jsonb_each(group_tokens)) WHERE task_type = 'shared'"
    )
    assert collections.Counter(claim_groups(queue, limit=10)) == {"big": 1, "small": 1}


def test_leaving_fair_waits_for_a_limit_per_group_being_set_then_is_refused(client, dsn, conn):
    """Each setter checked the other's table with its own snapshot: run at once,
    both committed, and left a limit per group on a strictly ordered type."""
    client.set_task_type_strategy("shared", "fair")
    outcome: dict[str, object] = {}

    def leave_fair() -> None:
        try:
            client.set_task_type_strategy("shared", "priority")
            outcome["error"] = None
        except ValidationError as exc:
            outcome["error"] = exc

    with psycopg.connect(dsn) as setter:  # its transaction stays open
        setter.execute(
            "SELECT omnispindle.set_task_type_limit('shared', max_running_per_group => 2)"
        )
        thread = threading.Thread(target=leave_fair)
        thread.start()
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%set_task_type_strategy%%' AND datname = current_database()"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the strategy change never waited"
            time.sleep(0.01)
        setter.commit()
    thread.join(30)
    assert isinstance(outcome["error"], ValidationError)
    assert [s["strategy"] for s in client.task_type_strategies()] == ["fair"]


def test_a_group_out_of_tokens_leaves_its_turns_to_the_others(client, queue, conn):
    """A group without tokens took turns and came back with nothing: with one
    slot per claim, a claim found no task though other groups had some."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", starts_per_second_per_group=0.01)  # a bucket of 1
    client.submit_batch([{"task_type": "shared", "group_key": "early"}] * 5)
    assert claim_groups(queue, limit=5) == ["early"]
    finish(conn, 1, "shared")  # no task running: only its empty bucket holds it back
    client.submit_batch([{"task_type": "shared", "group_key": f"late{n}"} for n in range(6)])
    taken = [group for _ in range(6) for group in claim_groups(queue, limit=1)]
    assert sorted(taken) == [f"late{n}" for n in range(6)]


def test_concurrent_claims_never_start_more_of_a_group_than_its_tokens(client, queue):
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", starts_per_second_per_group=0.01)  # a bucket of 1
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 5}"} for n in range(100)])
    taken: list[str] = []
    barrier = threading.Barrier(4)

    def claimer() -> None:
        barrier.wait(10)
        for _ in range(5):
            taken.extend(claim_groups(queue, limit=3))

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert collections.Counter(taken) == {f"g{n}": 1 for n in range(5)}


def test_a_worker_starts_a_groups_tasks_at_its_rate_and_the_others_alongside(client, start_worker):
    starts: dict[str, list[float]] = collections.defaultdict(list)
    client.set_task_type_strategy("paced", "fair")
    client.set_task_type_limit("paced", starts_per_second_per_group=10)
    start_worker(
        {"paced": lambda task: starts[task["parameters"]["g"]].append(time.monotonic()) or {}},
        concurrency=8,
    )
    ids = client.submit_batch(
        [
            {"task_type": "paced", "group_key": g, "parameters": {"g": g}}
            for g in "ab"
            for _ in range(30)
        ]
    )
    assert {t["state"] for t in client.wait_for_batch(ids, timeout=60)} == {"succeeded"}
    for group in "ab":
        # 30 starts from a bucket of 10 refilled at 10/s take at least 2 s.
        assert max(starts[group]) - min(starts[group]) >= 2 * 0.9, group
    # The two groups ran side by side, not one after the other.
    assert min(starts["b"]) < max(starts["a"]) and min(starts["a"]) < max(starts["b"])


def test_a_claim_under_every_limit_reads_and_writes_the_type_little(client, dsn):
    """With every limit on a fair type, a claim probed each group twice to find
    those with a task to start, looked each candidate up again by its key,
    counted the type's running tasks three times (a first look, then under the
    lock for the type and for each group) and wrote the type's row twice."""
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit(
        "shared",
        max_running=1000,
        starts_per_second=1e6,
        burst=10**6,
        max_running_per_group=1000,
        starts_per_second_per_group=1e6,
    )
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 10}"} for n in range(200)])
    with psycopg.connect(dsn) as conn:  # one transaction: its own statistics
        assert len(fair_claim(conn, 32)) == 32
        scans = dict(
            conn.execute(
                "SELECT c.relname, pg_stat_get_xact_numscans(c.oid) FROM pg_class c "
                "WHERE c.relname IN ('tasks_group_ready_idx', 'tasks_running_type_idx', "
                "'tasks_pkey')"
            ).fetchall()
        )
        [limits_written] = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_xact_user_tables "
            "WHERE schemaname = 'omnispindle' AND relname = 'task_type_limits'"
        ).fetchone()
    # Finding the 10 groups and whether each has a task to start (11 probes),
    # the group without a key, then each group's candidates.
    assert scans["tasks_group_ready_idx"] <= 22, scans
    assert scans["tasks_running_type_idx"] <= 3, scans  # and once for fair share's order
    assert scans["tasks_pkey"] <= 32, scans  # the update of the 32 it takes
    assert limits_written == 1


def test_a_claim_finds_the_groups_without_walking_over_claimed_tasks(client, queue, dsn):
    """Each group was found from the start of its range, over the entries of its
    tasks already claimed, which stay until vacuum removes them (and while an old
    snapshot lasts, it cannot): 21 entries a group here, against 1 from the end."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n % 10}"} for n in range(500)])
    with psycopg.connect(dsn) as old_snapshot:
        old_snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        old_snapshot.execute("SELECT count(*) FROM omnispindle.tasks")
        assert len(queue.db.run(claim_query(["shared"], 200))) == 200  # 20 a group
        with psycopg.connect(dsn) as conn:  # one transaction: its own statistics
            assert len(fair_claim(conn, 1)) == 1
            [read] = conn.execute(
                "SELECT pg_stat_get_xact_tuples_returned('omnispindle.tasks_group_ready_idx'"
                "::regclass)"
            ).fetchone()
    # The one group that gives the task is still read from its start.
    assert read < 60, read


def test_a_claim_reads_the_buckets_of_thousands_of_groups_in_linear_time(client, queue, conn):
    """The map of the groups' buckets is stored compressed once it holds thousands
    of groups: each group's lookup decompressed it whole again, so that a claim
    of 8,000 groups, all out of tokens, took 2 s, against 0.08 s with the map empty."""
    groups = 8000
    client.set_task_type_strategy("shared", "fair")
    client.set_task_type_limit("shared", starts_per_second_per_group=0.001)
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n}"} for n in range(groups)])
    conn.execute("ANALYZE omnispindle.tasks")
    assert len(claim_groups(queue, limit=10)) == 10  # plans made, off the clock

    def fastest_claim(spent):
        """The best of two claims of 10, each after every group's bucket was
        emptied (``spent``) or filled (the map empty)."""
        times, taken = [], []
        for _ in range(2):
            conn.execute(
                "UPDATE omnispindle.task_type_limits SET group_tokens = CASE WHEN %s THEN "
                "(SELECT jsonb_object_agg('g' || n,"
                " jsonb_build_array(0, extract(epoch FROM now())))"
                " FROM generate_series(0, %s - 1) n) ELSE '{}' END WHERE task_type = 'shared'",
                [spent, groups],
            )
            start = time.perf_counter()
            taken.append(len(claim_groups(queue, limit=10)))
            times.append(time.perf_counter() - start)
        return min(times), taken

    walk_alone, taken = fastest_claim(spent=False)
    assert taken == [10, 10]
    with_buckets, taken = fastest_claim(spent=True)
    assert taken == [0, 0]
    assert with_buckets < 5 * walk_alone, (with_buckets, walk_alone)

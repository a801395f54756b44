"""History: finished tasks move from tasks into a partitioned task_history,
where they read as before, and retention drops whole partitions."""

from __future__ import annotations

import json
import threading

import pytest

from omnispindle import TaskNotFoundError, TaskQueueClient, ValidationError, WorkerClient
from omnispindle._maintenance import history, rollup
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle.cli.main import main

from ..acceptance.workers import poll
from .test_retention import HOUR, finished_tasks, make_old

DEADLINE = 30


def archive_all(queue, *, after: float = 60.0, keep: float | None = None) -> int:
    """Count the finished tasks into the rollup, then archive until a pass moves none."""
    rollup.roll_up(queue.db)
    archiver = history.Archiver(queue.db, after, keep, batch=4)
    total = 0
    while moved := archiver.run_once()[0]:
        total += moved
    return total


def in_table(conn, table: str, ids: list[int]) -> list[int]:
    rows = conn.execute(
        f"SELECT id FROM omnispindle.{table} WHERE id = ANY (%s) ORDER BY id", [ids]
    ).fetchall()
    return [row[0] for row in rows]


def partitions(conn) -> list[str]:
    rows = conn.execute("SELECT name FROM omnispindle.history_partitions ORDER BY from_at")
    return [row[0] for row in rows]


def test_finished_tasks_past_the_horizon_move_and_read_as_before(client, queue, conn):
    old = (
        finished_tasks(conn, 5)
        + finished_tasks(conn, 2, state="failed")
        + finished_tasks(conn, 1, state="cancelled")
    )
    recent = finished_tasks(conn, 2, age="1 second")
    pending = client.submit_task("job")
    before = {task_id: client.get_task(task_id) for task_id in old}

    assert archive_all(queue) == len(old)
    assert in_table(conn, "tasks", old) == []
    assert in_table(conn, "task_history", old) == old
    assert in_table(conn, "tasks", recent + [pending]) == sorted(recent + [pending])
    assert {task_id: client.get_task(task_id) for task_id in old} == before
    # A wait finds them finished, whether it names few ids or many.
    assert client.wait_for_task(old[0], timeout=DEADLINE) == before[old[0]]
    waited = client.wait_for_batch(old + recent, timeout=DEADLINE)
    assert [record["task_id"] for record in waited] == old + recent
    # The views a person reads show them too.
    shown = conn.execute(
        "SELECT task_id, state::text FROM omnispindle.task_details WHERE task_id = ANY (%s)",
        [old],
    ).fetchall()
    assert sorted(shown) == sorted((i, before[i]["state"]) for i in old)
    failed = conn.execute("SELECT count(*) FROM omnispindle.failed_tasks").fetchone()[0]
    assert failed == 2
    with pytest.raises(TaskNotFoundError):
        client.wait_for_task(old[-1] + 10_000, timeout=DEADLINE)


def test_a_wait_on_many_finds_archived_tasks_among_unfinished_ones(client, queue, conn):
    old = finished_tasks(conn, 40)
    assert archive_all(queue) == 40
    later = client.submit_task("job")
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() WHERE id = %s",
        [later],
    )
    records = client.wait_for_batch(old + [later], timeout=DEADLINE)
    assert [record["state"] for record in records] == ["succeeded"] * 40 + ["cancelled"]
    assert [record["result"] for record in records[:40]] == [{"n": n} for n in range(1, 41)]


def test_a_parent_stays_while_a_dependent_may_still_read_it(client, queue, conn):
    parent = finished_tasks(conn, 1)[0]
    other = client.submit_task("later")  # no worker runs it: keeps `blocked` blocked
    blocked = client.submit_task("job", dependencies=[parent, other])
    assert archive_all(queue) == 0
    client.cancel_task(other)  # and `blocked` with it
    make_old(conn, [other, blocked])
    assert archive_all(queue) == 3
    assert in_table(conn, "task_history", [parent, other, blocked]) == [parent, other, blocked]


def test_retention_drops_whole_partitions_past_it(client, queue, conn):
    conn.execute(
        "SELECT omnispindle.add_history_partition(date_trunc('minute', now()) - interval '3 hours',"
        " date_trunc('minute', now()) - interval '2 hours')"
    )
    first = partitions(conn)
    oldest = finished_tasks(conn, 3, age="150 minutes")
    older = finished_tasks(conn, 3, age="90 minutes")
    rollup.roll_up(queue.db)
    moved, dropped = history.Archiver(queue.db, 60.0, HOUR, 100).run_once()
    assert (moved, dropped) == (6, 1)
    assert first[0] not in partitions(conn)
    assert conn.execute("SELECT to_regclass(%s)", [f"omnispindle.{first[0]}"]).fetchone()[0] is None
    with pytest.raises(TaskNotFoundError):
        client.get_task(oldest[0])
    assert client.get_task(older[0])["result"] == {"n": 1}


def test_partitions_follow_the_clock_and_reach_back_to_an_old_task(queue, conn):
    history.Archiver(queue.db, 60.0, 600.0, 100).run_once()
    ahead = conn.execute(
        "SELECT max(to_at) > now() + interval '1 minute', min(from_at) <= now(),"
        " bool_and(to_at - from_at = interval '1 minute') FROM omnispindle.history_partitions"
    ).fetchone()
    assert ahead == (True, True, True)
    old = finished_tasks(conn, 2, age="5 hours")
    rollup.roll_up(queue.db)
    # Past a 10-minute retention, no partition reaches back for them: pruning takes them.
    assert history.Archiver(queue.db, 60.0, 600.0, 100).run_once()[0] == 0
    oldest = conn.execute(
        "SELECT min(from_at) > now() - interval '11 minutes' FROM omnispindle.history_partitions"
    ).fetchone()[0]
    assert oldest
    # Kept for a day, they move in one pass of a fresh archiver (as `sweep --once` runs).
    assert history.Archiver(queue.db, 60.0, 86400.0, 100).run_once()[0] == 2
    assert in_table(conn, "task_history", old) == old


def test_two_archivers_at_once_move_each_task_once(queue, conn):
    ids = finished_tasks(conn, 300)
    rollup.roll_up(queue.db)
    moved: list[int] = []

    def archive() -> None:
        archiver = history.Archiver(queue.db, 60.0, None, 10)
        for _ in range(100):
            moved.append(archiver.run_once()[0])

    threads = [threading.Thread(target=archive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert sum(moved) == 300
    rows = conn.execute("SELECT count(*), count(DISTINCT id) FROM omnispindle.task_history")
    assert rows.fetchone() == (300, 300)
    assert in_table(conn, "tasks", ids) == []


def test_a_worker_with_an_archive_horizon_moves_what_it_ran(client, start_worker, conn):
    ids = client.submit_batch([{"task_type": "job", "parameters": {"n": n}} for n in range(20)])
    start_worker({"job": lambda task: {"n": task["parameters"]["n"]}}, archive_after=0.5)
    records = client.wait_for_batch(ids, timeout=DEADLINE)
    poll(lambda: in_table(conn, "tasks", ids) == [], timeout=DEADLINE)
    assert in_table(conn, "task_history", ids) == sorted(ids)
    assert client.wait_for_batch(ids, timeout=DEADLINE) == records


def test_an_archive_horizon_out_of_range_is_refused(queue):
    for bad in (0, -1, float("nan"), "1h"):
        with pytest.raises(ValidationError):
            SweeperConfig(archive_after=bad)
        with pytest.raises(ValidationError):
            WorkerClient(local_queue=queue, archive_after=bad)


def test_the_history_has_the_columns_of_tasks(conn):
    columns = """
        SELECT array_agg((attname, format_type(atttypid, atttypmod))::text ORDER BY attnum)
        FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
    """
    tasks = conn.execute(columns, ["omnispindle.tasks"]).fetchone()[0]
    assert conn.execute(columns, ["omnispindle.task_history"]).fetchone()[0] == tasks


def test_the_sweeper_archives_and_prunes_only_what_is_past_the_retention(queue, conn):
    kept = finished_tasks(conn, 5, age="2 hours")
    past = finished_tasks(conn, 2, age="5 hours")
    sweeper = Sweeper(queue.db, SweeperConfig(retention=3 * HOUR, archive_after=60.0))
    first = sweeper.run_once()
    assert (first.pruned, first.archived) == (2, 5)
    assert in_table(conn, "task_history", kept + past) == kept
    assert TaskQueueClient(local_queue=queue).get_task(kept[0])["state"] == "succeeded"


def test_the_cli_waits_for_archived_tasks(capsys, dsn, queue, conn):
    ids = finished_tasks(conn, 2)
    assert archive_all(queue) == 2
    code = main(["wait", *map(str, ids), "--dsn", dsn, "--json"])
    records = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(r["task_id"], r["result"]) for r in records] == [
        (ids[0], {"n": 1}),
        (ids[1], {"n": 2}),
    ]


def test_a_failed_dependent_keeps_its_parent_for_the_retention(client, queue, conn):
    """A -> B -> C: B failed 10 minutes ago and C still waits on it, so B stays;
    B may be retried by hand for the retention (an hour), and needs A's result."""
    parent = finished_tasks(conn, 1)[0]
    failed = finished_tasks(conn, 1, state="failed", age="10 minutes")[0]
    waiting = client.submit_task("later")
    conn.execute(
        "INSERT INTO omnispindle.task_dependencies (task_id, depends_on) VALUES (%s, %s), (%s, %s)",
        [failed, parent, waiting, failed],
    )
    assert archive_all(queue, after=60.0, keep=HOUR) == 0
    assert in_table(conn, "tasks", [parent, failed]) == [parent, failed]


def test_an_archive_horizon_past_the_retention_is_refused(queue):
    with pytest.raises(ValidationError, match="shorter than the retention"):
        SweeperConfig(retention=60.0, archive_after=60.0)
    with pytest.raises(ValidationError, match="shorter than the retention"):
        WorkerClient(local_queue=queue, retention=60.0, archive_after=120.0)


def test_a_dependent_a_failure_cancelled_keeps_its_other_parent_while_it_may_come_back(
    client, queue, conn, start_worker
):
    """`report` waits on `parent` and `fetch`; `fetch` fails and cancels it. While
    `fetch` may be retried with its dependents, `report` may run again, and then
    reads `parent`'s result: `parent` stays in tasks, archived or not."""
    parent = finished_tasks(conn, 1, age="10 minutes")[0]
    fetch = client.submit_task("fetch", max_retries=0)
    report = client.submit_task("report", dependencies=[parent, fetch])
    service_up = threading.Event()

    def fetched(task):
        if not service_up.is_set():
            raise RuntimeError("service down")
        return {"fetched": True}

    start_worker({"fetch": fetched, "report": lambda task: {"seen": task["dependency_results"]}})
    assert client.wait_for_task(report, timeout=DEADLINE)["cancel_reason"] == (
        f"dependency {fetch} failed"
    )
    assert archive_all(queue, after=60.0, keep=HOUR) == 0
    assert in_table(conn, "tasks", [parent, fetch, report]) == [parent, fetch, report]
    service_up.set()
    assert client.retry_task(fetch, with_dependents=True)["dependents"] == [report]
    assert client.wait_for_task(report, timeout=DEADLINE)["result"] == {
        "seen": {str(parent): {"n": 1}, str(fetch): {"fetched": True}}
    }
    # Once `fetch` has succeeded, nothing can bring `report` back: all three may go.
    make_old(conn, [fetch, report], age="5 minutes")
    assert archive_all(queue, after=60.0, keep=HOUR) == 3

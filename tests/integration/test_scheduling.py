"""Delayed tasks and periodic tasks from cron expressions."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import psycopg
import pytest

from omnispindle import ValidationError
from omnispindle._core.cron import CronExpression
from omnispindle._db import queries as q
from omnispindle._db.notifier import READY_CHANNEL
from omnispindle._db.pool import execute
from omnispindle._db.query import Query
from omnispindle._maintenance.periodic import PeriodicScheduler
from omnispindle.errors import CronExpressionError
from tests.acceptance.workers import poll, start_worker_process
from tests.integration.test_fast_paths import claim
from tests.integration.test_type_limits import waiting_for_a_lock


def started_at(client, task_id):
    return client.get_task(task_id)["started_at"]


def test_delay_holds_a_task_back_then_a_sleeping_worker_starts_it_on_time(client, start_worker):
    start_worker({"t": lambda task: {}}, poll_interval=30)
    submitted = datetime.now(timezone.utc)
    task_id = client.submit_task("t", delay=1.0)
    assert client.get_task(task_id)["state"] == "pending"
    task = client.wait_for_task(task_id, timeout=10)
    waited = (task["started_at"] - submitted).total_seconds()
    # The worker's poll interval is 30 s: only the notification's due time woke it.
    assert 1.0 <= waited < 2.0, waited


def test_run_at_and_timedelta_delay(client, start_worker):
    at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    first = client.submit_task("t", run_at=at)
    second = client.submit_task("t", delay=timedelta(milliseconds=300))
    assert client.get_task(first)["run_after"] == at
    start_worker({"t": lambda task: {}})
    for task_id in (first, second):
        task = client.wait_for_task(task_id, timeout=10)
        assert task["started_at"] >= task["run_after"]
    assert client.get_task(first)["started_at"] >= at


def test_a_delayed_dependent_waits_for_both_its_parent_and_its_time(client, start_worker):
    parent = client.submit_task("t")
    # A delay counts from the caller's clock, so the bound is read here rather than from
    # created_at, which the server stamps when the insert's transaction starts.
    submitted = datetime.now(timezone.utc)
    child = client.submit_task("t", dependencies=[parent], delay=1.0)
    start_worker({"t": lambda task: {}})
    parent_task = client.wait_for_task(parent, timeout=10)
    child_task = client.wait_for_task(child, timeout=10)
    assert child_task["started_at"] >= submitted + timedelta(seconds=1)
    assert child_task["started_at"] > parent_task["finished_at"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"run_at": "2030-01-01"}, "run_at must be a datetime"),
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"delay": -1}, "delay must be a non-negative"),
        ({"delay": float("nan")}, "delay must be"),
        ({"delay": "5"}, "delay must be"),
        ({"delay": 1, "run_at": datetime.now(timezone.utc)}, "not both"),
        # Each in the years 1 to 9999 where it was written, but not in UTC.
        ({"run_at": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))}, "9999"),
        ({"run_at": datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "9999 in UTC"),
    ],
)
def test_bad_times_are_refused_and_nothing_is_inserted(client, conn, arguments, message):
    with pytest.raises(ValidationError, match=message):
        client.submit_task("t", **arguments)
    with pytest.raises(ValidationError, match=message):
        client.submit_batch([{"task_type": "t"}, {"task_type": "t", **arguments}])
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "0 0 30 2 *", "", 5, "@reboot"])
def test_a_bad_cron_expression_is_refused_and_nothing_is_saved(client, conn, cron):
    with pytest.raises(CronExpressionError):
        client.add_periodic_task("job", cron, "t")
    assert conn.execute("SELECT count(*) FROM omnispindle.periodic_tasks").fetchone()[0] == 0


def test_bad_schedule_arguments_are_refused(client, conn):
    with pytest.raises(ValidationError, match="name"):
        client.add_periodic_task("", "* * * * *", "t")
    with pytest.raises(ValidationError, match="priority"):
        client.add_periodic_task("job", "* * * * *", "t", priority=5000)
    with pytest.raises(ValidationError, match="enabled"):
        client.add_periodic_task("job", "* * * * *", "t", enabled="yes")
    assert conn.execute("SELECT count(*) FROM omnispindle.periodic_tasks").fetchone()[0] == 0


def test_schedules_are_saved_replaced_listed_and_removed(client):
    client.add_periodic_task("report", "0 6 * * mon", "report", {"kind": "weekly"}, priority=5)
    saved = client.add_periodic_task("report", "@daily", "report")
    assert saved["cron"] == "@daily" and saved["updated_at"] > saved["created_at"]
    listed = client.list_periodic_tasks()
    assert [(s["name"], s["cron"], s["last_tick_at"]) for s in listed] == [
        ("report", "@daily", None)
    ]
    assert client.remove_periodic_task("report") is True
    assert client.remove_periodic_task("report") is False
    assert client.list_periodic_tasks() == []


def test_a_scheduler_keeps_the_expressions_of_the_schedules_saved_now_only(queue, client):
    scheduler = PeriodicScheduler(queue.db)
    for saving in range(5):
        for n in range(50):
            minute = saving * 50 + n
            client.add_periodic_task(f"job-{n}", f"{minute % 60} {minute // 60} * * *", "t")
        scheduler.run_once()
        assert len(scheduler._parsed) == 50
    for n in range(50):
        client.remove_periodic_task(f"job-{n}")
    scheduler.run_once()
    assert scheduler._parsed == {}


def test_a_scheduler_works_out_the_ticks_of_a_schedule_again_only_once_one_is_due(
    queue, client, monkeypatch
):
    """Every pass (one a second) worked out every schedule's ticks from its cron
    expression, due or not: at 10,000 schedules each pass took the worker that held
    the duty a second."""
    for n in range(200):
        client.add_periodic_task(f"job-{n}", f"{n % 60} {n // 60 % 24} * * *", "t")
    scheduler = PeriodicScheduler(queue.db)
    assert scheduler.run_once().enqueued == 0
    worked_out = []
    for method in ("next_after", "last_at_or_before"):
        original = getattr(CronExpression, method)
        monkeypatch.setattr(
            CronExpression,
            method,
            lambda self, moment, original=original: (
                worked_out.append(self) or original(self, moment)
            ),
        )
    waits = scheduler.run_once()
    assert (waits.enqueued, worked_out) == (0, [])
    assert 0 < waits.next_tick_in <= 24 * 3600
    client.add_periodic_task("job-0", "* * * * * *", "t")  # saved again: worked out again
    scheduler.run_once()
    assert {cron.text for cron in worked_out} == {"* * * * * *"}


def test_each_tick_is_enqueued_once_however_many_schedulers_ask(queue, client, conn):
    client.add_periodic_task("tick", "* * * * * *", "t", {"from": "cron"}, priority=7)
    poll(
        lambda: conn.execute(
            "SELECT now() >= updated_at + interval '1.1 s' FROM omnispindle.periodic_tasks"
        ).fetchone()[0],
        timeout=10,
    )
    schedulers = [PeriodicScheduler(queue.db) for _ in range(8)]
    barrier = threading.Barrier(len(schedulers))
    enqueued = []

    def run(scheduler):
        barrier.wait(timeout=10)
        enqueued.append(scheduler.run_once().enqueued)

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ticks = conn.execute("SELECT tick_at, task_id FROM omnispindle.periodic_ticks").fetchall()
    assert sum(enqueued) == len(ticks) >= 1
    assert len({tick for tick, _ in ticks}) == len(ticks)
    task = client.get_task(ticks[0][1])
    assert (task["task_type"], task["parameters"], task["priority"]) == ("t", {"from": "cron"}, 7)


def test_a_disabled_schedule_and_ticks_before_its_creation_enqueue_nothing(queue, client, conn):
    client.add_periodic_task("hourly", "@hourly", "t")  # its last tick predates it
    client.add_periodic_task("off", "* * * * * *", "t", enabled=False)
    assert PeriodicScheduler(queue.db).run_once().enqueued == 0
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


class SavesAfterReading:
    """Runs the scheduler's statements; once it has read the schedules, a save of
    "report" as a yearly schedule of another task commits."""

    def __init__(self, queue, client) -> None:
        self.queue, self.client, self.runs = queue, client, 0

    def run(self, operation):
        found = self.queue.db.run(operation)
        self.runs += 1
        if self.runs == 1:
            self.client.add_periodic_task("report", "0 0 1 1 *", "new_report", {"v": 2})
        return found


def test_a_tick_read_before_a_save_is_not_enqueued_as_the_new_schedule(queue, client, conn):
    """A schedule saved again between a scheduler's read of the schedules and its
    enqueue had the old schedule's tick enqueued, as a task of the new one: a
    yearly schedule ran its new task at once, from a tick before its save."""
    client.add_periodic_task("report", "* * * * *", "old_report", {"v": 1})
    conn.execute("UPDATE omnispindle.periodic_tasks SET updated_at = now() - interval '1 hour'")
    assert PeriodicScheduler(SavesAfterReading(queue, client)).run_once().enqueued == 0
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


def test_a_tick_that_waited_for_another_runners_is_not_enqueued_after_a_save(
    queue, client, dsn, conn
):
    """A runner waited for another's uncommitted insert of the same tick; a save of
    the schedule committed, then the other runner's transaction ended without
    commit: the waiting runner enqueued the old tick as a task of the new schedule."""
    client.add_periodic_task("report", "* * * * *", "old_report", {"v": 1})
    conn.execute("UPDATE omnispindle.periodic_tasks SET updated_at = now() - interval '1 hour'")
    tick = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]
    enqueued: list[list[object]] = []

    def enqueue() -> None:
        enqueued.append(queue.db.run(q.periodic.enqueue_periodic_ticks(["report"], [tick])))

    with psycopg.connect(dsn) as other_runner:
        other_runner.execute(
            "INSERT INTO omnispindle.periodic_ticks (periodic_name, tick_at) VALUES ('report', %s)",
            [tick],
        )
        thread = threading.Thread(target=enqueue)
        thread.start()
        poll(lambda: enqueued or waiting_for_a_lock(conn, "enqueue_periodic_ticks"), timeout=30)
        client.add_periodic_task("report", "0 0 1 1 *", "new_report", {"v": 2})
        other_runner.rollback()
        thread.join(30)
    assert enqueued == [[]]
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


@pytest.fixture
def ledger(conn):
    conn.execute("CREATE TABLE test_ledger (task_id bigint NOT NULL, pid integer NOT NULL)")
    return conn


@pytest.mark.slow
def test_three_worker_processes_run_an_every_second_schedule_once_per_tick(client, dsn, ledger):
    workers = [start_worker_process(dsn, "--name", f"cron-{n}") for n in range(3)]
    try:
        poll(lambda: len(client.queue.list_workers()) == 3, timeout=60)
        client.add_periodic_task("every-second", "* * * * * *", "record")
        poll(
            lambda: (
                ledger.execute("SELECT count(*) FROM omnispindle.periodic_ticks").fetchone()[0]
                >= 10
            ),
            timeout=40,
            interval=0.2,
        )
        client.add_periodic_task("every-second", "* * * * * *", "record", enabled=False)
        ticks = ledger.execute(
            "SELECT tick_at, task_id FROM omnispindle.periodic_ticks ORDER BY tick_at"
        ).fetchall()
        tasks = client.wait_for_batch([task_id for _, task_id in ticks], timeout=60)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in workers]
    assert codes == [0, 0, 0]
    assert {t["state"] for t in tasks} == {"succeeded"}
    seconds = [int(tick.timestamp()) for tick, _ in ticks]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a tick was skipped"
    runs = ledger.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY task_id").fetchall()
    assert sorted(task_id for task_id, _ in runs) == sorted(task_id for _, task_id in ticks)
    assert {count for _, count in runs} == {1}, "a tick ran twice"
    assert ledger.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == len(ticks)


def test_saving_a_schedule_unchanged_keeps_its_saved_time(client):
    first = client.add_periodic_task("report", "@daily", "report", {"kind": "daily"})
    again = client.add_periodic_task("report", "@daily", "report", {"kind": "daily"})
    assert again["updated_at"] == first["updated_at"]
    changed = client.add_periodic_task("report", "@daily", "report", {"kind": "weekly"})
    assert changed["updated_at"] > first["updated_at"]


def test_ticks_missed_by_a_late_pass_are_enqueued_late(queue, client, conn):
    client.add_periodic_task("tick", "* * * * * *", "t")
    scheduler = PeriodicScheduler(queue.db)
    poll(lambda: scheduler.run_once().enqueued, timeout=10)
    # The next pass comes three ticks late (as after a slow step or an outage).
    poll(
        lambda: conn.execute(
            "SELECT now() >= max(tick_at) + interval '3.2 s' FROM omnispindle.periodic_ticks"
        ).fetchone()[0],
        timeout=10,
    )
    assert scheduler.run_once().enqueued >= 3
    seconds = [
        int(row[0].timestamp())
        for row in conn.execute("SELECT tick_at FROM omnispindle.periodic_ticks ORDER BY tick_at")
    ]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))


def test_a_batch_announces_its_delayed_task_even_beside_a_ready_one(client, start_worker):
    start_worker({"t": lambda task: {}}, poll_interval=30)
    submitted = datetime.now(timezone.utc)
    now_id, later_id = client.submit_batch([{"task_type": "t"}, {"task_type": "t", "delay": 1.0}])
    client.wait_for_task(now_id, timeout=10)
    later = client.wait_for_task(later_id, timeout=10)
    assert 1.0 <= (later["started_at"] - submitted).total_seconds() < 2.0


def test_a_retry_is_announced_with_the_time_it_is_due(client, conn, ready_notices):
    task_id = client.submit_task("job", retry_backoff=60)
    row = claim(conn)[0]
    error = '{"type": "ConnectionError", "message": "down"}'
    notices = ready_notices(
        lambda: execute(
            conn, q.tasks.fail_tasks(ids=[task_id], tokens=[row["lease_token"]], errors=[error])
        )
    )
    due = client.get_task(task_id)["run_after"].timestamp()
    assert [float(n) for n in notices] == [pytest.approx(due, abs=1e-5)]


def test_a_delayed_child_is_announced_when_its_parent_succeeds(client, conn, ready_notices):
    parent = client.submit_task("job")
    child = client.submit_task("job", dependencies=[parent], delay=60)
    row = claim(conn)[0]
    done = q.tasks.Results([parent], [row["lease_token"]], ["{}"])
    notices = ready_notices(lambda: execute(conn, q.tasks.complete_tasks(done)))
    due = client.get_task(child)["run_after"].timestamp()
    assert [float(n) for n in notices] == [pytest.approx(due, abs=1e-5)]


def test_an_idle_worker_starts_a_retry_another_worker_failed_when_it_is_due(
    queue, client, start_worker
):
    fail_now, release = threading.Event(), threading.Event()

    def flaky(task):
        if task["attempt"] == 1:
            fail_now.wait(30)
            raise ConnectionError("service down")
        return {}

    # Nothing but a notice wakes either worker before its poll interval of 30 s.
    quiet = {"poll_interval": 30, "lease_timeout": 120}
    quiet.update(sweep_interval=None, schedule_interval=None)
    hold = {"hold": lambda task: release.wait(60) and {}}
    start_worker({"flaky": flaky, **hold}, concurrency=1, **quiet)
    flaky_id = client.submit_task("flaky", retry_backoff=1.0)
    poll(lambda: client.get_task(flaky_id)["state"] == "running", 10)
    start_worker({"flaky": flaky}, **quiet)
    poll(lambda: queue.notifier.subscriptions(READY_CHANNEL) == 2, 10)
    # The worker that fails it claims this next, and is busy when the retry is due.
    hold_id = client.submit_task("hold")
    fail_now.set()
    try:
        poll(lambda: client.get_task(hold_id)["state"] == "running", 10)
        task = client.wait_for_task(flaky_id, timeout=60)
    finally:
        release.set()
    assert task["state"] == "succeeded"
    assert task["worker_id"] != client.get_task(hold_id)["worker_id"]
    assert (task["started_at"] - task["run_after"]).total_seconds() < 10


def test_a_delay_beyond_the_calendar_is_refused(client, conn):
    with pytest.raises(ValidationError, match="year 9999"):
        client.submit_task("t", delay=timedelta(days=999_999_999))
    with pytest.raises(ValidationError, match="delay"):
        client.submit_task("t", delay=1e300)
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


def test_a_schedule_in_a_time_zone_fires_by_its_wall_clock(queue, client, conn):
    """Finding 14: schedules were UTC only. These hours are now in Kolkata (UTC+5:30),
    and hours no UTC clock shows for most of an hour: only a scheduler that reads the
    zone enqueues a tick now."""
    kolkata = datetime.now(ZoneInfo("Asia/Kolkata"))
    hours = f"{kolkata.hour},{(kolkata.hour + 1) % 24}"
    saved = client.add_periodic_task("local", f"* * {hours} * * *", "t", tz="Asia/Kolkata")
    assert saved["timezone"] == "Asia/Kolkata"
    [listed] = client.list_periodic_tasks()
    assert listed["timezone"] == "Asia/Kolkata"
    assert listed["next_tick_at"] > datetime.now(timezone.utc) - timedelta(seconds=1)
    scheduler = PeriodicScheduler(queue.db)
    assert poll(lambda: scheduler.run_once().enqueued, timeout=10)
    [(tick,)] = conn.execute("SELECT tick_at FROM omnispindle.periodic_ticks").fetchall()
    assert tick.astimezone(ZoneInfo("Asia/Kolkata")).hour in (kolkata.hour, (kolkata.hour + 1) % 24)


def test_an_unknown_time_zone_is_refused_and_nothing_saved(client, conn):
    with pytest.raises(CronExpressionError, match="unknown time zone 'Mars/Base'"):
        client.add_periodic_task("job", "0 9 * * *", "t", tz="Mars/Base")
    assert conn.execute("SELECT count(*) FROM omnispindle.periodic_tasks").fetchone()[0] == 0


class ReadsTheClockAt:
    """Runs the scheduler's statements, with the database's clock read as ``moment``."""

    def __init__(self, queue, moment) -> None:
        self.queue, self.moment = queue, moment

    def run(self, operation):
        found = self.queue.db.run(operation)
        if isinstance(found, list) and found and isinstance(found[0], dict) and "now" in found[0]:
            return [{**row, "now": self.moment} for row in found]
        return found


def test_the_ticks_of_a_repeated_hour_are_enqueued_when_due_not_early(queue, client, conn):
    """Europe/Berlin repeats 02:00 to 03:00 on 2026-10-25 (00:00Z to 02:00Z). A pass at
    the second 02:00 (01:00Z) of a half-hourly schedule also enqueued the second 02:30
    (01:30Z), half an hour early: the latest fire time before the first run's end was
    looked for from an hour later."""
    client.add_periodic_task("halves", "*/30 * * * *", "t", tz="Europe/Berlin")
    conn.execute("UPDATE omnispindle.periodic_tasks SET updated_at = '2026-10-24 00:00Z'")
    conn.execute(
        "INSERT INTO omnispindle.periodic_ticks (periodic_name, tick_at)"
        " VALUES ('halves', '2026-10-25 00:30Z')"
    )
    second_two = datetime(2026, 10, 25, 1, 0, 5, tzinfo=timezone.utc)
    PeriodicScheduler(ReadsTheClockAt(queue, second_two)).run_once()
    ticks = conn.execute(
        "SELECT tick_at FROM omnispindle.periodic_ticks WHERE task_id IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert [tick for (tick,) in ticks] == [datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)]


@pytest.mark.parametrize("skew", [-300.0, 300.0])
def test_a_worker_whose_clock_is_off_still_starts_a_delayed_task_on_time(
    queue, client, start_worker, monkeypatch, skew
):
    """A notice's due time is read by the database's clock: a worker whose host clock
    was five minutes off slept its whole poll interval instead (ahead, the task was
    due at once; behind, in five minutes)."""
    host_clock = SimpleNamespace(time=lambda: time.time() + skew, monotonic=time.monotonic)
    monkeypatch.setattr("omnispindle._worker._timers.time", host_clock)
    late = lateness_of_a_delayed_task(queue, client, start_worker)
    assert 0 <= late < 1.0, late


def lateness_of_a_delayed_task(queue, client, start_worker) -> float:
    """Seconds from due to started of a task delayed by a second, for a worker
    that nothing but a notice wakes before its poll interval of 30 s."""
    quiet = {"poll_interval": 30, "sweep_interval": None, "schedule_interval": None}
    start_worker({"t": lambda task: {}}, lease_timeout=120, **quiet)
    # Subscribed and listening: a notice sent before the LISTEN is lost.
    poll(lambda: queue.notifier.subscriptions(READY_CHANNEL) == 1, 10)
    poll(lambda: queue.notifier.listens_on(READY_CHANNEL), 10)
    task_id = client.submit_task("t", delay=1.0)
    task = client.wait_for_task(task_id, timeout=40)
    assert task["state"] == "succeeded"
    return (task["started_at"] - task["run_after"]).total_seconds()


def test_a_worker_whose_clock_reading_was_slow_to_ask_wakes_no_sooner_than_a_task_is_due(
    queue, client, start_worker, monkeypatch
):
    """The database reads its clock somewhere in the round trip: a worker that took
    the round trip's midpoint for it woke before a delayed task was due when the
    question was slow to reach the database, found nothing, and slept its poll
    interval."""
    read_clock = q.workers.database_clock

    def reached_slowly() -> Query[float]:
        time.sleep(0.4)  # the question's way there, not a wait for an event
        return read_clock()

    monkeypatch.setattr(q.workers, "database_clock", reached_slowly)
    late = lateness_of_a_delayed_task(queue, client, start_worker)
    assert 0 <= late < 1.0, late

"""Waiting for tasks to finish, blocking: woken by notifications, bounded by a poll interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from omnispindle._client._batch_wait import FEW_LEFT, QUIET_POLLS, FinishedTasks
from omnispindle._client._pacing import CheckPacer, ReplayFollower, connection_wait, next_pause
from omnispindle._client._replay_floor import ReplayFloor
from omnispindle._db.notifier import FINISHED_CHANNEL, Listens
from omnispindle._db.pool import Database
from omnispindle._db.rows import TaskRecord
from omnispindle._db.task_notices import Wanted, wake_for
from omnispindle.errors import DatabaseUnavailableError

Progress = Callable[[int, int], object]


def wait_for_batch(
    db: Database,
    notifier: Listens,
    task_ids: Iterable[int],
    timeout: float | None,
    poll_interval: float,
    progress: Progress | None = None,
    reads: Database | None = None,
) -> list[TaskRecord]:
    """Block until every task finishes; their records in the given order.

    ``reads``: a replica to check on instead of ``db``, once it has replayed
    the wait's start (until then ``db``); that every id exists is still asked
    of ``db``, which has every task submitted so far.

    Raises:
        ValidationError: an id or the timeout is invalid.
        TaskNotFoundError: an id does not exist, or its task is deleted
            (pruned) while waited for.
        WaitTimeoutError: some tasks had not finished within ``timeout``.
        DatabaseUnavailableError: the database was still unreachable at the timeout.
    """
    finished = FinishedTasks(task_ids, timeout, QUIET_POLLS * poll_interval)
    pacer = CheckPacer(poll_interval, paced=finished.total > FEW_LEFT)
    found_all = finished.done

    def report() -> None:
        if progress is not None:
            progress(finished.count, finished.total)

    def collect() -> bool:
        nonlocal found_all
        if not found_all:  # inside the loop, so that an outage at the start is waited out
            db.run(finished.require_found(), wait=connection_wait(deadline))
            if not floor.reached:
                db.run(floor.start(), wait=connection_wait(deadline))
            found_all = True
        if finished.done:
            return True
        # The replica once it has replayed the wait's start (see ReplayFloor).
        source = (
            checked
            if floor.reached or checked.run(floor.probe(), wait=connection_wait(deadline))
            else db
        )
        with pacer.timing():
            found = source.run(finished.find(), wait=connection_wait(deadline))
        if finished.add(found):
            report()
        for query in finished.fetches(found):
            if finished.add(source.run(query, wait=connection_wait(deadline))):
                report()
        if finished.recheck_due(found, time.monotonic()):  # a task deleted while waited for
            db.run(finished.require_found(), wait=connection_wait(deadline))
        return finished.done

    checked = reads or db
    deadline = None if finished.timeout is None else time.monotonic() + finished.timeout
    lagging = checked is not db
    floor = ReplayFloor(lagging)
    if not wait_until(
        collect,
        notifier,
        FINISHED_CHANNEL,
        deadline,
        pacer,
        wanted=finished.named_in,
        lagging=lagging,
    ):
        raise finished.timeout_error()
    return finished.records()


def wait_until(
    done: Callable[[], bool],
    notifier: Listens,
    channel: str,
    deadline: float | None,
    pacer: CheckPacer,
    *,
    wanted: Wanted,
    lagging: bool = False,
) -> bool:
    """Call ``done()`` after wake-ups on ``channel`` until it returns True or the deadline passes.

    Subscribes before the first check, so a task finishing between that check
    and the wait still wakes it. Without a notification it checks every poll
    interval; after one, once ``pacer`` allows. Returns False on timeout. A
    check that finds the database unreachable counts as not done: the wait
    rides through a restart, and raises that error only if it lasts past the
    deadline. Only notices that may concern the tasks ``wanted`` picks wake
    it: with many waits, each task's finish wakes its own. ``lagging``: the
    checks read a replica, which may not have replayed what a notification
    announced, so a wake-up that leaves the wait not done is followed by
    checks at growing gaps (see ``ReplayFollower``).
    """
    woken = threading.Event()
    handle = notifier.subscribe(channel, wake_for(wanted, woken.set), with_payload=True)
    follower = ReplayFollower(lagging, pacer.poll_interval)
    try:
        while True:
            woken.clear()
            outage: DatabaseUnavailableError | None = None
            try:
                if done():
                    return True
            except DatabaseUnavailableError as exc:
                outage = exc
            pacer.checked(time.monotonic())
            pause = next_pause(deadline, pacer.poll_interval)
            if pause is None:
                if outage is not None:
                    raise outage
                return False
            was_woken = woken.wait(follower.pause(pause))
            follower.waited(was_woken)
            if was_woken:
                time.sleep(pacer.hold(time.monotonic(), deadline))
    finally:
        notifier.unsubscribe(handle)

"""Idempotency keys: a repeated submission returns the unfinished task instead of a copy."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from omnispindle import DependencyStateError, TaskQueueClient, ValidationError, entry
from omnispindle._maintenance.sweeper import Sweeper
from omnispindle.errors import IdempotencyKeyConflictError, TaskStateError, first_line
from tests.acceptance.workers import poll
from tests.integration.test_type_limits import claim, finish, waiting_for_a_lock


def task_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0]


def run_together(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a submitter hung"


def test_a_key_used_twice_yields_one_task(client, conn):
    first = client.submit_task("charge", {"order": 1}, idempotency_key="order-1")
    again = client.submit_task("charge", {"order": 1}, idempotency_key="order-1")
    assert first == again
    assert task_count(conn) == 1
    assert client.get_task(first)["idempotency_key"] == "order-1"


def test_different_keys_and_no_key_give_different_tasks(client, conn):
    ids = {
        client.submit_task("charge", idempotency_key="a"),
        client.submit_task("charge", idempotency_key="b"),
        client.submit_task("charge"),
        client.submit_task("charge"),
    }
    assert len(ids) == 4 and task_count(conn) == 4


def test_once_the_task_has_finished_the_key_is_free_again(client, start_worker):
    first = client.submit_task("charge", idempotency_key="k")
    start_worker({"charge": lambda task: {"charged": task["task_id"]}})
    assert client.wait_for_task(first, timeout=30)["state"] == "succeeded"
    second = client.submit_task("charge", idempotency_key="k")
    assert second != first
    assert client.wait_for_task(second, timeout=30)["result"] == {"charged": second}


def test_concurrent_submissions_with_one_key_yield_one_task(dsn, queue, conn):
    clients = [TaskQueueClient(dsn=dsn) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    ids = []

    def submit(client):
        barrier.wait(timeout=30)
        ids.append(client.submit_task("charge", idempotency_key="race"))

    try:
        run_together([threading.Thread(target=submit, args=(c,)) for c in clients])
    finally:
        for client in clients:
            client.close()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert task_count(conn) == 1


def test_a_key_held_by_an_uncommitted_transaction_waits_for_its_outcome(dsn, client, conn):
    with psycopg.connect(dsn) as app:
        with app.transaction():
            mine = client.submit_task("charge", idempotency_key="tx", connection=app)
            found = []
            other = threading.Thread(
                target=lambda: found.append(client.submit_task("charge", idempotency_key="tx"))
            )
            other.start()
            poll(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ).fetchone()[0]
                    == 1
                ),
                timeout=30,
            )
            assert other.is_alive(), "the second submission must wait for the first to commit"
        other.join(timeout=30)
    assert found == [mine] and task_count(conn) == 1


def test_after_a_rollback_the_key_makes_a_new_task(dsn, client, conn):
    with psycopg.connect(dsn) as app, pytest.raises(RuntimeError), app.transaction():
        client.submit_task("charge", idempotency_key="rb", connection=app)
        raise RuntimeError("the request failed")
    task_id = client.submit_task("charge", idempotency_key="rb")
    assert client.get_task(task_id)["state"] == "pending" and task_count(conn) == 1


def test_batches_reuse_existing_tasks_and_depend_on_them(client, conn):
    existing = client.submit_task("fetch", idempotency_key="fetch-1")
    ids = client.submit_batch(
        [
            {"task_type": "fetch", "idempotency_key": "fetch-1"},
            {"task_type": "parse", "dependencies": [entry(0)]},
            {"task_type": "fetch", "idempotency_key": "fetch-2"},
        ]
    )
    assert ids[0] == existing
    assert client.get_task(ids[1])["dependencies"] == [existing]
    assert client.get_task(ids[1])["state"] == "blocked"
    assert task_count(conn) == 3


def test_a_key_repeated_within_one_batch_is_refused(client, conn):
    with pytest.raises(
        ValidationError, match="entry 2: idempotency_key 'x' is already used by entry 0"
    ):
        client.submit_batch(
            [
                {"task_type": "t", "idempotency_key": "x"},
                {"task_type": "t"},
                {"task_type": "t", "idempotency_key": "x"},
            ]
        )
    with pytest.raises(psycopg.Error, match="used twice") as raised:
        conn.execute(
            "SELECT omnispindle.submit_tasks(ARRAY['t', 't'], ARRAY['{}', '{}']::jsonb[], "
            "ARRAY[0, 0], ARRAY[1, 1], ARRAY[1.0, 1.0], ARRAY[NULL, NULL]::float8[], "
            "ARRAY['[]', '[]']::jsonb[], ARRAY['[]', '[]']::jsonb[], "
            "ARRAY['[]', '[]']::jsonb[], ARRAY[false, false], NULL, ARRAY['k', 'k'], NULL)"
        )
    assert raised.value.sqlstate == "OS005"
    assert task_count(conn) == 0


@pytest.mark.parametrize("key", ["", 5, "x" * 201, "nul\x00"])
def test_bad_keys_are_refused(client, conn, key):
    with pytest.raises(ValidationError, match="idempotency_key"):
        client.submit_task("t", idempotency_key=key)
    assert task_count(conn) == 0


def quick_deadlock_checks(dsn: str, conn) -> str:
    """``dsn`` with the deadlock detector's wait at 50 ms instead of its default
    second, when the test's role may set it (a superuser): submitters that meet
    in a deadlock then wait that long, not a second, before one looks again."""
    if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        return dsn
    return make_conninfo(dsn, options="-c deadlock_timeout=50ms")


def test_batches_sharing_keys_in_opposite_orders_never_deadlock(dsn, conn):
    keys = [f"k{n}" for n in range(30)]
    clients = [TaskQueueClient(dsn=quick_deadlock_checks(dsn, conn)) for _ in range(2)]
    errors, results = [], []
    try:
        for round_number in range(10):
            barrier = threading.Barrier(2)
            batch_keys = [[f"{k}-{round_number}" for k in keys]]
            batch_keys.append(list(reversed(batch_keys[0])))

            def submit(client, chosen, barrier=barrier):
                barrier.wait(timeout=30)
                try:
                    ids = client.submit_batch(
                        [{"task_type": "t", "idempotency_key": k} for k in chosen]
                    )
                    results.append(dict(zip(chosen, ids)))
                except Exception as exc:
                    errors.append(exc)

            run_together(
                [threading.Thread(target=submit, args=pair) for pair in zip(clients, batch_keys)]
            )
    finally:
        for client in clients:
            client.close()
    assert errors == []
    for first, second in zip(results[::2], results[1::2]):
        assert first == second, "both batches must resolve every key to the same task"
    assert task_count(conn) == 10 * len(keys)


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_key_committed_after_a_fixed_snapshot_is_a_typed_conflict(dsn, client, conn, isolation):
    with psycopg.connect(dsn) as app:
        app.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        app.execute("SELECT 1")  # the snapshot is taken here
        client.submit_task("charge", idempotency_key="snap")  # commits after it
        with pytest.raises(IdempotencyKeyConflictError, match="retry"):
            client.submit_task("charge", idempotency_key="snap", connection=app)
        app.rollback()
    assert task_count(conn) == 1


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_key_inserted_by_a_concurrent_transaction_is_a_typed_conflict(
    dsn, client, conn, isolation
):
    """Two serializable submitters of one key: the one that waited for the other's
    insert got psycopg's own SerializationFailure."""
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as loser:
        for app in (holder, loser):
            app.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        client.submit_task("charge", idempotency_key="raced", connection=holder)
        outcome: dict[str, object] = {}

        def submit() -> None:
            try:
                outcome["id"] = client.submit_task(
                    "charge", idempotency_key="raced", connection=loser
                )
            except Exception as exc:  # the test reports it
                outcome["error"] = exc

        thread = threading.Thread(target=submit)
        thread.start()
        poll(lambda: outcome or waiting_for_a_lock(conn, "submit_tasks"), timeout=30)
        holder.commit()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the submitter hung"
        loser.rollback()
    assert isinstance(outcome.get("error"), IdempotencyKeyConflictError), outcome
    assert "retry the transaction" in str(outcome["error"])
    assert task_count(conn) == 1


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_transactions_taking_keys_in_opposite_orders_get_a_typed_conflict(
    dsn, client, conn, isolation
):
    """Under a fixed snapshot, the transaction Postgres chose in such a deadlock
    got psycopg's own DeadlockDetected."""
    apps = [psycopg.connect(dsn) for _ in range(2)]
    outcomes: list[dict[str, object]] = [{}, {}]
    try:
        for app, key in zip(apps, ["a", "b"]):
            app.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
            client.submit_task("charge", idempotency_key=key, connection=app)

        def submit(app, key, outcome) -> None:
            try:
                outcome["id"] = client.submit_task("charge", idempotency_key=key, connection=app)
                app.commit()
            except Exception as exc:  # the test reports it
                outcome["error"] = exc
                app.rollback()

        first = threading.Thread(target=submit, args=(apps[0], "b", outcomes[0]))
        first.start()
        poll(lambda: outcomes[0] or waiting_for_a_lock(conn, "submit_tasks"), timeout=30)
        run_together([threading.Thread(target=submit, args=(apps[1], "a", outcomes[1]))])
        first.join(timeout=30)
        assert not first.is_alive(), "a submitter hung"
    finally:
        for app in apps:
            app.close()
    errors = [o["error"] for o in outcomes if "error" in o]
    assert len(errors) == 1 and isinstance(errors[0], IdempotencyKeyConflictError), errors
    assert "retry the transaction" in str(errors[0])
    assert task_count(conn) == 2


def test_retry_refuses_a_failed_task_whose_key_a_new_task_holds(client, conn, start_worker):
    failed = client.submit_task("charge", idempotency_key="again", max_retries=0)

    def refuse(task):
        raise RuntimeError("card declined")

    start_worker({"charge": refuse})
    assert client.wait_for_task(failed, timeout=30)["state"] == "failed"
    holder = client.submit_task("block", idempotency_key="again")
    with pytest.raises(TaskStateError, match=f"held by unfinished task {holder}"):
        client.retry_task(failed)
    assert client.get_task(failed)["state"] == "failed"


def test_retry_with_dependents_refuses_a_dependent_whose_key_a_new_task_holds(
    client, conn, start_worker
):
    """The dependent's key broke the unique index: IdempotencyKeyConflictError asked
    to retry the transaction, which could never succeed."""
    failed = client.submit_task("charge", max_retries=0)
    dependent = client.submit_task("ship", dependencies=[failed], idempotency_key="ship-1")

    def refuse(task):
        raise RuntimeError("card declined")

    start_worker({"charge": refuse})
    assert client.wait_for_task(failed, timeout=30)["state"] == "failed"
    poll(lambda: client.get_task(dependent)["state"] == "cancelled", timeout=30)
    holder = client.submit_task("ship", idempotency_key="ship-1")
    with pytest.raises(TaskStateError, match=f"{dependent}.*held by unfinished task {holder}"):
        client.retry_task(failed, with_dependents=True)
    assert client.get_task(failed)["state"] == "failed"
    assert client.get_task(dependent)["state"] == "cancelled"
    assert client.retry_task(failed)["dependents"] == []


def test_a_reused_entry_also_listed_by_id_is_one_dependency(client, start_worker):
    existing = client.submit_task("fetch", idempotency_key="shared")
    ids = client.submit_batch(
        [
            {"task_type": "fetch", "idempotency_key": "shared"},
            {"task_type": "parse", "dependencies": [entry(0), existing]},
        ]
    )
    assert ids[0] == existing
    start_worker(
        {"fetch": lambda task: {}, "parse": lambda task: {"ok": True}}, sweep_interval=None
    )
    assert client.wait_for_task(ids[1], timeout=30)["result"] == {"ok": True}


def lose_a_race(client, dsn, conn, key: str, loser: psycopg.Connection) -> dict[str, object]:
    """A submit of ``key`` on ``loser`` that waits for another transaction's insert
    of it, which then commits: what the submit returned (or raised), and the
    holder's id."""
    outcome: dict[str, object] = {}

    def submit() -> None:
        try:
            outcome["id"] = client.submit_task("t", idempotency_key=key, connection=loser)
        except Exception as exc:  # the test reports it
            outcome["error"] = exc

    with psycopg.connect(dsn) as holder:
        outcome["holder"] = client.submit_task("t", idempotency_key=key, connection=holder)
        thread = threading.Thread(target=submit)
        thread.start()
        poll(
            lambda: (
                "id" in outcome or "error" in outcome or waiting_for_a_lock(conn, "submit_tasks")
            ),
            timeout=30,
        )
    thread.join(timeout=60)
    return outcome


def test_a_caller_transaction_that_lost_a_race_holds_up_no_other_submitter(client, dsn, conn):
    """A submitter that lost a race looked again under a row lock held until its
    caller's transaction ended: while one such transaction stayed open, a submit
    that lost a race on another key waited for it, and failed after 10 s."""
    with psycopg.connect(dsn) as open_transaction:
        first = lose_a_race(client, dsn, conn, "k1", open_transaction)
        assert first == {"holder": first["holder"], "id": first["holder"]}
        with psycopg.connect(dsn, autocommit=True) as autocommit:
            second = lose_a_race(client, dsn, conn, "k2", autocommit)
        assert second == {"holder": second["holder"], "id": second["holder"]}
        open_transaction.rollback()


def batch_held_up(client, conn, batch: list[dict]) -> tuple[threading.Thread, dict[str, object]]:
    """``batch`` submitted on a thread of its own, once it waits for a lock: the
    thread, and what the submit returns ("ids") or raises ("error") when it ends."""
    outcome: dict[str, object] = {}

    def submit() -> None:
        try:
            outcome["ids"] = client.submit_batch(batch)
        except Exception as exc:  # the test reports it
            outcome["error"] = exc

    thread = threading.Thread(target=submit)
    thread.start()
    poll(lambda: outcome or waiting_for_a_lock(conn, "submit_tasks"), timeout=30)
    assert not outcome, f"the batch did not wait for a lock: {outcome}"
    return thread, outcome


def ended(thread: threading.Thread, outcome: dict[str, object]) -> list[int]:
    """The ids the held-up batch returned."""
    thread.join(timeout=30)
    assert not thread.is_alive(), "the batch hung"
    error = outcome.get("error")
    assert error is None, f"{type(error).__name__}: {first_line(error)}"
    ids = outcome["ids"]
    assert isinstance(ids, list)
    return ids


def test_a_reused_task_pruned_while_its_batch_waits_stays_for_the_batch(client, queue, dsn, conn):
    """The task a batch reused by its key was not held: cancelled and pruned while
    the batch waited for another entry's key, it was gone when the batch wrote
    its dependent's edge, and the batch failed with a ForeignKeyViolation."""
    held = client.submit_task("fetch", idempotency_key="held")
    with psycopg.connect(dsn) as other:
        client.submit_task("fetch", idempotency_key="taken", connection=other)
        thread, outcome = batch_held_up(
            client,
            conn,
            [
                {"task_type": "fetch", "idempotency_key": "held"},
                {"task_type": "fetch", "idempotency_key": "taken"},
                {"task_type": "parse", "dependencies": [entry(0)]},
            ],
        )
        assert client.cancel_task(held)["state"] == "cancelled"
        conn.execute(
            "UPDATE omnispindle.tasks SET finished_at = now() - interval '2 hours' WHERE id = %s",
            [held],
        )
        pruned = queue.prune(3600)
        other.rollback()
    ids = ended(thread, outcome)
    assert pruned == 0 and ids[0] == held
    assert client.get_task(ids[2])["dependencies"] == [held]
    # The cancel committed after the batch counted its parents: the sweeper's
    # repair of such dependents cancels it.
    conn.execute(
        "UPDATE omnispindle.tasks SET created_at = now() - interval '1 minute' WHERE id = %s",
        [ids[2]],
    )
    Sweeper(queue.db).run_once()
    child = client.get_task(ids[2])
    assert (child["state"], child["cancel_reason"]) == ("cancelled", f"dependency {held} cancelled")


@pytest.mark.parametrize(("ending", "tolerant"), [("succeeded", False), ("cancelled", True)])
def test_a_reused_task_finished_before_its_batch_counts_it_leaves_its_dependent_ready(
    client, queue, dsn, conn, ending, tolerant
):
    """A batch counted the task it reused by its key as unfinished, whatever its
    state: one that succeeded (or failed or was cancelled, for a dependent that
    allows it) before the batch inserted left the dependent blocked until the
    sweeper's repair."""
    held = client.submit_task("fetch", idempotency_key="held")
    with psycopg.connect(dsn) as gate:
        # The batch's insert writes dependency edges: it waits here, after the
        # batch looked the key up.
        gate.execute("LOCK TABLE omnispindle.task_dependencies IN SHARE MODE")
        thread, outcome = batch_held_up(
            client,
            conn,
            [
                {"task_type": "fetch", "idempotency_key": "held"},
                {
                    "task_type": "parse",
                    "dependencies": [entry(0)],
                    "allow_failed_dependencies": tolerant,
                },
            ],
        )
        if ending == "succeeded":
            assert claim(queue, ["fetch"]) == ["fetch"]
            finish(conn, 1, "fetch")
        else:
            client.cancel_task(held)
        assert client.get_task(held)["state"] == ending
        gate.rollback()
    ids = ended(thread, outcome)
    assert ids[0] == held
    child = client.get_task(ids[1])
    assert (child["state"], child["dependencies"]) == ("pending", [held])


def test_a_reused_task_cancelled_before_its_batch_counts_it_refuses_its_dependent(
    client, dsn, conn
):
    """A batch reused by its key a task cancelled since its look-up, and inserted
    its dependent blocked on it, which the sweeper cancelled a second later. It
    is refused, as for a dependency named by id in that state."""
    held = client.submit_task("fetch", idempotency_key="held")
    with psycopg.connect(dsn) as canceller:
        canceller.execute("SELECT omnispindle.cancel_task(%s, 'gone')", [held])
        # Held for update (as a delete holds it): the batch, which finds the
        # task unfinished until the cancel commits, waits for it.
        canceller.execute("SELECT 1 FROM omnispindle.tasks WHERE id = %s FOR UPDATE", [held])
        thread, outcome = batch_held_up(
            client,
            conn,
            [
                {"task_type": "fetch", "idempotency_key": "held"},
                {"task_type": "parse", "dependencies": [entry(0)]},
            ],
        )
        canceller.commit()
    thread.join(timeout=30)
    assert isinstance(outcome.get("error"), DependencyStateError), outcome
    assert f"dependency task {held} is cancelled" in str(outcome["error"])
    assert task_count(conn) == 1


@pytest.mark.slow
def test_submits_of_a_few_keys_while_their_tasks_finish_never_fail(dsn, conn, start_worker):
    """Under churn a submit could lose five races in a row, each to a submitter
    whose task a worker finished before the next look, and failed with a
    conflict (4 submits in 10,000, with 12 threads on 3 keys, in every run)."""
    start_worker({"r": lambda task: {}}, concurrency=8)
    keys = ["a", "b", "c"]
    errors: list[Exception] = []
    returned: list[tuple[str, int]] = []
    stop = threading.Event()
    client = TaskQueueClient(dsn=dsn, pool_size=16)

    def submit(n: int) -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            key = keys[turn % 3]
            try:
                if n % 2:
                    task_id = client.submit_task("r", idempotency_key=key)
                else:
                    batch = [{"task_type": "r", "idempotency_key": k} for k in reversed(keys)]
                    task_id = client.submit_batch(batch)[2 - keys.index(key)]
                returned.append((key, task_id))
            except Exception as exc:  # the test reports it
                errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(12)]
    try:
        for thread in threads:
            thread.start()
        poll(lambda: len(returned) + len(errors) >= 8000, timeout=180)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        client.close()
    assert errors == []
    held = dict(conn.execute("SELECT id, idempotency_key FROM omnispindle.tasks").fetchall())
    assert all(held[task_id] == key for key, task_id in returned)

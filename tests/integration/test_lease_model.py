"""A Hypothesis state machine over claims, heartbeats, outcomes, sweeps and crashes.

Several simulated workers act on one real database. Whatever the order, a
task's lease belongs to its latest claim only, late writes by earlier holders
change nothing, and every task ends in exactly one final state, written once.
"""

from __future__ import annotations

import json
import uuid

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from psycopg.types.json import Jsonb

from omnispindle._db import queries as q
from omnispindle._db.pool import execute

WORKERS = 3
FINAL = {"succeeded", "failed", "cancelled"}


class LeaseModel(RuleBasedStateMachine):
    dsn: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.conn.execute("TRUNCATE omnispindle.tasks CASCADE")
        self.worker_ids = [uuid.uuid4() for _ in range(WORKERS)]
        self.held: list[dict[int, uuid.UUID]] = [{} for _ in range(WORKERS)]
        self.latest_token: dict[int, uuid.UUID] = {}
        self.claims: dict[int, int] = {}
        self.final_writes: dict[int, int] = {}

    def teardown(self) -> None:
        self.conn.close()

    # Actions.

    @rule(count=st.integers(1, 3), retries=st.integers(0, 2))
    def submit(self, count, retries):
        ids = execute(
            self.conn,
            q.tasks.submit_tasks(
                {
                    "task_types": ["job"] * count,
                    "parameters": ["{}"] * count,
                    "priorities": [0] * count,
                    "max_attempts": [retries + 1] * count,
                    "retry_backoffs": [0.0] * count,
                    "timeouts": [None] * count,
                    "required_capabilities": [Jsonb([])] * count,
                    "dependencies": [Jsonb([])] * count,
                    "entry_dependencies": [Jsonb([])] * count,
                    "allow_failed": [False] * count,
                    "run_after": None,
                    "idempotency_keys": None,
                    "trace_contexts": None,
                    "group_keys": None,
                }
            ),
        )
        for task_id in ids:
            self.claims[task_id] = 0
            self.final_writes[task_id] = 0

    @rule(worker=st.integers(0, WORKERS - 1), limit=st.integers(1, 3))
    def claim(self, worker, limit):
        for row in execute(
            self.conn,
            q.tasks.claim_tasks(
                task_types=["job"],
                capabilities=[],
                limit=limit,
                worker_id=self.worker_ids[worker],
                lease_seconds=30.0,
            ),
        ):
            self.held[worker][row["id"]] = row["lease_token"]
            self.latest_token[row["id"]] = row["lease_token"]
            self.claims[row["id"]] += 1

    @rule(worker=st.integers(0, WORKERS - 1))
    def heartbeat(self, worker):
        rows = execute(
            self.conn,
            q.workers.heartbeat(
                worker_id=self.worker_ids[worker],
                lease_seconds=30.0,
                ids=list(self.held[worker]),
                tokens=list(self.held[worker].values()),
                concurrency=1,
            ),
        )
        for row in rows:
            assert self.latest_token[row["id"]] == self.held[worker][row["id"]]

    @rule(worker=st.integers(0, WORKERS - 1), pick=st.integers(0, 50), succeed=st.booleans())
    def finish(self, worker, pick, succeed):
        if not self.held[worker]:
            return
        task_id = sorted(self.held[worker])[pick % len(self.held[worker])]
        token = self.held[worker].pop(task_id)
        current = self._lease(task_id) == token
        if succeed:
            rows = execute(
                self.conn, q.tasks.complete_tasks(q.tasks.Results([task_id], [token], ["{}"]))
            )
        else:
            error = json.dumps({"type": "Boom", "message": "x", "traceback": None, "attempt": 0})
            rows = execute(
                self.conn, q.tasks.fail_tasks(ids=[task_id], tokens=[token], errors=[error])
            )
        assert bool(rows) == current, "only the current lease holder may write"
        self._count_final(rows)

    @rule(worker=st.integers(0, WORKERS - 1))
    def crash(self, worker):
        """The worker stops heartbeating: its leases lapse, its late writes stay possible."""
        self.conn.execute(
            "UPDATE omnispindle.tasks SET lease_expires_at = now() - interval '1 second' "
            "WHERE lease_token = ANY (%s)",
            [list(self.held[worker].values())],
        )

    @rule()
    def sweep(self):
        self._count_final(execute(self.conn, q.tasks.recover_expired_leases(100)))

    # Checks.

    @invariant()
    def leases_follow_the_latest_claim(self):
        for task_id, state, token, attempts in self.conn.execute(
            "SELECT id, state::text, lease_token, attempts FROM omnispindle.tasks"
        ):
            assert attempts == self.claims[task_id]
            if state == "running":
                assert token == self.latest_token[task_id]
            assert self.final_writes[task_id] == (1 if state in FINAL else 0)

    def drain(self):
        """Finish everything: lapse every lease, sweep, claim and complete until done."""
        for _ in range(20):
            self.crash_all()
            self.sweep()
            for worker in range(WORKERS):
                self.claim(worker, 50)
            # Stale holders write first, while the current holders still run.
            for worker in reversed(range(WORKERS)):
                while self.held[worker]:
                    self.finish(worker, 0, True)
        states = dict(self.conn.execute("SELECT id, state::text FROM omnispindle.tasks").fetchall())
        assert set(states.values()) <= FINAL
        assert all(count == 1 for count in self.final_writes.values())

    def crash_all(self):
        for worker in range(WORKERS):
            self.crash(worker)

    def _lease(self, task_id):
        row = self.conn.execute(
            "SELECT lease_token FROM omnispindle.tasks WHERE id = %s AND state = 'running'",
            [task_id],
        ).fetchone()
        return row[0] if row else None

    def _count_final(self, rows):
        for row in rows:
            if row.get("state", "succeeded") in FINAL:
                self.final_writes[row["id"]] += 1


def test_lease_state_machine(dsn):
    class Machine(LeaseModel):
        pass

    Machine.dsn = dsn
    original_teardown = Machine.teardown

    def drain_then_close(self):
        self.drain()
        original_teardown(self)

    Machine.teardown = drain_then_close
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

"""Storing outcomes: results and failures, fenced by lease, a refused one isolated.

A result or error the database refuses (a value jsonb cannot hold that slipped
past the checks) must not block the other outcomes of its statement, nor the
worker: the statement is split until the refused one stands alone, which is
stored as a failure (a result) or reduced to its type (an error).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from uuid import UUID

from omnispindle._db import queries as q
from omnispindle._db.query import Runner
from omnispindle._db.rows import FailedAttempt, StoredOutcome
from omnispindle._worker._execution import Attempt, Error, Outcome, failure, results_of
from omnispindle.errors import ValidationError

log = logging.getLogger("omnispindle.worker")

UNSTORABLE_ERROR = "the error's text could not be stored"

# The most JSON text, in characters, that one statement stores as results.
# Postgres refuses a statement past 1 GB by closing the connection, and a
# step's results could come to that (each result may take 64 MiB, and the
# array literal up to 4 bytes a character): past this, they go in several.
STATEMENT_RESULT_CHARS = 64 * 1024 * 1024


def by_statement(outcomes: list[Outcome]) -> list[list[Outcome]]:
    """``outcomes`` in order, in runs whose results one statement stores (a result
    larger than that alone in its run); none for none."""
    runs: list[list[Outcome]] = []
    run: list[Outcome] = []
    size = 0
    for outcome in outcomes:
        chars = len(outcome.result_json or "")
        if run and size + chars > STATEMENT_RESULT_CHARS:
            runs.append(run)
            run, size = [], 0
        run.append(outcome)
        size += chars
    if run:
        runs.append(run)
    return runs


class OutcomeStore:
    """Stores a worker's outcomes.

    Args:
        db: what runs the statements (the queue's database).
        worker: the worker's name, for log lines.
    """

    def __init__(self, db: Runner, worker: str) -> None:
        self.db = db
        self.worker = worker
        self.worker_id: UUID | None = None  # known once the worker registered
        # Set after a step whose reply was lost: the results it stores next may
        # have been stored by that step already.
        self.after_lost_reply = False

    def store(self, succeeded: list[Outcome], failed: list[Outcome]) -> list[float]:
        """Store results, then failures (with the results refused); the seconds until
        each retried task is due."""
        refused = self.complete(succeeded) if succeeded else []
        return self.fail(failed + refused) if failed or refused else []

    def complete(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Store results; returns those the database refused, as failures to store."""
        try:
            rows = self.db.run(q.tasks.complete_tasks(results_of(outcomes)))
        except ValidationError:
            if len(outcomes) == 1:
                return [unstorable(outcomes[0])]
            return [refused for o in outcomes for refused in self.complete([o])]
        self.log_dropped(outcomes, rows, "result")
        return []

    def fail(self, outcomes: list[Outcome]) -> list[float]:
        """Store failed attempts; the seconds until each retried task is due.

        Raises:
            ValidationError: even an error reduced to its type was refused.
        """
        try:
            rows = self.db.run(
                q.tasks.fail_tasks(
                    ids=[o.task_id for o in outcomes],
                    tokens=[o.lease_token for o in outcomes],
                    errors=[json.dumps(o.error) for o in outcomes],
                )
            )
        except ValidationError:
            if len(outcomes) > 1:
                return [delay for o in outcomes for delay in self.fail([o])]
            if (outcomes[0].error or {}).get("message") == UNSTORABLE_ERROR:
                raise
            return self.fail([reduced(outcomes[0])])
        self.log_dropped(outcomes, rows, "error")
        return [row["retry_in"] for row in rows if row["retry_in"] is not None]

    def log_dropped(
        self,
        outcomes: Sequence[Outcome],
        stored: Sequence[StoredOutcome | FailedAttempt],
        what: str,
    ) -> None:
        """Log the outcomes that were not stored because their lease was gone."""
        kept = {row["id"] for row in stored}
        self.log_lost([o.task_id for o in outcomes if o.task_id not in kept], what)

    def log_lost(self, task_ids: Sequence[int], what: str) -> None:
        """Log, per task, that its ``what`` was dropped: another attempt owns it now
        (unless a step whose reply was lost stored that result already)."""
        if what == "result" and self.after_lost_reply:
            self.after_lost_reply = False
            if task_ids and self.worker_id is not None:
                stored = set(self.db.run(q.tasks.stored_results(self.worker_id, task_ids)))
                task_ids = [task_id for task_id in task_ids if task_id not in stored]
        for task_id in task_ids:
            log.warning(
                "task %s: lease no longer held by worker %s; %s dropped", task_id, self.worker, what
            )


def unstorable(outcome: Outcome) -> Outcome:
    """A result the database refused, as the failure of its attempt."""
    return failure(
        Attempt(outcome.task_id, outcome.lease_token, outcome.attempt),
        ValueError("the database refused the executor's result"),
        error_type="ResultNotSerializable",
    )


def reduced(outcome: Outcome) -> Outcome:
    """A failure whose error the database refused, reduced to the error's type."""
    error = outcome.error or {}
    kept: Error = {
        "type": error.get("type"),
        "message": UNSTORABLE_ERROR,
        "traceback": None,
        "attempt": outcome.attempt,
    }
    if "retry" in error:  # a task failed for good stays failed for good
        kept["retry"] = error["retry"]
    return outcome._replace(error=kept)

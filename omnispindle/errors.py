"""Typed errors, and the one place that maps database errors onto them.

Database errors are translated by SQLSTATE (and, for CHECK violations, by
constraint name), never by message text. PL/pgSQL in ``sql/schema.sql``
raises the ``OS...`` codes below.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg


class OmnispindleError(Exception):
    """Base class of every error Omnispindle raises on purpose."""


class ConfigurationError(OmnispindleError):
    """The queue, client or worker was set up in a way that cannot work."""


class EmbeddedServerUnavailable(ConfigurationError):
    """No DSN was given and the embedded Postgres (pgserver) is not installed."""


class SchemaMissingError(ConfigurationError):
    """The database has no ``omnispindle`` schema yet: run the migrations."""


class ValidationError(OmnispindleError, ValueError):
    """An argument is of the wrong type or out of range; nothing was written."""


class UnknownDependencyError(ValidationError):
    """A dependency names a task id that does not exist."""


class DependencyCycleError(ValidationError):
    """Entries of a batch depend on each other in a cycle."""


class DependencyStateError(ValidationError):
    """A dependency has already failed or been cancelled, so a dependent could never run."""


class CronExpressionError(ValidationError):
    """A cron expression that cannot be parsed, or that never fires."""


class IllegalTransitionError(OmnispindleError):
    """An update tried a task state change the state machine forbids."""


class TaskNotFoundError(OmnispindleError, LookupError):
    """No task has the given id."""


class WaitTimeoutError(OmnispindleError, TimeoutError):
    """A wait ended before the tasks finished."""


class TaskCancelled(OmnispindleError):
    """Raised inside an executor whose task was cancelled (``current_task().raise_if_cancelled()``)."""


class LeaseLostError(OmnispindleError):
    """The running attempt no longer holds its task's lease: another attempt or a cancel took over."""


class TaskFailedError(OmnispindleError):
    """A waited-for task ended failed or cancelled (with ``raise_on_error=True``)."""

    def __init__(self, task: dict) -> None:
        error = task.get("error") or {}
        reason = error.get("message") or task.get("cancel_reason") or task["state"]
        super().__init__(f"task {task['task_id']} {task['state']}: {reason}")
        self.task = task


class TaskStateError(OmnispindleError):
    """The task is in a state that does not allow the operation (e.g. retrying one that has not failed)."""


class IdempotencyKeyConflictError(OmnispindleError):
    """A task this transaction cannot see holds the idempotency key: retry the transaction.

    Only under REPEATABLE READ or SERIALIZABLE, whose snapshot predates that
    task's commit; at READ COMMITTED the existing task is returned instead.
    """


_BY_SQLSTATE: dict[str, type[OmnispindleError]] = {
    "OS001": UnknownDependencyError,
    "OS002": IllegalTransitionError,
    "OS003": DependencyStateError,
    "OS004": TaskNotFoundError,
    "OS005": ValidationError,
    "23514": ValidationError,  # check_violation: a CHECK constraint refused a value
    "22P02": ValidationError,  # invalid_text_representation
    "22P05": ValidationError,  # untranslatable_character, e.g. \u0000 in jsonb
    "22003": ValidationError,  # numeric_value_out_of_range
    "54000": ValidationError,  # program_limit_exceeded, e.g. a value too large for jsonb
}

# Unique violations are translated only for the indexes named here, with what they mean.
_BY_UNIQUE_INDEX: dict[str, tuple[type[OmnispindleError], str]] = {
    "tasks_idempotency_key_idx": (
        IdempotencyKeyConflictError,
        "an unfinished task committed after this transaction's snapshot holds the "
        "idempotency key; retry the transaction"),
}


def translate(exc: psycopg.Error) -> OmnispindleError | None:
    """Return the typed error for a database error, or None to let it through."""
    diag = exc.diag
    if exc.sqlstate == "23505":  # unique_violation
        error_type, meaning = _BY_UNIQUE_INDEX.get(diag.constraint_name or "", (None, ""))
        return error_type(f"{meaning}: {diag.message_detail}") if error_type else None
    error_type = _BY_SQLSTATE.get(exc.sqlstate or "")
    if error_type is None:
        return None
    detail = diag.message_primary or str(exc)
    if diag.constraint_name:
        detail = f"{detail} (constraint {diag.constraint_name})"
    return error_type(detail)


def first_line(exc: BaseException) -> str:
    """An error in one line, for logs and messages: a database error's text goes
    on with the context of every nested statement it happened in."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise known database errors as their typed Omnispindle errors."""
    try:
        yield
    except psycopg.Error as exc:
        typed = translate(exc)
        if typed is None:
            raise
        raise typed from exc

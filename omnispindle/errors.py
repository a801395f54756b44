"""The typed errors Omnispindle raises (database errors are mapped onto them in one place)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OmnispindleError(Exception):
    """Base class of every error Omnispindle raises on purpose."""


class ConfigurationError(OmnispindleError):
    """The queue, client or worker was set up in a way that cannot work."""


class EmbeddedServerUnavailable(ConfigurationError):
    """No DSN was given and the embedded Postgres (pgserver) is not installed."""


class SchemaMissingError(ConfigurationError):
    """The database has no ``omnispindle`` schema yet: run the migrations."""


class SchemaOutdatedError(SchemaMissingError):
    """The ``omnispindle`` schema is older than this version needs, or records no
    revision: run the migrations (or record the revision your history applied)."""


class FailedTransactionError(OmnispindleError):
    """The transaction of the connection given as ``connection=`` had failed already, on an
    earlier statement, and ignores every statement until it ends: roll it back (or back
    to a savepoint) before calling again."""


class DatabaseUnavailableError(OmnispindleError, ConnectionError):
    """The database cannot be reached (or refused the connection); the cause is in
    the message."""

    #: True when nothing of the call reached the database (no connection was had).
    unsent: bool = False


class ReadOnlyDatabaseError(DatabaseUnavailableError):
    """The database only allows reads: a hot standby (a failover may be under way), or
    ``default_transaction_read_only`` on for the database or role. Nothing was written;
    a worker waits until it can write, as through an outage."""

    unsent = True  # refused before it wrote anything: nothing can have committed


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
    """Raised in an executor whose task was cancelled (``current_task().raise_if_cancelled()``)."""


class FailForGood(Exception):
    """Raised in an executor to fail its task now, with no retry, whatever attempts are left.

    The error is recorded as any other, with ``"retry": false``, and the task's
    dependents are cancelled as for any failure; ``retry_task`` still runs it
    again. Raised ``from`` an exception, that cause is in the recorded traceback,
    and its text is the message when none is given. One among the leaves of an
    exception group (an ``asyncio.TaskGroup``'s, nested or not) fails the task for
    good as well, the group recorded as raised. Not an ``OmnispindleError``:
    an executor's ``except OmnispindleError`` around its own calls must not swallow it.
    """

    def __str__(self) -> str:
        text = super().__str__()
        if text or self.__cause__ is None:
            return text
        return f"{type(self.__cause__).__name__}: {self.__cause__}"


class LeaseLostError(OmnispindleError):
    """The running attempt no longer holds its task's lease: another attempt or a cancel has it."""


class TaskFailedError(OmnispindleError):
    """A waited-for task ended failed or cancelled (with ``raise_on_error=True``)."""

    def __init__(self, task: Mapping[str, Any]) -> None:
        error = task.get("error") or {}
        reason = error.get("message") or task.get("cancel_reason") or task["state"]
        super().__init__(f"task {task['task_id']} {task['state']}: {reason}")
        self.task = task


class TaskStateError(OmnispindleError):
    """The task's state does not allow the operation (e.g. retrying one that has not failed)."""


class PermissionDeniedError(OmnispindleError, PermissionError):
    """The database role lacks a right the operation needs; see ``omnispindle.grant_access``
    in the operations guide for what each kind of access is given."""


class LockTimeoutError(OmnispindleError, TimeoutError):
    """A lock the operation needed stayed held by another session past its timeout
    (a migration, an explicit prune, or a submission with an idempotency key)."""


class IdempotencyKeyConflictError(OmnispindleError):
    """A task this transaction cannot see holds the idempotency key: retry the transaction.

    Only under REPEATABLE READ or SERIALIZABLE, whose snapshot predates that
    task's commit (or would, as when two transactions taking the same keys in
    opposite orders meet in a deadlock, or when a SERIALIZABLE one cannot be
    serialized with another that inserted the key); at READ COMMITTED the
    existing task is returned instead.
    """


def first_line(exc: BaseException) -> str:
    """An error in one line, for logs and messages: a database error's text goes
    on with the context of every nested statement it happened in."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

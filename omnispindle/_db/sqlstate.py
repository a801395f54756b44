"""The one place that maps database errors onto Omnispindle's typed errors.

Database errors are translated by SQLSTATE (and, for unique violations, by
index name), never by message text. PL/pgSQL in ``sql/schema.sql`` raises the
``OS...`` codes below.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy.exc
from psycopg_pool import PoolTimeout

from omnispindle.errors import (
    DatabaseUnavailableError,
    DependencyStateError,
    FailedTransactionError,
    IdempotencyKeyConflictError,
    IllegalTransitionError,
    LockTimeoutError,
    OmnispindleError,
    PermissionDeniedError,
    ReadOnlyDatabaseError,
    SchemaMissingError,
    TaskNotFoundError,
    TaskStateError,
    UnknownDependencyError,
    ValidationError,
    first_line,
)

_BY_SQLSTATE: dict[str, type[OmnispindleError]] = {
    "OS001": UnknownDependencyError,
    "OS002": IllegalTransitionError,
    "OS003": DependencyStateError,
    "OS004": TaskNotFoundError,
    "OS005": ValidationError,
    "OS006": TaskStateError,
    "OS007": TaskStateError,  # a dependency of an unfinished task cannot be deleted
    "OS008": IdempotencyKeyConflictError,  # a submission with keys lost a deadlock
    "55P03": LockTimeoutError,  # lock_not_available: a lock_timeout ran out
    "42501": PermissionDeniedError,  # insufficient_privilege
    "42704": ValidationError,  # undefined_object, e.g. a role to grant that does not exist
    "23514": ValidationError,  # check_violation: a CHECK constraint refused a value
    "22P02": ValidationError,  # invalid_text_representation
    "22P05": ValidationError,  # untranslatable_character, e.g. \u0000 in jsonb
    "22003": ValidationError,  # numeric_value_out_of_range
    "54000": ValidationError,  # program_limit_exceeded, e.g. a value too large for jsonb
}


_MIGRATE = (
    "the database lacks the omnispindle schema, or part of it: run `omnispindle migrate "
    "--dsn ...` (with --schema NAME for a queue in a schema of its own)"
)

_ROLL_BACK = (
    "the transaction of the connection given as connection= failed on an earlier "
    "statement and ignores every statement until it ends: roll it back (or back to a "
    "savepoint) and try again"
)

# Errors that say what to do about them: only Omnispindle's own statements are
# translated, so a table or schema missing under one is the queue's.
_WITH_ADVICE: dict[str, tuple[type[OmnispindleError], str]] = {
    # in_failed_sql_transaction: only a caller's connection= can be in one
    "25P02": (FailedTransactionError, _ROLL_BACK),
    "42P01": (SchemaMissingError, _MIGRATE),  # undefined_table
    "3F000": (SchemaMissingError, _MIGRATE),  # invalid_schema_name
}


_READ_ONLY = (
    "the database only allows reads: it is a hot standby (a failover may be under way), "
    "or default_transaction_read_only is on for the database or role; point the DSN at "
    "the primary, or turn the setting off (workers wait until they can write)"
)


class AlreadySubmitted(OmnispindleError):
    """A submit call's key is recorded already: an earlier try of the call committed."""


# Unique violations are translated only for the indexes named here, with what they mean.
_BY_UNIQUE_INDEX: dict[str, tuple[type[OmnispindleError], str]] = {
    "submissions_pkey": (AlreadySubmitted, "an earlier try of this submit call committed"),
    "tasks_idempotency_key_idx": (
        IdempotencyKeyConflictError,
        (
            "an unfinished task committed after this transaction's snapshot holds the "
            "idempotency key; retry the transaction"
        ),
    ),
}


# A server shutting down, crashed, or starting up: the connection is gone, not the statement.
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def translate(exc: psycopg.Error) -> OmnispindleError | None:
    """Return the typed error for a database error, or None to let it through."""
    if is_outage(exc):
        error = DatabaseUnavailableError(f"the database is unavailable: {first_line(exc)}")
        error.unsent = isinstance(exc, PoolTimeout)  # no connection: nothing was sent
        return error
    diag = exc.diag
    if exc.sqlstate == "25006":  # read_only_sql_transaction
        return ReadOnlyDatabaseError(f"{_READ_ONLY} ({diag.message_primary or first_line(exc)})")
    if exc.sqlstate == "23505":  # unique_violation
        error_type, meaning = _BY_UNIQUE_INDEX.get(diag.constraint_name or "", (None, ""))
        return error_type(f"{meaning}: {diag.message_detail}") if error_type else None
    if exc.sqlstate in _WITH_ADVICE:
        error_type, advice = _WITH_ADVICE[exc.sqlstate]
        return error_type(f"{advice} ({diag.message_primary or first_line(exc)})")
    error_type = _BY_SQLSTATE.get(exc.sqlstate or "")
    if error_type is None:
        return None
    detail = diag.message_primary or str(exc)
    if diag.constraint_name:
        detail = f"{detail} (constraint {diag.constraint_name})"
    return error_type(detail)


def is_outage(exc: psycopg.Error) -> bool:
    """True for a lost or refused connection, or no pooled connection in time: an
    error of the connection, whatever the statement."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # libpq's own failures (a closed socket, a reset connection) carry no SQLSTATE.
    return state is None or state.startswith("08") or state in _OUTAGE_SQLSTATES


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise known database errors as their typed Omnispindle errors, also
    those SQLAlchemy wraps (Alembic's own statements during a migration)."""
    try:
        yield
    except psycopg.Error as exc:
        typed = translate(exc)
        if typed is None:
            raise
        raise typed from exc
    except sqlalchemy.exc.DBAPIError as exc:
        typed = _translate_migrating(exc.orig) if isinstance(exc.orig, psycopg.Error) else None
        if typed is None:
            raise
        raise typed from exc


def _translate_migrating(exc: psycopg.Error) -> OmnispindleError | None:
    """As ``translate``, for a statement of a migration: a missing table there is no
    reason to tell the user to migrate."""
    if exc.sqlstate in _WITH_ADVICE:
        return None
    return translate(exc)

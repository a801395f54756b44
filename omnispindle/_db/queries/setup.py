"""Typed statements for set-up (``sql/queries/setup.sql``)."""

from __future__ import annotations

from omnispindle._core import defaults
from omnispindle._db.query import Query, Row, nothing, value
from omnispindle._db.statements import RUNTIME, Statement


def pin_session(*, pooler: bool = False) -> Query[None]:
    """Set, on a new connection of this package's, the settings its statements
    depend on, over the database's and role's defaults; behind a pooler in
    transaction mode, only those the pooler carries over."""
    if pooler:
        return Query(RUNTIME["pin_pooled_session"], None, nothing)
    return Query(RUNTIME["pin_session"], None, nothing)


def bound_lock_waits() -> Query[None]:
    """End every lock wait of the rest of the transaction after ``defaults.LOCK_TIMEOUT`` s."""
    return Query(
        RUNTIME["bound_lock_waits"], {"timeout_ms": int(defaults.LOCK_TIMEOUT * 1000)}, nothing
    )


def lock_first_install() -> Query[None]:
    """Serialise the migrators of a schema without a version table (an advisory key)."""
    return Query(RUNTIME["lock_first_install"], None, nothing)


def lock_version_table() -> Query[None]:
    """Serialise the migrators of an installed schema (a lock only its owner can take)."""
    return Query(RUNTIME["lock_version_table"], None, nothing)


def create_schema() -> Query[None]:
    """Create the ``omnispindle`` schema if it is missing."""
    return Query(RUNTIME["create_schema"], None, nothing)


def schema_installed() -> Query[bool]:
    """Whether the ``omnispindle`` tables exist."""
    return Query(RUNTIME["schema_installed"], None, value("installed"))


def version_table_exists() -> Query[bool]:
    """Whether Alembic's version table exists."""
    return Query(RUNTIME["version_table_exists"], None, value("present"))


def schema_version() -> Query[str | None]:
    """The revision Alembic recorded (its version table must exist)."""
    return Query(RUNTIME["schema_version"], None, _first_version)


def _first_version(found: list[Row]) -> str | None:
    return str(found[0]["version_num"]) if found else None


def create_version_table() -> Query[None]:
    """Create Alembic's version table in the schema if it is missing."""
    return Query(RUNTIME["create_version_table"], None, nothing)


def forget_other_revisions(revision: str | None) -> Query[None]:
    """Delete every recorded revision but ``revision`` (all of them for None)."""
    return Query(RUNTIME["forget_other_revisions"], {"revision": revision}, nothing)


def record_revision(revision: str) -> Query[None]:
    """Record ``revision`` (a no-op when it is recorded already)."""
    return Query(RUNTIME["record_revision"], {"revision": revision}, nothing)


def seed_maintenance_locks() -> Query[None]:
    """Put back the maintenance locks' rows where they are missing."""
    return Query(RUNTIME["seed_maintenance_locks"], None, nothing)


def seed_outcome_rollup() -> Query[None]:
    """Put back the outcome rollup's watermark row where it is missing."""
    return Query(RUNTIME["seed_outcome_rollup"], None, nothing)


def listen(channel: str) -> Statement:
    """The LISTEN statement of a notification channel, by its default name (run on a
    dedicated connection, for the queue's schema).

    Raises:
        KeyError: no statement listens on that channel.
    """
    return RUNTIME[f"listen_{channel.removeprefix('omnispindle_')}"]


def grant_access(role: str, access: str) -> Query[None]:
    """Give the role named ``role`` (its name as stored, not an SQL identifier) what
    ``access`` (observer, producer or worker) needs."""
    return Query(RUNTIME["grant_access"], {"role": role, "access": access}, nothing)


def notify_probe(token: str) -> Query[None]:
    """Send a LISTEN connection's liveness probe, with its token."""
    return Query(RUNTIME["notify_probe"], {"token": token}, nothing)

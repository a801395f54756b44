"""Bring a database's ``omnispindle`` schema (or a queue's own schema) to the
latest version with Alembic.

Every function takes ``schema``, the schema the queue lives in (default
``omnispindle``); each schema is a queue of its own, with its own version.

Example:
    >>> from omnispindle.migrate import upgrade
    >>> upgrade("postgresql://postgres@localhost/app")  # doctest: +SKIP
"""

from __future__ import annotations

from omnispindle._db import migrations
from omnispindle._db.namespace import Namespace

__all__ = ["ACCESS", "downgrade", "grant", "stamp", "upgrade"]

# The kinds of access grant() gives, narrowest first.
ACCESS = ("observer", "producer", "worker")


def upgrade(dsn: str, revision: str = "head", *, schema: str = "omnispindle") -> None:
    """Migrate the database at ``dsn`` to ``revision``.

    Idempotent, and safe to run from many processes at once: each migrator
    locks the schema's version table (its first install, an advisory key)
    before reading the current version, and waits at most 30 s for it.

    Raises:
        DatabaseUnavailableError: the database cannot be reached.
        SchemaOutdatedError: the schema is installed but records no revision
            (see [stamp][omnispindle.migrate.stamp]).
        ValidationError: ``schema`` is not a name a queue may use, or no
            migration is called ``revision``; nothing changed.
        LockTimeoutError: another migrator held the lock for 30 s.
    """
    migrations.upgrade(dsn, revision, Namespace(schema))


def downgrade(dsn: str, revision: str, *, schema: str = "omnispindle") -> None:
    """Migrate the database at ``dsn`` down to ``revision`` (``base`` removes everything).

    Raises:
        ValidationError: no migration is called ``revision``; nothing changed.
    """
    migrations.downgrade(dsn, revision, Namespace(schema))


def stamp(dsn: str, revision: str, *, schema: str = "omnispindle") -> None:
    """Record ``revision`` as the schema's without running any migration: for a
    schema an Alembic history of your own installed before ``apply_migration``
    recorded revisions, or a copy by ``pg_dump --schema-only`` (or without the
    queue's data), whose missing maintenance rows it puts back.

    Raises:
        ValidationError: no migration is called ``revision``.
    """
    migrations.stamp(dsn, revision, Namespace(schema))


def grant(dsn: str, role: str, access: str, *, schema: str = "omnispindle") -> None:
    """Give the existing database role ``role`` the rights one kind of ``access`` needs.

    ``observer``: SELECT on the views (``status``, ``tasks``, ``metrics``).
    ``producer``: submit, wait, stream, cancel, retry and schedule.
    ``worker``: run tasks, heartbeat, sweep, prune and enqueue schedules; it may
    update only the columns a run changes. None may change the schema: only
    ``migrate``, run as the schema's owner, needs CREATE. Run this as the owner.
    ``role`` is the role's name as it is stored (as ``createuser`` takes it),
    capitals, dots and all, not an SQL identifier to quote.

    Raises:
        ValidationError: ``access`` is none of ``ACCESS``, or no role is named ``role``.
        PermissionDeniedError: the caller may not grant these rights.
    """
    migrations.grant(dsn, role, access, Namespace(schema))

"""Alembic environment for Omnispindle's own migrations.

Run through ``omnispindle migrate`` (or ``omnispindle.migrate.upgrade``), which
hands in a connection and the schema; the plain ``alembic`` command works too,
with ``-x dsn=...`` or ``$OMNISPINDLE_DSN``, and ``-x schema=...`` or
``$OMNISPINDLE_SCHEMA`` (default ``omnispindle``).
"""

import os

import psycopg
from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from omnispindle._db import queries as q
from omnispindle._db.caller import as_psycopg
from omnispindle._db.migrations import alembic_namespace
from omnispindle._db.namespace import Namespace
from omnispindle._db.pool import execute


def run_migrations(connection: Connection, namespace: Namespace) -> None:
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema=namespace.name,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        raw = as_psycopg(connection)
        execute(raw, q.setup.bound_lock_waits())
        # Concurrent migrators queue here; the one that goes second then
        # reads the version the first one wrote and has nothing to do.
        if not execute(raw, q.setup.version_table_exists(), namespace):
            execute(raw, q.setup.lock_first_install(), namespace)
            execute(raw, q.setup.create_schema(), namespace)
        if execute(raw, q.setup.version_table_exists(), namespace):
            execute(raw, q.setup.lock_version_table(), namespace)
        migrating = alembic_namespace.set(namespace)  # Alembic records each revision itself
        try:
            context.run_migrations()
        finally:
            alembic_namespace.reset(migrating)


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection, context.config.attributes["namespace"])
        return
    given = context.get_x_argument(as_dictionary=True)
    dsn = given.get("dsn") or os.environ["OMNISPINDLE_DSN"]
    namespace = Namespace(
        given.get("schema") or os.environ.get("OMNISPINDLE_SCHEMA", "omnispindle")
    )
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    with engine.begin() as connection:
        run_migrations(connection, namespace)


main()

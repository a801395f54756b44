"""Alembic environment for Omnispindle's own migrations.

Run through ``omnispindle migrate`` (or ``omnispindle.migrate.upgrade``), which
hands in a connection; the plain ``alembic`` command works too, with
``-x dsn=...`` or ``$OMNISPINDLE_DSN``.
"""

import os

import psycopg
from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from omnispindle._db import queries as q
from omnispindle._db.caller import as_psycopg
from omnispindle._db.migrations import alembic_records
from omnispindle._db.pool import execute


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema="omnispindle",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        raw = as_psycopg(connection)
        # Concurrent migrators queue here; the one that goes second then
        # reads the version the first one wrote and has nothing to do.
        execute(raw, q.setup.lock_migrations())
        execute(raw, q.setup.create_schema())
        recording = alembic_records.set(True)  # Alembic records each revision itself
        try:
            context.run_migrations()
        finally:
            alembic_records.reset(recording)


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or os.environ["OMNISPINDLE_DSN"]
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    with engine.begin() as connection:
        run_migrations(connection)


main()

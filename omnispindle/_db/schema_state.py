"""What a database holds of Omnispindle's schema, read without changing anything,
and whether this version can use it.

The migrations are SQL scripts in ``sql/migrations``; their names sort in the
order they apply, and the latest is the revision a current database records
in ``omnispindle.alembic_version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from omnispindle._db import queries as q
from omnispindle._db.connecting import connect
from omnispindle._db.namespace import DEFAULT, Namespace
from omnispindle._db.pool import execute
from omnispindle._db.query import Plan
from omnispindle._db.statements import data_dir
from omnispindle.errors import SchemaMissingError, SchemaOutdatedError, ValidationError


def migration_names(through: str | None = None) -> tuple[str, ...]:
    """The migrations, oldest first, e.g. ``("0001_initial", ...)``: all of them, or
    those up to and including ``through``.

    Raises:
        ValidationError: no migration is called ``through``.
    """
    names = _all_migrations()
    if through is None:
        return names
    if through not in names:
        raise ValidationError(_unknown(through))
    return names[: names.index(through) + 1]


def migration_file(name: str) -> str:
    """The script of migration ``name``, or of ``NAME.down`` that undoes it, as a
    path under ``sql/``.

    Raises:
        ValidationError: ``name`` is neither (a typo, a path); nothing is read.
    """
    if not isinstance(name, str) or name.removesuffix(".down") not in _all_migrations():
        raise ValidationError(f"{_unknown(name)} (NAME.down undoes one)")
    return f"migrations/{name}.sql"


def _unknown(name: object) -> str:
    return f"no migration named {name!r}; they are {', '.join(_all_migrations())}"


@cache
def _all_migrations() -> tuple[str, ...]:
    folder = data_dir("sql") / "migrations"
    return tuple(
        sorted(path.stem for path in folder.glob("*.sql") if not path.name.endswith(".down.sql"))
    )


def head_revision() -> str:
    """The latest migration: the revision a current database records."""
    return migration_names()[-1]


def recorded_revision(dsn: str, namespace: Namespace = DEFAULT) -> str | None:
    """The revision the database records; None before the first migration."""
    with connect(dsn) as conn:
        return execute(conn, _recorded_revision(), namespace)


def _recorded_revision() -> Plan[str | None]:
    if not (yield q.setup.version_table_exists()):
        return None
    revision: str | None = yield q.setup.schema_version()
    return revision


@dataclass(frozen=True)
class SchemaState:
    """What a database holds of the schema: its tables, and the revision recorded."""

    installed: bool
    revision: str | None

    @property
    def current(self) -> bool:
        """At the latest revision this version knows, or at a later one it does not."""
        return (
            self.installed
            and self.revision is not None
            and (self.revision == head_revision() or self.revision not in migration_names())
        )


def schema_state() -> Plan[SchemaState]:
    """Read the database's :class:`SchemaState` (only reads)."""
    installed: bool = yield q.setup.schema_installed()
    revision = yield from _recorded_revision()
    return SchemaState(installed, revision)


def require_current(state: SchemaState, namespace: Namespace = DEFAULT) -> None:
    """Refuse a database whose schema this version cannot use.

    Raises:
        SchemaMissingError: no schema: say how to install it.
        SchemaOutdatedError: an older revision, or none recorded: say how to catch up.
    """
    if state.current:
        return
    schema, option = _named(namespace)
    if not state.installed:
        raise SchemaMissingError(
            f"the database has no {schema}: run `omnispindle migrate --dsn ...{option}` "
            "(or open a TaskQueue with migrate=True)"
        )
    if state.revision is None:
        raise SchemaOutdatedError(
            f"the {schema} records no revision (a copy by pg_dump --schema-only or "
            "without the queue's data, or an Alembic history of your own that "
            "installed it before apply_migration recorded revisions): run "
            f"`omnispindle migrate --dsn ...{option} --stamp REVISION` with the last migration "
            "it applied"
        )
    raise SchemaOutdatedError(
        f"the {schema} is at {state.revision} and this version needs "
        f"{head_revision()}: run `omnispindle migrate --dsn ...{option}` (or, when your own "
        "Alembic history installs it, a revision that applies the newer migrations)"
    )


def _named(namespace: Namespace) -> tuple[str, str]:
    """How messages name the schema, and the option that selects it."""
    if namespace.is_default:
        return "omnispindle schema", ""
    return f"omnispindle schema {namespace.name!r}", f" --schema {namespace.name}"

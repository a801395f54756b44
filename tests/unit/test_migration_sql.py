"""The scripts ``omnispindle.schema.migration_sql`` hands a user's own Alembic
history: one per migration and one to undo it, and no other file."""

from __future__ import annotations

import pytest

from omnispindle import ValidationError
from omnispindle.schema import migration_names, migration_sql

# A typo, a path out of the migrations, an undoing of an undoing, a file name.
NOT_MIGRATIONS = ["nope", "../queries/setup", "0001_initial.down.down", "0001_initial.sql", ""]


@pytest.mark.parametrize("name", [*NOT_MIGRATIONS, None])
def test_a_name_no_migration_has_is_refused_with_the_names(name):
    with pytest.raises(ValidationError, match=r"no migration named .*; they are 0001_initial, "):
        migration_sql(name)


def test_an_unknown_name_is_still_a_value_error():
    with pytest.raises(ValueError, match="no migration named 'nope'"):
        migration_sql("nope")


def test_each_migration_and_its_undoing_has_a_script():
    for name in migration_names():
        assert "omnispindle." in migration_sql(name)
        assert "omnispindle." in migration_sql(f"{name}.down")
        assert '"queue_two".' in migration_sql(name, schema="queue_two")


def test_migration_names_refuses_an_unknown_last_one():
    with pytest.raises(ValidationError, match="no migration named '9999_nothing'"):
        migration_names(through="9999_nothing")

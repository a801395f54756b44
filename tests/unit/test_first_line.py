"""Errors in logs and messages take one line."""

from __future__ import annotations

from omnispindle.errors import first_line


def test_a_database_error_is_reported_without_the_context_of_its_nested_statements():
    error = RuntimeError(
        "terminating connection due to administrator command\n"
        'CONTEXT:  SQL statement "UPDATE omnispindle.tasks ..."\n'
        "PL/pgSQL function omnispindle.complete_attempts line 4"
    )
    assert first_line(error) == "terminating connection due to administrator command"


def test_an_error_without_text_is_named_by_its_type():
    assert first_line(TimeoutError()) == "TimeoutError"

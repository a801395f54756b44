"""No secret on a command line, where any user of the host reads it in ``ps``, nor in
an error that logs or a terminal show."""

from __future__ import annotations

import traceback

import pytest

from omnispindle import ConfigurationError, TaskQueueClient
from omnispindle.bench import workflows
from omnispindle.cli.main import main


def test_bench_worker_processes_get_the_dsn_from_the_environment(monkeypatch):
    """Issue 18, finding 8: the DSN, password included, was on the worker's command line."""
    started = {}

    def popen(args, env=None):
        started.update(args=args, env=env)

    monkeypatch.setattr(workflows.subprocess, "Popen", popen)
    dsn = "postgresql://app:s3cret@db.example/app"
    workflows.worker_process(dsn, "w-1", 4, 5.0)
    assert not any("s3cret" in arg for arg in started["args"])
    assert started["env"]["OMNISPINDLE_DSN"] == dsn


MALFORMED_DSNS = [
    "postgresql://app:s3cret%zz@127.0.0.1:1/app",  # a % left unescaped in the password
    "postgresql://app:s3cret@[::1/app",  # a URI cut short
    "host=127.0.0.1 port=1 password=two s3cret",  # a space left unquoted
]


@pytest.mark.parametrize("dsn", MALFORMED_DSNS)
def test_a_dsn_libpq_cannot_parse_is_refused_without_its_password(dsn):
    """libpq's reason quotes the DSN: psycopg's ProgrammingError showed the password."""
    with pytest.raises(ConfigurationError, match="the DSN cannot be parsed") as caught:
        TaskQueueClient(dsn=dsn)
    shown = "".join(traceback.format_exception(caught.value))
    assert "s3cret" not in shown


@pytest.mark.parametrize("dsn", MALFORMED_DSNS)
def test_the_command_line_names_a_bad_dsn_without_its_password(dsn, capsys, monkeypatch):
    """`omnispindle status` printed ``database error:`` and libpq's reason, password included."""
    monkeypatch.setenv("OMNISPINDLE_DSN", dsn)
    assert main(["status"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("omnispindle: the DSN cannot be parsed") and "s3cret" not in line


def test_a_bad_dsn_still_names_the_option_it_does_not_know():
    with pytest.raises(ConfigurationError, match='invalid connection option "sslmod"'):
        TaskQueueClient(dsn="host=127.0.0.1 password=s3cret sslmod=require")

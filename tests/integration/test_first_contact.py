"""What a new user meets first: the worker command, its arguments, names and errors (issue 20)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from psycopg.conninfo import make_conninfo

from omnispindle import (
    AsyncTaskQueueClient,
    ConfigurationError,
    DatabaseUnavailableError,
    TaskQueueClient,
    WorkerClient,
)
from omnispindle.cli.main import main
from omnispindle.cli.main import parser as cli_parser
from omnispindle.cli.worker import module_name_arg

from ..acceptance.workers import ROOT

OMNISPINDLE = str(Path(sys.executable).parent / "omnispindle")

EXECUTORS_MODULE = """
EXECUTORS = {
    "double": lambda task: {"twice": 2 * task["parameters"]["n"]},
    "shout": lambda task: {"loud": task["parameters"]["text"].upper()},
}
"""


def test_the_worker_command_finds_an_executors_module_in_the_working_directory(
    tmp_path, dsn, client
):
    """Finding 3: ``--executors mytasks`` said ``No module named 'mytasks'``."""
    (tmp_path / "mytasks.py").write_text(EXECUTORS_MODULE)
    task_id = client.submit_task("double", {"n": 21})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMNISPINDLE_DSN")}
    worker = subprocess.Popen(
        [OMNISPINDLE, "--log-level", "WARNING", "worker", "--dsn", dsn, "--executors", "mytasks"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_for_task(task_id, timeout=60)["result"] == {"twice": 42}
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err


def test_capabilities_choose_among_a_modules_executors_and_name_the_others(tmp_path, dsn, client):
    """One executors module serves workers that each take their share (finding 7)."""
    (tmp_path / "mytasks.py").write_text(EXECUTORS_MODULE)
    # "shout" comes first in claim order, so a worker that could take it would have.
    shouted = client.submit_task("shout", {"text": "hi"}, priority=10)
    doubled = client.submit_task("double", {"n": 4})
    worker = subprocess.Popen(
        [OMNISPINDLE, "worker", "--dsn", dsn, "--executors", "mytasks", "--capabilities", "double"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_for_task(doubled, timeout=60)["result"] == {"twice": 8}
        assert client.get_task(shouted)["state"] == "pending"
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert "executors not among --capabilities, not run here: shout" in err


def test_capabilities_written_with_spaces_after_the_commas_run_every_named_executor(
    tmp_path, dsn, queue, client
):
    """``--capabilities "double, shout"`` declared " shout": its executor was left out
    and its tasks waited for ever."""
    (tmp_path / "mytasks.py").write_text(EXECUTORS_MODULE)
    shouted = client.submit_task("shout", {"text": "hi"}, required_capabilities=["gpu"])
    worker = subprocess.Popen(
        [OMNISPINDLE, "worker", "--dsn", dsn, "--executors", "mytasks"]
        + ["--capabilities", " double, shout , gpu"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.wait_for_task(shouted, timeout=30)["result"] == {"loud": "HI"}
        doubled = client.submit_task("double", {"n": 4})
        assert client.wait_for_task(doubled, timeout=30)["result"] == {"twice": 8}
        (declared,) = [w["capabilities"] for w in queue.list_workers() if w["state"] == "active"]
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert declared == ["double", "shout", "gpu"]
    assert "not among --capabilities" not in err


def test_a_worker_refuses_executors_its_capabilities_leave_out(queue):
    """Finding 7: such an executor was silently never used, and its waiter timed out."""
    worker = WorkerClient(local_queue=queue, capabilities=["math"])
    worker.register_task_executor("math", lambda task: {})
    worker.register_task_executor("email", lambda task: {})
    with pytest.raises(ConfigurationError, match=r"executors for \['email'\].*capabilities"):
        worker.start()


def all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option that takes a number; a command such as
    ``schedules add`` is named by its words."""
    found = []
    for parser in all_parsers(cli_parser()):
        command = " ".join(parser.prog.split()[1:])
        for action in parser._actions:
            if (
                action.option_strings
                and action.type not in (None, str, module_name_arg)  # a module's name
                and action.nargs is None
            ):
                found.append((command, action.option_strings[-1]))
    return found


# What each command needs besides the option under test.
REQUIRED = {
    "worker": ["--executors", "x"],
    "grant": ["worker", "someone"],
    "bench": ["drain"],
    "submit": ["t"],
    "schedules add": ["nightly", "@daily", "t"],
    "schedules remove": ["nightly"],
    "cancel": ["1"],
    "retry": ["1"],
    "wait": ["1"],
    "pause": ["t"],
    "limit": ["t"],
    "strategy": ["t", "aging"],
    "resume": ["t"],
}


@pytest.mark.parametrize(("command", "option"), numeric_options())
@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_number_is_a_usage_error_with_exit_code_2(capsys, command, option, value):
    """Finding 10: ``--concurrency 0`` and ``--lease-timeout -5`` exited 1, after connecting."""
    if (command, option, value) in {
        ("metrics", "--port", "0"),
        ("submit", "--priority", "0"),
        ("schedules add", "--priority", "0"),
        ("submit", "--max-retries", "0"),
        ("schedules add", "--max-retries", "0"),
        ("submit", "--retry-backoff", "0"),
        ("schedules add", "--retry-backoff", "0"),
        ("submit", "--priority", "-5"),
        ("schedules add", "--priority", "-5"),
    }:
        pytest.skip("a valid value for this option")
    if command == "bench":
        pytest.skip("bench options go to the scenario, which checks them")
    args = [*command.split(), *REQUIRED.get(command, []), option, value]
    assert main(args) == 2, args
    assert "omnispindle:" in capsys.readouterr().err


def test_every_number_the_commands_take_is_checked_by_its_type():
    """No option hands an unchecked int or float to the library."""
    for parser in all_parsers(cli_parser()):
        for action in parser._actions:
            if parser.prog.split()[-1] != "bench":
                assert action.type not in (int, float), f"{parser.prog} {action.option_strings}"


def test_help_shows_the_defaults(capsys):
    """Finding 12: ``--help`` hid the defaults of the worker's intervals and lease."""
    assert main(["worker", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--poll-interval", "1.0"),
        ("--lease-timeout", "30.0"),
        ("--sweep-interval", "1.0"),
        ("--concurrency", "1"),
    ]:
        assert f"{option}" in out and f"(default {default})" in out.split(option, 1)[1], option


def test_the_version_is_one_command_away(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"omnispindle {omnispindle_version()}"


def omnispindle_version() -> str:
    import omnispindle

    return omnispindle.__version__


def test_workers_are_named_uniquely_by_default(queue):
    """Finding 12: every process called its first worker ``worker-1``."""
    first, second = WorkerClient(local_queue=queue), WorkerClient(local_queue=queue)
    prefix = f"{socket.gethostname()}-{os.getpid()}-"
    assert first.settings.name.startswith(prefix) and second.settings.name.startswith(prefix)
    assert first.settings.name != second.settings.name


def test_the_tracing_extra_installs_what_the_tracing_example_imports():
    """Finding 11: ``[tracing]`` lacked ``opentelemetry-sdk``."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("opentelemetry-sdk") for req in extras["tracing"])
    example = (ROOT / "docs" / "guide" / "tracing.md").read_text()
    assert "from opentelemetry.sdk" in example


def test_a_client_opened_by_dsn_submits(dsn):
    with TaskQueueClient(dsn=dsn) as client:
        assert client.submit_task("t") == 1


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers, as a frozen server does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_an_unreachable_database_fails_fast_with_its_cause(silent_port, caplog):
    """Finding 9: 30.9 s and twelve pool warnings before ``couldn't get a connection``."""
    dsn = f"postgresql://postgres@127.0.0.1:{silent_port}/app?connect_timeout=1"
    opens = [
        lambda: TaskQueueClient(dsn=dsn),
        lambda: asyncio.run(AsyncTaskQueueClient(dsn=dsn).open()),
    ]
    with caplog.at_level(logging.DEBUG, logger="psycopg"):
        for open_one in opens:
            with pytest.raises(DatabaseUnavailableError, match="timeout expired"):
                open_one()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_command_line_says_why_in_one_line(silent_port, server_dsn, tmp_path):
    """Finding 9: the cause showed only in pool warnings, and a wrong database name
    printed a pool warning before the real message."""
    unreachable = f"postgresql://postgres@127.0.0.1:{silent_port}/app"
    missing = make_conninfo(server_dsn, dbname="no_such_database")
    for dsn, cause in [
        (unreachable, "timeout expired"),
        (missing, '"no_such_database" does not exist'),
    ]:
        done = subprocess.run(
            [OMNISPINDLE, "status", "--dsn", dsn], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith("omnispindle: cannot connect to the database ") and cause in line


def command_paths() -> list[str]:
    """Every command, a command with actions by each of its actions."""
    return sorted(
        " ".join(parser.prog.split()[1:])
        for parser in all_parsers(cli_parser())
        if len(parser.prog.split()) > 1
        and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    )


@pytest.mark.parametrize("command", command_paths())
def test_every_command_answers_a_bad_argument_with_exit_code_2(capsys, command):
    """The README's exit codes, command by command: an unknown option is a usage error."""
    assert main([*command.split(), *REQUIRED.get(command, []), "--no-such-option"]) == 2
    [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("omnispindle")]
    assert "--no-such-option" in line


def test_submit_prints_the_id_and_waits_for_the_result(dsn, client, start_worker, capsys):
    """Finding 12: there was no ``submit`` command."""
    start_worker({"add": lambda task: {"sum": sum(task["parameters"]["values"])}})
    assert main(["submit", "add", "--params", '{"values": [2, 3]}', "--dsn", dsn]) == 0
    task_id = int(capsys.readouterr().out)
    assert client.wait_for_task(task_id, timeout=60)["result"] == {"sum": 5}
    args = ["submit", "add", "--params", '{"values": [4]}', "--priority", "9", "--wait"]
    assert main([*args, "--json", "--dsn", dsn]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert (record["state"], record["priority"], record["result"]) == ("succeeded", 9, {"sum": 4})


def test_submit_refuses_parameters_that_are_no_json_object(dsn, conn, capsys):
    assert main(["submit", "add", "--params", "[1, 2]", "--dsn", dsn]) == 2
    assert "must be a JSON object, got list" in capsys.readouterr().err
    assert conn.execute("SELECT count(*) FROM omnispindle.tasks").fetchone()[0] == 0


def test_schedules_are_added_listed_and_removed_from_the_shell(dsn, conn, capsys):
    """Finding 12: there was no command for periodic schedules."""
    add = ["schedules", "add", "nightly", "0 2 * * *", "report", "--tz", "Europe/Berlin"]
    assert main([*add, "--params", '{"kind": "daily"}', "--dsn", dsn]) == 0
    assert (
        "schedule nightly saved: 0 2 * * * in Europe/Berlin; next tick" in capsys.readouterr().out
    )
    assert main(["schedules", "list", "--json", "--dsn", dsn]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["timezone"], listed["task_type"]) == (
        "nightly",
        "Europe/Berlin",
        "report",
    )
    assert main(["schedules", "add", "x", "0 0 30 2 *", "t", "--dsn", dsn]) == 2
    assert "never fires" in capsys.readouterr().err
    assert main(["schedules", "remove", "nightly", "--dsn", dsn]) == 0
    assert main(["schedules", "remove", "nightly", "--dsn", dsn]) == 1
    assert conn.execute("SELECT count(*) FROM omnispindle.periodic_tasks").fetchone()[0] == 0

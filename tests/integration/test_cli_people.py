"""The command line for people: tasks, retry, cancel and wait, with their exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import unicodedata

import psycopg
import pytest

from omnispindle import TaskNotFoundError, current_task
from omnispindle.cli.args import age_arg
from omnispindle.cli.formatting import format_age, format_table, shorten
from omnispindle.cli.main import main
from omnispindle.cli.main import parser as cli_parser
from omnispindle.cli.progress import ProgressBar
from omnispindle.errors import TaskStateError

from ..acceptance.workers import ROOT
from .test_history import archive_all
from .test_retention import make_old

DEADLINE = 30
WORKER = "cli-worker"
BAR = re.compile(r"\[(#*)(\.*)\] (\d+)/(\d+) tasks")
COMMANDS = (
    "migrate",
    "worker",
    "sweep",
    "status",
    "bench",
    "demo",
    "tasks",
    "retry",
    "cancel",
    "wait",
)


def cli(capsys, dsn: str, *args: str) -> tuple[int, str, str]:
    """Run ``omnispindle ARGS --dsn DSN`` in-process; return (code, stdout, stderr)."""
    capsys.readouterr()
    code = main([*args, "--dsn", dsn])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys, dsn: str, *args: str):
    code, out, err = cli(capsys, dsn, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def snapshot(conn) -> list[tuple]:
    """Everything the commands could change, for "nothing changed" checks."""
    return conn.execute(
        "SELECT id, state, attempts, max_attempts, run_after, finished_at, cancel_reason,"
        " cancel_requested_at, errors FROM omnispindle.tasks ORDER BY id"
    ).fetchall()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("omnispindle: "), err
    return lines[0]


def fails(message: str = "boom"):
    def run(task):
        raise ValueError(f"{message} {task['attempt']}")

    return run


def fails_once():
    calls: list[int] = []

    def run(task):
        calls.append(task["task_id"])
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return {"ok": True}

    return run


def failed_task(client, start_worker, task_type: str = "bad") -> int:
    """A task that failed for good, run by a worker named ``WORKER``."""
    start_worker({task_type: fails()}, name=WORKER)
    task_id = client.submit_task(task_type, max_retries=0)
    assert client.wait_for_task(task_id, timeout=DEADLINE)["state"] == "failed"
    return task_id


# --- help, usage and exit codes -------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command
    assert "exit codes:" in out
    for code, meaning in [
        (0, "ok"),
        (1, "error"),
        (2, "usage"),
        (3, "unknown task id"),
        (4, "failed or was cancelled"),
        (5, "timed out"),
    ]:
        assert re.search(rf"^\s+{code}\s+.*{meaning}", out, re.MULTILINE), code


def all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


def test_every_argument_has_a_help_text():
    for parser in all_parsers(cli_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{parser.prog} {action.dest} has no help"


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "--older-than", "10"],
        ["tasks", "--older-than", "5x"],
        ["tasks", "--older-than", "99999999999d"],
        ["tasks", "--limit", "0"],
        ["tasks", "--limit", "99999999999999999999"],
        ["tasks", "99999999999999999999"],
        ["tasks", "--state", "done"],
        ["tasks", "1", "--state", "failed"],
        ["retry", "abc"],
        ["retry", "0"],
        ["cancel"],
        ["wait", "1", "--timeout", "-1"],
        ["wait", "1", "--progress", "sometimes"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(capsys, dsn, conn, client, args):
    client.submit_task("job")
    before = snapshot(conn)
    code, out, err = cli(capsys, dsn, *args)
    assert code == 2
    assert out == ""
    one_error_line(err)
    assert snapshot(conn) == before


def test_a_database_without_the_schema_is_one_line_exit_1_and_is_not_migrated(capsys, empty_dsn):
    code, _, err = cli(capsys, empty_dsn, "tasks")
    assert code == 1
    assert "no omnispindle schema" in one_error_line(err)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('omnispindle.tasks')").fetchone()[0] is None


def run_cli(dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMNISPINDLE_DSN"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "omnispindle", *args, "--dsn", dsn],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_exit_codes_of_a_real_process(dsn, conn, client, start_worker):
    bad = failed_task(client, start_worker)
    waiting = client.submit_task("nobody-runs-this")
    before = snapshot(conn)
    outcomes = {
        "ok": run_cli(dsn, "tasks", str(bad)),
        "usage": run_cli(dsn, "tasks", "--older-than", "soon"),
        "unknown": run_cli(dsn, "retry", str(bad), "424242"),
        "failed": run_cli(dsn, "wait", str(bad)),
        "timeout": run_cli(dsn, "wait", str(waiting), "--timeout", "0.3"),
    }
    assert {k: p.returncode for k, p in outcomes.items()} == {
        "ok": 0,
        "usage": 2,
        "unknown": 3,
        "failed": 4,
        "timeout": 5,
    }
    assert f"Task {bad}" in outcomes["ok"].stdout
    assert one_error_line(outcomes["unknown"].stderr) == "omnispindle: no task with id 424242"
    assert one_error_line(outcomes["timeout"].stderr) == (
        "omnispindle: 1 of 1 task(s) unfinished after 0.3 s"
    )
    assert snapshot(conn) == before


# --- tasks: list --------------------------------------------------------------------------


def test_list_filters_by_type_state_and_age(capsys, dsn, conn, client):
    old = client.submit_task("report")
    a1 = client.submit_task("resize")
    a2 = client.submit_task("resize")
    r2 = client.submit_task("report")
    client.cancel_task(a2)
    conn.execute(
        "UPDATE omnispindle.tasks SET created_at = now() - interval '3 hours' WHERE id = %s", [old]
    )

    def ids(*args: str) -> list[int]:
        return [row["task_id"] for row in as_json(capsys, dsn, "tasks", *args)]

    assert ids() == [r2, a2, a1, old]  # newest first
    assert ids("--type", "resize") == [a2, a1]
    assert ids("--type", "resize", "--type", "report") == [r2, a2, a1, old]
    assert ids("--state", "cancelled") == [a2]
    assert ids("--state", "pending", "--state", "cancelled", "--type", "resize") == [a2, a1]
    assert ids("--older-than", "2h") == [old]
    assert ids("--older-than", "4h") == []
    assert ids("--older-than", "90m", "--state", "pending") == [old]
    assert ids("--limit", "2") == [r2, a2]
    assert ids("--state", "failed") == []


def test_list_table_shows_attempts_age_worker_and_a_shortened_error(
    capsys, dsn, client, start_worker
):
    start_worker({"bad": fails("x" * 200)}, name=WORKER)
    bad = client.submit_task("bad", max_retries=0)
    client.wait_for_task(bad, timeout=DEADLINE)
    pending = client.submit_task("other", priority=5)
    code, out, err = cli(capsys, dsn, "tasks")
    assert (code, err) == (0, "")
    title, header, _rule, first, second = out.splitlines()
    assert title == "Tasks"
    assert header.split() == [
        "id",
        "type",
        "state",
        "priority",
        "attempts",
        "age",
        "worker",
        "last",
        "error",
    ]
    assert first.split()[:5] == [str(pending), "other", "pending", "5", "0/4"]
    assert re.fullmatch(r"\d+s", first.split()[5]) and first.split()[6] == "-"
    assert second.split()[:5] == [str(bad), "bad", "failed", "0", "1/1"]
    assert WORKER in second
    error = second[header.index("last error") :]
    assert error.startswith("ValueError: xxx") and error.endswith("...")
    assert len(error) == 50


def test_a_cut_list_says_so_and_an_empty_one_says_none(capsys, dsn, client):
    assert cli(capsys, dsn, "tasks")[1] == "Tasks: none\n"
    for _ in range(3):
        client.submit_task("job")
    out = cli(capsys, dsn, "tasks", "--limit", "2")[1]
    assert out.splitlines()[-1] == "(the newest 2 shown; --limit N shows more)"
    assert len(out.splitlines()) == 6


# --- tasks ID: one task in full -----------------------------------------------------------


def test_show_gives_every_error_with_its_traceback_and_the_relatives(
    capsys, dsn, client, start_worker
):
    start_worker({"ok": lambda task: {"done": True}, "bad": fails()}, name=WORKER)
    parent = client.submit_task("ok")
    bad = client.submit_task(
        "bad", {"path": "/in"}, dependencies=[parent], max_retries=1, retry_backoff=0.01
    )
    child = client.submit_task("ok", dependencies=[bad])
    client.wait_for_batch([parent, bad, child], timeout=DEADLINE)

    code, out, err = cli(capsys, dsn, "tasks", str(bad))
    assert (code, err) == (0, "")
    assert out.startswith(f"Task {bad}\n")
    assert re.search(r"^  state\s+failed$", out, re.MULTILINE)
    assert re.search(r"^  attempts\s+2 of 2$", out, re.MULTILINE)
    assert re.search(rf"^  worker\s+{WORKER}$", out, re.MULTILINE)
    assert '"path": "/in"' in out
    assert f"Dependencies (1)\n  {parent}  succeeded  ok\n" in out
    assert f"Dependents (1)\n  {child}  cancelled  ok\n" in out
    assert (
        "Errors (2)\n  attempt 1: ValueError: boom 1\n    Traceback (most recent call last):" in out
    )
    assert "  attempt 2: ValueError: boom 2\n    Traceback (most recent call last):" in out
    assert out.count("    ValueError: boom") == 2  # each traceback's last line

    task = as_json(capsys, dsn, "tasks", str(bad))
    assert (task["task_id"], task["state"], task["worker_name"]) == (bad, "failed", WORKER)
    assert task["parameters"] == {"path": "/in"}
    assert task["dependencies"] == [{"task_id": parent, "task_type": "ok", "state": "succeeded"}]
    assert task["dependents"] == [{"task_id": child, "task_type": "ok", "state": "cancelled"}]
    assert [e["attempt"] for e in task["errors"]] == [1, 2]
    assert all("Traceback (most recent call last)" in e["traceback"] for e in task["errors"])

    shown = as_json(capsys, dsn, "tasks", str(child))
    assert shown["cancel_reason"] == f"dependency {bad} failed"
    assert as_json(capsys, dsn, "tasks", str(parent))["result"] == {"done": True}


def test_show_gives_a_tasks_group_and_idempotency_key_archived_or_not(
    capsys, dsn, client, queue, conn
):
    task_id = client.submit_task("job", group_key="tenant-7", idempotency_key="order-7")
    code, out, err = cli(capsys, dsn, "tasks", str(task_id))
    assert (code, err) == (0, "")
    assert re.search(r"^  group\s+tenant-7$", out, re.MULTILINE)
    assert re.search(r"^  idempotency key\s+order-7$", out, re.MULTILINE)

    client.cancel_task(task_id)
    make_old(conn, [task_id])
    assert archive_all(queue) == 1  # now read from task_history
    task = as_json(capsys, dsn, "tasks", str(task_id))
    assert (task["group_key"], task["idempotency_key"]) == ("tenant-7", "order-7")


def test_show_cuts_a_big_result_and_says_so(capsys, dsn, client, start_worker):
    # A 16 MiB result printed 18 MB to the terminal.
    start_worker({"big": lambda task: ["r" * 90] * 40_000})
    task_id = client.submit_task("big", {"text": "a" * 900_000})
    assert client.wait_for_task(task_id, timeout=DEADLINE)["state"] == "succeeded"
    code, out, err = cli(capsys, dsn, "tasks", str(task_id))
    assert (code, err) == (0, "")
    assert len(out) < 300_000  # two values of 100,000 characters and the rest
    assert "  ... cut: 900,016 characters, the first 100,000 shown (--json prints all)" in out
    assert "  ... cut: 3,840,002 characters, the first 100,000 shown (--json prints all)" in out
    task = as_json(capsys, dsn, "tasks", str(task_id))
    assert len(task["result"]) == 40_000 and len(task["parameters"]["text"]) == 900_000


# A failed attempt as a worker stores it, with the longest message and traceback it keeps.
BIG_FAILURE = """
WITH started AS (
    UPDATE omnispindle.tasks SET state = 'running', attempts = attempts + 1,
        started_at = now(), lease_token = gen_random_uuid(),
        lease_expires_at = now() + interval '1 h'
    WHERE id = %(id)s RETURNING id, lease_token, attempts)
SELECT f.* FROM started, omnispindle.fail_attempts(ARRAY[started.id], ARRAY[started.lease_token],
    ARRAY[jsonb_build_object('type', 'BigError', 'message', 'm' || repeat('x', 9999),
                             'traceback',
                             'attempt ' || started.attempts || ' ' || repeat('t', 50000),
                             'attempt', started.attempts)]) AS f
"""


def failed_with_big_errors(conn, client, attempts: int) -> int:
    task_id = client.submit_task("big", max_retries=attempts - 1, retry_backoff=0)
    for _ in range(attempts):
        conn.execute(BIG_FAILURE, {"id": task_id})
    assert client.get_task(task_id)["state"] == "failed"
    return task_id


def test_show_cuts_a_long_error_history_to_its_newest_errors_and_says_so(capsys, dsn, conn, client):
    # 101 attempts of such errors printed over 6 MB to the terminal.
    task_id = failed_with_big_errors(conn, client, 20)
    code, out, err = cli(capsys, dsn, "tasks", str(task_id))
    assert (code, err) == (0, "")
    assert len(out) < 200_000  # errors of 100,000 characters at most, and the rest
    assert (
        "  ... cut: 20 errors of 1,2" in out
        and "characters; the newest 1 shown (--json prints all)" in out
    )
    assert "attempt 20 t" in out and "attempt 19 t" not in out
    assert len(as_json(capsys, dsn, "tasks", str(task_id))["errors"]) == 20


def test_show_an_unknown_task_exits_3(capsys, dsn):
    code, out, err = cli(capsys, dsn, "tasks", "424242")
    assert (code, out) == (3, "")
    assert one_error_line(err) == "omnispindle: no task with id 424242"


# --- retry --------------------------------------------------------------------------------


def test_retry_puts_a_failed_task_back_and_a_worker_runs_it(
    capsys, dsn, conn, client, start_worker
):
    start_worker({"flaky": fails_once()}, name=WORKER)
    task_id = client.submit_task("flaky", max_retries=0)
    assert client.wait_for_task(task_id, timeout=DEADLINE)["state"] == "failed"

    code, out, err = cli(capsys, dsn, "retry", str(task_id))
    assert (code, err) == (0, "")
    assert out == f"task {task_id} is pending again (attempt 2 of 2)\n"
    task = client.wait_for_task(task_id, timeout=DEADLINE)
    assert (task["state"], task["result"]) == ("succeeded", {"ok": True})
    row = conn.execute(
        "SELECT attempts, max_attempts, jsonb_array_length(errors)"
        " FROM omnispindle.tasks WHERE id = %s",
        [task_id],
    ).fetchone()
    assert row == (2, 2, 1)  # the first attempt's error is kept


def test_retry_of_several_tasks_prints_json(capsys, dsn, conn, client, start_worker):
    worker = start_worker({"bad": fails()})
    once = client.submit_task("bad", max_retries=0)
    twice = client.submit_task("bad", max_retries=1, retry_backoff=0.01)
    client.wait_for_batch([once, twice], timeout=DEADLINE)
    worker.stop(timeout=DEADLINE)  # so that the retried tasks stay pending
    outcomes = as_json(capsys, dsn, "retry", str(twice), str(once))
    assert outcomes == [
        {
            "task_id": twice,
            "state": "pending",
            "dependents": [],
            "message": f"task {twice} is pending again (attempt 3 of 3)",
        },
        {
            "task_id": once,
            "state": "pending",
            "dependents": [],
            "message": f"task {once} is pending again (attempt 2 of 2)",
        },
    ]
    rows = conn.execute(
        "SELECT id, state::text, attempts, max_attempts, finished_at"
        " FROM omnispindle.tasks ORDER BY id"
    ).fetchall()
    assert rows == [(once, "pending", 1, 2, None), (twice, "pending", 2, 3, None)]


@pytest.mark.parametrize("order", ["unknown-first", "unknown-last", "unknown-only"])
def test_retry_with_an_unknown_id_exits_3_and_changes_nothing(
    capsys, dsn, conn, client, start_worker, order
):
    bad = failed_task(client, start_worker)
    ids = {
        "unknown-first": ["424242", str(bad)],
        "unknown-last": [str(bad), "424242"],
        "unknown-only": ["424242"],
    }[order]
    before = snapshot(conn)
    code, out, err = cli(capsys, dsn, "retry", *ids)
    assert (code, out) == (3, "")
    assert one_error_line(err) == "omnispindle: no task with id 424242"
    assert snapshot(conn) == before


def test_retry_of_a_task_that_has_not_failed_exits_1_and_changes_nothing(
    capsys, dsn, conn, client, start_worker
):
    bad = failed_task(client, start_worker)
    start_worker({"ok": lambda task: {}})
    done = client.submit_task("ok")
    client.wait_for_task(done, timeout=DEADLINE)
    before = snapshot(conn)
    code, out, err = cli(capsys, dsn, "retry", str(bad), str(done))
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"omnispindle: task {done} is succeeded; only failed tasks can be retried"
    )
    assert snapshot(conn) == before


def test_retry_task_in_python(client, conn, start_worker):
    bad = failed_task(client, start_worker)
    with pytest.raises(TaskNotFoundError):
        client.retry_task(424242)
    pending = client.submit_task("idle")
    before = snapshot(conn)
    with pytest.raises(TaskStateError, match=f"task {pending} is pending; only failed"):
        client.retry_task(pending)
    assert snapshot(conn) == before
    outcome = client.retry_task(bad)
    assert outcome["task_id"] == bad and outcome["state"] == "pending"
    assert client.wait_for_task(bad, timeout=DEADLINE)["state"] == "failed"  # it fails again
    assert client.get_task(bad)["attempts"] == 2


# --- cancel -------------------------------------------------------------------------------


def test_cancel_pending_running_and_finished_tasks(capsys, dsn, conn, client, start_worker):
    started = threading.Event()

    def loop(task):
        started.set()
        while not current_task().wait_cancelled(0.01):
            pass
        return {}

    start_worker({"loop": loop, "ok": lambda task: {}}, heartbeat_interval=0.5)
    done = client.submit_task("ok")
    client.wait_for_task(done, timeout=DEADLINE)
    running = client.submit_task("loop")
    assert started.wait(DEADLINE)
    pending = client.submit_task("idle")
    child = client.submit_task("idle", dependencies=[pending])

    code, out, err = cli(
        capsys, dsn, "cancel", str(pending), str(running), str(done), "--reason", "operator said so"
    )
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"task {pending} cancelled",
        f"task {running} is running; its worker has been asked to stop it",
        f"task {done} already succeeded; nothing to cancel",
    ]
    tasks = client.wait_for_batch([pending, running, done, child], timeout=DEADLINE)
    assert [t["state"] for t in tasks] == ["cancelled", "cancelled", "succeeded", "cancelled"]
    assert [t["cancel_reason"] for t in tasks] == [
        "operator said so",
        "operator said so",
        None,
        f"dependency {pending} cancelled",
    ]


def test_cancel_prints_json(capsys, dsn, client):
    task_id = client.submit_task("idle")
    outcomes = as_json(capsys, dsn, "cancel", str(task_id))
    assert outcomes == [
        {
            "task_id": task_id,
            "state": "cancelled",
            "cancelled": True,
            "message": f"task {task_id} cancelled",
        }
    ]
    assert client.get_task(task_id)["cancel_reason"] == "cancelled by request"


def test_cancel_with_an_unknown_id_exits_3_and_changes_nothing(capsys, dsn, conn, client):
    first = client.submit_task("idle")
    second = client.submit_task("idle", dependencies=[first])
    before = snapshot(conn)
    code, out, err = cli(capsys, dsn, "cancel", str(first), "424242", str(second))
    assert (code, out) == (3, "")
    assert one_error_line(err) == "omnispindle: no task with id 424242"
    assert snapshot(conn) == before


# --- wait ---------------------------------------------------------------------------------


def test_wait_for_tasks_that_succeed(capsys, dsn, client, start_worker):
    start_worker({"double": lambda task: {"n": task["parameters"]["n"] * 2}})
    ids = [client.submit_task("double", {"n": n}) for n in (1, 2)]
    code, out, err = cli(capsys, dsn, "wait", *map(str, ids), "--timeout", str(DEADLINE))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Tasks"
    assert [line.split() for line in lines[3:]] == [
        [str(ids[0]), "double", "succeeded", "1/4", '{"n":', "2}"],
        [str(ids[1]), "double", "succeeded", "1/4", '{"n":', "4}"],
    ]
    records = as_json(capsys, dsn, "wait", *map(str, ids))
    assert [(r["task_id"], r["state"], r["result"]) for r in records] == [
        (ids[0], "succeeded", {"n": 2}),
        (ids[1], "succeeded", {"n": 4}),
    ]


def test_wait_exits_4_when_a_task_failed_or_was_cancelled(capsys, dsn, client, start_worker):
    bad = failed_task(client, start_worker)
    start_worker({"ok": lambda task: {}})
    good = client.submit_task("ok")
    dropped = client.submit_task("idle")
    client.cancel_task(dropped, reason="not needed")
    code, out, err = cli(capsys, dsn, "wait", str(good), str(bad), "--timeout", str(DEADLINE))
    assert (code, err) == (4, "")
    assert re.search(rf"^{bad}\s+bad\s+failed\s+1/1\s+ValueError: boom 1\s*$", out, re.MULTILINE)
    code, out, _ = cli(capsys, dsn, "wait", str(dropped), "--json")
    assert code == 4
    assert json.loads(out)[0]["cancel_reason"] == "not needed"


def bar_frames(err: str) -> list[tuple[str, int, int]]:
    frames = [f for f in err.split("\r") if f]
    parsed = []
    for frame in frames:
        match = BAR.fullmatch(frame.rstrip("\n"))
        assert match, frame
        hashes, dots, done, total = match.groups()
        assert len(hashes) + len(dots) == 30
        assert len(hashes) == 30 * int(done) // int(total)
        parsed.append((frame, int(done), int(total)))
    return parsed


def test_wait_draws_a_progress_bar_when_asked(capsys, dsn, client, start_worker):
    start_worker({"ok": lambda task: {}}, concurrency=3)
    ids = [str(client.submit_task("ok")) for _ in range(3)]
    code, _, err = cli(
        capsys, dsn, "wait", *ids, "--progress", "always", "--timeout", str(DEADLINE)
    )
    assert code == 0
    assert err.startswith("\r[" + "." * 30 + "] 0/3 tasks")
    assert err.endswith("\r[" + "#" * 30 + "] 3/3 tasks\n")
    counts = [done for _, done, _ in bar_frames(err)]
    assert counts == sorted(counts) and counts[-1] == 3
    for mode in ("never", "auto"):  # auto: captured stderr is no terminal
        code, _, err = cli(capsys, dsn, "wait", *ids, "--progress", mode)
        assert (code, err) == (0, "")


def test_wait_times_out_with_exit_5_after_drawing_what_finished(capsys, dsn, client, start_worker):
    start_worker({"ok": lambda task: {}})
    done = [client.submit_task("ok") for _ in range(2)]
    client.wait_for_batch(done, timeout=DEADLINE)
    stuck = client.submit_task("idle")
    code, out, err = cli(
        capsys, dsn, "wait", *map(str, [*done, stuck]), "--timeout", "0.5", "--progress", "always"
    )
    assert (code, out) == (5, "")
    assert err == (
        "\r[" + "." * 30 + "] 0/3 tasks"
        "\r[" + "#" * 20 + "." * 10 + "] 2/3 tasks\n"
        "omnispindle: 1 of 3 task(s) unfinished after 0.5 s\n"
    )
    assert client.get_task(stuck)["state"] == "pending"


def test_wait_for_an_unknown_task_exits_3_without_a_bar(capsys, dsn, client):
    task_id = client.submit_task("idle")
    code, out, err = cli(capsys, dsn, "wait", str(task_id), "424242", "--progress", "always")
    assert (code, out) == (3, "")
    assert one_error_line(err) == "omnispindle: no task with id 424242"


# --- the helpers behind the output ----------------------------------------------------------


def test_ages_parse_and_print_for_people():
    assert [age_arg(a) for a in ("30s", "10m", "2h", "1d", "1.5h")] == [30, 600, 7200, 86400, 5400]
    with pytest.raises(argparse.ArgumentTypeError):
        age_arg("-5m")
    assert [format_age(s) for s in (0, 42.9, 185, 7800, 2 * 86400 + 3 * 3600)] == [
        "0s",
        "42s",
        "3m05s",
        "2h10m",
        "2d03h",
    ]


def test_shorten_and_progress_render():
    assert shorten("a\n  b", 10) == "a b"
    assert shorten("x" * 20, 10) == "xxxxxxx..."
    assert ProgressBar(10, sys.stderr, width=12).render(7) == "[########....] 7/10 tasks"
    assert format_table([{"a": 1}], title="T") == "T\na\n-\n1"


def test_control_characters_in_task_data_cannot_garble_the_terminal(
    capsys, dsn, client, start_worker
):
    def hostile(task):
        raise RuntimeError("red \x1b[31malert\r\x07 done")

    start_worker({"hostile": hostile})
    task_id = client.submit_task("hostile", {"note": "\x1b[2J"}, max_retries=0)
    client.wait_for_task(task_id, timeout=DEADLINE)
    for args in (["tasks"], ["tasks", str(task_id)], ["wait", str(task_id)]):
        out = cli(capsys, dsn, *args)[1]
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out, args
        assert "\\x1b[31malert" in out, args
    assert as_json(capsys, dsn, "tasks", str(task_id))["errors"][0]["message"] == (
        "red \x1b[31malert\r\x07 done"
    )


def test_bidirectional_overrides_in_task_data_are_shown_escaped(capsys, dsn, client, start_worker):
    # U+202E and its kin reorder the rest of a line on the screen: an error that
    # reads "report.exe" could show as something else.
    start_worker({"spoof": fails("saved report\u202eexe.txt\u2066")}, name="w\u202dx")
    task_id = client.submit_task("spoof", max_retries=0)
    client.wait_for_task(task_id, timeout=DEADLINE)
    for args in (["tasks"], ["tasks", str(task_id)], ["status"]):
        out = cli(capsys, dsn, *args)[1]
        assert not set(out) & {"\u202e", "\u2066", "\u202d"}, args
    assert "report\\u202eexe.txt" in cli(capsys, dsn, "tasks", str(task_id))[1]


def test_a_newline_or_tab_in_task_data_cannot_break_or_forge_a_table_row(
    capsys, dsn, client, start_worker
):
    forged = "real\n99  forged  succeeded  0  1/1  1s  -  -"
    start_worker({forged: fails("two\tcolumns")}, name="w\tx\nforged-row", capabilities=[forged])
    task_id = client.submit_task(forged, max_retries=0)
    client.wait_for_task(task_id, timeout=DEADLINE)
    tasks = cli(capsys, dsn, "tasks")[1].splitlines()
    assert len(tasks) == 4, tasks  # title, header, rule, the one task
    assert tasks[3].split()[:2] == [str(task_id), "real\\n99"]
    assert "\t" not in "\n".join(tasks) and "w\\tx\\nforged-row" in tasks[3]
    status = cli(capsys, dsn, "status")[1]
    queues, workers = status.split("\n\n")[:2]
    assert len(queues.splitlines()) == 4 and len(workers.splitlines()) == 4, status
    assert "real\\n99  forged" in queues and "w\\tx\\nforged-row" in workers


def _display_width(text: str) -> int:
    """Columns on a terminal: wide and fullwidth characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _column_starts(line: str) -> set[int]:
    """The terminal columns at which a word of ``line`` starts."""
    return {
        _display_width(line[:i])
        for i, c in enumerate(line)
        if c != " " and (i == 0 or line[i - 1] == " ")
    }


def _assert_aligned(table: str) -> None:
    _title, header, rule, *rows = table.splitlines()
    assert set(rule) == {"-", " "}, table
    for line in (header, *rows):
        assert _display_width(line) == _display_width(rule), table
        assert _column_starts(rule) <= _column_starts(line), table


def test_wide_characters_keep_the_columns_of_the_tables_aligned(capsys, dsn, client, start_worker):
    # A CJK character takes two columns on a terminal: measured as one, it
    # pushed the rest of its row right of the columns above it.
    kind = "画像の縮小"
    start_worker({kind: fails("ファイルが見つかりません" * 5)}, name="ワーカーe\u0301")
    task_id = client.submit_task(kind, max_retries=0)
    client.wait_for_task(task_id, timeout=DEADLINE)
    client.add_periodic_task("毎晩", "0 3 * * *", kind, {})
    tasks = cli(capsys, dsn, "tasks")[1]
    _assert_aligned(tasks)
    last_error = tasks.splitlines()[3].rstrip().split("  ")[-1]
    assert last_error.endswith("...") and _display_width(last_error) <= 50, last_error
    queues, workers = cli(capsys, dsn, "status")[1].split("\n\n")[:2]
    for table in (queues, workers, cli(capsys, dsn, "schedules", "list")[1]):
        assert kind in table or "ワーカー" in table, table
        _assert_aligned(table)

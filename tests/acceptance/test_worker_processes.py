"""Worker processes from the CLI: many at once, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from omnispindle._worker._stop_bound import LAST_WORDS
from omnispindle.cli.exit_codes import EXIT_CONFIG

from .workers import ROOT, poll, start_worker_process, worker_env


@pytest.fixture
def ledger(conn):
    conn.execute("CREATE TABLE test_ledger (task_id bigint NOT NULL, pid integer NOT NULL)")
    return conn


def stop_all(processes):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    codes = [process.wait(timeout=60) for process in processes]
    return codes


@pytest.mark.slow
def test_four_processes_run_5000_tasks_exactly_once(client, dsn, ledger):
    workers = [
        start_worker_process(dsn, "--concurrency", "4", "--name", f"proc-{n}") for n in range(4)
    ]
    try:
        ids = client.submit_batch(
            [{"task_type": "record", "parameters": {"n": n}} for n in range(5000)]
        )
        tasks = client.wait_for_batch(ids, timeout=300)
    finally:
        codes = stop_all(workers)
    assert codes == [0, 0, 0, 0]
    assert {t["state"] for t in tasks} == {"succeeded"}
    runs = ledger.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY task_id").fetchall()
    assert len(runs) == 5000, "some task never ran"
    assert {count for _, count in runs} == {1}, "some task ran twice"
    assert sorted(task_id for task_id, _ in runs) == sorted(ids)
    pids = {row[0] for row in ledger.execute("SELECT DISTINCT pid FROM test_ledger")}
    assert len(pids) >= 2, "the work was not shared between processes"
    states = ledger.execute(
        "SELECT state::text, count(*) FROM omnispindle.workers GROUP BY 1"
    ).fetchall()
    assert states == [("stopped", 4)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_lets_the_running_task_finish(client, dsn, conn, tmp_path, signum):
    """SIGHUP (a terminal closed, or ``kill -HUP``) too: it killed the worker mid-task,
    and its row stayed running until the sweeper declared it dead."""
    marker = tmp_path / "go"
    worker = start_worker_process(dsn, "--name", "graceful")
    try:
        task_id = client.submit_task("wait_for_file", {"marker": str(marker)})
        poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
        worker.send_signal(signum)
        marker.touch()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    task = client.get_task(task_id)
    assert (task["state"], task["result"]) == ("succeeded", {"saw": "go"})
    row = conn.execute(
        "SELECT state::text, stopped_at IS NOT NULL FROM omnispindle.workers"
    ).fetchone()
    assert row == ("stopped", True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_hands_the_running_task_back_at_once(client, dsn, conn, tmp_path, signum):
    """As a second Ctrl-C does in Celery: the second signal was not even read until
    the first stop had waited out its shutdown timeout for the running task."""
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "omnispindle", "--log-level", "INFO", "worker"]
    command += ["--dsn", dsn, "--executors", "tests.acceptance.ledger_executors"]
    command += ["--shutdown-timeout", "120"]
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            command, env=worker_env(dsn), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        task_id = client.submit_task("wait_for_file", {"marker": str(tmp_path / "never")})
        poll(lambda: client.get_task(task_id)["state"] == "running", timeout=30)
        worker.send_signal(signum)
        poll(lambda: "; stopping" in log.read_text(), timeout=10)
        worker.send_signal(signum)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert client.get_task(task_id)["state"] == "pending"
    assert "again; stopping now" in log.read_text()
    row = conn.execute("SELECT state::text FROM omnispindle.workers").fetchone()
    assert row == ("stopped",)


def test_a_worker_started_under_nohup_keeps_ignoring_sighup(dsn, tmp_path):
    """``nohup`` starts a process with SIGHUP ignored so that a closed terminal does
    not stop it: the worker leaves it so, and stops on SIGTERM alone."""
    log = tmp_path / "worker.log"
    # As nohup does: SIGHUP ignored, then exec (an ignored signal stays so across it).
    ignoring = "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
    ignoring += "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    command = [sys.executable, "-c", ignoring, "-m", "omnispindle", "--log-level", "INFO"]
    command += ["worker", "--dsn", dsn, "--executors", "tests.acceptance.ledger_executors"]
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            command,
            env=worker_env(dsn),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        poll(lambda: " started (id " in log.read_text(), 30)
        worker.send_signal(signal.SIGHUP)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    assert "received SIGTERM; stopping" in text
    assert "received SIGHUP" not in text


def test_unknown_executors_module_is_one_clear_line(dsn):
    command = [
        sys.executable,
        "-m",
        "omnispindle",
        "worker",
        "--dsn",
        dsn,
        "--executors",
        "tests.acceptance.workers",
    ]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip().splitlines() == [
        (
            "omnispindle: module 'tests.acceptance.workers' defines no executors: declare them "
            "with @omnispindle.task, or define register(worker) or an EXECUTORS dict"
        )
    ]


def test_a_heartbeat_interval_as_long_as_the_lease_is_one_clear_line(dsn):
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", dsn]
    command += ["--executors", "tests.acceptance.ledger_executors"]
    command += ["--lease-timeout", "10", "--heartbeat-interval", "10"]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "omnispindle: heartbeat_interval (10 s) must be shorter than lease_timeout (10 s)"
    )


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("option", ["--listen-dsn", "--read-dsn"])
def test_a_listen_or_read_dsn_libpq_cannot_parse_is_one_clear_line(dsn, conn, option, processes):
    """The worker ran on, its LISTEN thread dead of a traceback: it waited a poll
    interval for every task, and a bad --read-dsn went unnoticed."""
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", dsn, "--name", "bad-dsn"]
    command += ["--executors", "tests.acceptance.ledger_executors", option, "host=x port"]
    command += ["--processes", processes]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    what = option[2:].replace("-", "_")
    reason = 'missing "=" after "..." in connection info string'
    assert done.stderr.strip().splitlines() == [
        f"omnispindle: the {what} cannot be parsed: {reason}"
    ]
    assert conn.execute("SELECT count(*) FROM omnispindle.workers").fetchone() == (0,)


def test_status_json_lists_queues_and_workers(client, dsn):
    import json

    client.submit_task("record")
    command = [sys.executable, "-m", "omnispindle", "status", "--dsn", dsn, "--json"]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["queues"][0]["task_type"] == "record"
    assert status["queues"][0]["pending"] == 1
    assert status["workers"] == []


# `omnispindle worker --processes N`: one supervisor and N worker processes.


def active_pids(conn):
    rows = conn.execute("SELECT pid FROM omnispindle.workers WHERE state = 'active'").fetchall()
    return {pid for (pid,) in rows}


def alive(pid):
    """Whether the process runs: exited ones waiting to be reaped count as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def start_supervisor(dsn, conn, *args):
    """A supervisor of two worker processes, returned once both are registered."""
    supervisor = start_worker_process(dsn, "--processes", "2", "--name", "child", *args)
    poll(lambda: len(active_pids(conn)) == 2, timeout=60)
    return supervisor


def stop_for_good(supervisor, conn):
    """Whatever a failed test left: the supervisor killed, its children stopped by the kernel's
    parent-death signal (a SIGKILL if they linger)."""
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait()
    for pid in active_pids(conn):
        if alive(pid):
            try:
                poll(lambda pid=pid: not alive(pid), timeout=30)
            except AssertionError:
                os.kill(pid, signal.SIGKILL)


def said_so_far(process):
    """What ``process`` (started with stderr piped) and its children wrote to stderr
    so far, without waiting for more: a child may still hold the pipe open."""
    fd = process.stderr.fileno()
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode(errors="replace")


def test_two_processes_run_tasks_in_two_pids_each_once(client, dsn, conn, ledger):
    supervisor = start_supervisor(dsn, conn, "--concurrency", "2")
    try:
        children = active_pids(conn)
        ids = client.submit_batch([{"task_type": "nap"} for _ in range(200)])
        tasks = client.wait_for_batch(ids, timeout=120)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert {t["state"] for t in tasks} == {"succeeded"}
    runs = ledger.execute("SELECT task_id, count(*) FROM test_ledger GROUP BY task_id").fetchall()
    assert sorted(task_id for task_id, _ in runs) == sorted(ids)
    assert {count for _, count in runs} == {1}, "some task ran twice"
    pids = {pid for (pid,) in ledger.execute("SELECT DISTINCT pid FROM test_ledger")}
    assert pids == children and supervisor.pid not in pids


def test_a_killed_child_is_replaced_and_no_task_is_lost(client, dsn, conn, ledger):
    # A short lease, so that the killed child's claims come back soon.
    supervisor = start_supervisor(dsn, conn, "--lease-timeout", "2", "--sweep-interval", "0.5")
    try:
        ids = client.submit_batch([{"task_type": "nap"} for _ in range(400)])
        poll(lambda: ledger.execute("SELECT count(*) FROM test_ledger").fetchone()[0] > 40, 60)
        first = active_pids(conn)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        replacement = poll(lambda: active_pids(conn) - first - {victim}, timeout=60)
        tasks = client.wait_for_batch(ids, timeout=120)
        assert alive(next(iter(replacement)))
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert {t["state"] for t in tasks} == {"succeeded"}
    ran = {task_id for (task_id,) in ledger.execute("SELECT DISTINCT task_id FROM test_ledger")}
    assert ran == set(ids)
    # Only tasks the killed child had started may have run twice.
    twice = ledger.execute(
        "SELECT count(*) FROM (SELECT task_id FROM test_ledger GROUP BY task_id"
        " HAVING count(*) > 1 AND bool_or(pid = %s)) AS again",
        [victim],
    ).fetchone()[0]
    total_twice = ledger.execute(
        "SELECT count(*) FROM (SELECT task_id FROM test_ledger GROUP BY task_id"
        " HAVING count(*) > 1) AS again"
    ).fetchone()[0]
    assert twice == total_twice
    assert "killed by SIGKILL; restarting in 0.5 s" in supervisor.stderr.read()


def client_connections(conn):
    """The connections to the test's database, but the ledger's."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND application_name <> 'test_ledger'"
    ).fetchone()[0]


def listening_connections(conn):
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    ).fetchone()[0]


def test_the_supervisor_listens_once_and_relays_wake_ups_to_its_children(client, dsn, conn, ledger):
    """The fleet's one LISTEN connection is the supervisor's (issue 19): with a poll
    interval of a minute, tasks still start at once, and a cancel reaches its task.
    Each child holds one connection, its pool's."""
    client.get_task(client.submit_task("record"))  # the test's own pool, opened
    before = client_connections(conn)
    supervisor = start_supervisor(dsn, conn, "--concurrency", "1", "--poll-interval", "60")
    try:
        for _ in range(4):
            submitted = time.monotonic()
            task_id = client.submit_task("record")
            poll(
                lambda task_id=task_id: client.get_task(task_id)["state"] == "succeeded", timeout=30
            )
            assert time.monotonic() - submitted < 5, "a task waited for a poll"
        running = client.submit_task("until_cancelled")
        poll(lambda: client.get_task(running)["state"] == "running", timeout=30)
        asked = time.monotonic()
        client.cancel_task(running)
        poll(
            lambda: ledger.execute(
                "SELECT 1 FROM test_ledger WHERE task_id = %s", [running]
            ).fetchone(),
            timeout=30,
        )
        assert time.monotonic() - asked < 5, "the cancel waited for a heartbeat"
        assert listening_connections(conn) == 1
        # Polled: a listener's probe opens a connection for a moment now and then.
        poll(lambda: client_connections(conn) - before == 1 + 2, timeout=30)
    finally:
        stop_for_good(supervisor, conn)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_the_supervisor_stops_every_child_gracefully(
    client, dsn, conn, tmp_path, signum
):
    marker = tmp_path / "go"
    supervisor = start_supervisor(dsn, conn, "--concurrency", "1")
    children = active_pids(conn)
    try:
        ids = [client.submit_task("wait_for_file", {"marker": str(marker)}) for _ in range(2)]
        poll(lambda: {client.get_task(i)["state"] for i in ids} == {"running"}, timeout=30)
        supervisor.send_signal(signum)
        marker.touch()
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert [client.get_task(i)["result"] for i in ids] == [{"saw": "go"}] * 2
    assert not any(alive(pid) for pid in children)
    states = conn.execute("SELECT state::text, count(*) FROM omnispindle.workers GROUP BY 1")
    assert states.fetchall() == [("stopped", 2)]


def start_group_supervisor(dsn, conn, log, *args):
    """A supervisor of two worker processes in a process group of its own, as a shell
    starts a command in a terminal, logging to ``log``; returned once both children
    are registered."""
    command = [sys.executable, "-m", "omnispindle", "--log-level", "INFO", "worker"]
    command += ["--dsn", dsn, "--executors", "tests.acceptance.ledger_executors"]
    command += ["--processes", "2", "--concurrency", "1", *args]
    with log.open("w") as stderr:
        supervisor = subprocess.Popen(
            command,
            env=worker_env(dsn),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    poll(lambda: len(active_pids(conn)) == 2, timeout=60)
    return supervisor


def test_ctrl_c_to_the_supervisor_lets_the_running_tasks_finish(client, dsn, conn, tmp_path):
    """Ctrl-C in a terminal signals the whole process group: each child heard it from
    the terminal and again from the supervisor, a second signal that stops at once."""
    marker = tmp_path / "go"
    supervisor = start_group_supervisor(dsn, conn, tmp_path / "supervisor.log")
    try:
        ids = [client.submit_task("wait_for_file", {"marker": str(marker)}) for _ in range(2)]
        poll(lambda: {client.get_task(i)["state"] for i in ids} == {"running"}, timeout=30)
        os.killpg(supervisor.pid, signal.SIGINT)
        marker.touch()
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert [client.get_task(i)["result"] for i in ids] == [{"saw": "go"}] * 2


def test_a_second_signal_to_the_supervisor_hands_the_running_tasks_back_at_once(
    client, dsn, conn, tmp_path
):
    """The supervisor noted the second signal but passed it on to no child, which
    waited out its shutdown timeout for its task."""
    log = tmp_path / "supervisor.log"
    supervisor = start_group_supervisor(dsn, conn, log, "--shutdown-timeout", "120")
    try:
        marker = str(tmp_path / "never")
        ids = [client.submit_task("wait_for_file", {"marker": marker}) for _ in range(2)]
        poll(lambda: {client.get_task(i)["state"] for i in ids} == {"running"}, timeout=30)
        supervisor.send_signal(signal.SIGINT)
        poll(lambda: "received SIGINT; stopping 2 processes" in log.read_text(), timeout=10)
        supervisor.send_signal(signal.SIGINT)
        try:
            code = supervisor.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, log.read_text()
    finally:
        stop_for_good(supervisor, conn)
    assert [client.get_task(i)["state"] for i in ids] == ["pending"] * 2


# A child that writes the names of the first two stop signals it gets, then exits.
# It inherits them blocked, so that none arriving before it runs kills it, and
# SIGTERM and SIGINT stay pending side by side until it takes them, lowest first.
TWO_SIGNALS_CHILD = """
import signal, sys
stops = {signal.SIGTERM, signal.SIGINT}
heard = [signal.Signals(signal.sigwaitinfo(stops).si_signo).name for _ in range(2)]
open(sys.argv[1], "w").write(" ".join(heard))
"""

# A supervisor of two such children that hears SIGTERM, then SIGINT, before it
# has told its children of either, as when both come while it starts or stops.
SIGNALS_BEFORE_THE_CHILDREN_ARE_TOLD = """
import signal, sys
from omnispindle.cli.supervisor import Supervisor
child, folder = sys.argv[1], sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
supervisor = Supervisor(
    lambda n: [sys.executable, child, f"{folder}/{n}"], processes=2, stop_timeout=5
)
supervisor.heard(signal.SIGTERM)
supervisor.heard(signal.SIGINT)
sys.exit(supervisor.run())
"""


def test_a_second_signal_heard_before_the_children_were_told_of_the_first_is_passed_on(
    tmp_path,
):
    """The supervisor took a second signal that came before it had passed on the
    first for a first one, and passed on one signal only; a child running a task
    then waited out its shutdown timeout."""
    child = tmp_path / "child.py"
    child.write_text(TWO_SIGNALS_CHILD)
    supervisor = subprocess.run(
        [sys.executable, "-c", SIGNALS_BEFORE_THE_CHILDREN_ARE_TOLD, str(child), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert supervisor.returncode == 0, supervisor.stderr
    assert "received SIGINT again; stopping now" in supervisor.stderr
    for n in (1, 2):
        assert sorted((tmp_path / str(n)).read_text().split()) == ["SIGINT", "SIGTERM"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_of_a_killed_supervisor_stop_gracefully(dsn, conn):
    supervisor = start_supervisor(dsn, conn)
    children = active_pids(conn)
    try:
        supervisor.kill()
        supervisor.wait()
        poll(lambda: not any(alive(pid) for pid in children), timeout=60)
    finally:
        stop_for_good(supervisor, conn)
    states = conn.execute("SELECT state::text, count(*) FROM omnispindle.workers GROUP BY 1")
    assert states.fetchall() == [("stopped", 2)], said_so_far(supervisor)


@pytest.mark.parametrize("value", ["0", "129", "-1", "two", "1.5"])
def test_processes_out_of_range_is_a_usage_error(value, capsys):
    from omnispindle.cli.main import main

    executors = "tests.acceptance.ledger_executors"
    code = main(["worker", "--executors", executors, "--processes", value])
    assert code == 2
    assert f"invalid processes '{value}': a whole number from 1 to 128" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    ["--shutdown-timeout", "--sweep-interval", "--poll-interval", "--heartbeat-interval"],
)
def test_seconds_too_many_for_a_wait_are_a_usage_error(option, capsys):
    """--shutdown-timeout 1e300 started a worker whose stop flooded stderr with
    OverflowError tracebacks; --sweep-interval 1e308 one whose sweep failed."""
    from omnispindle.cli.main import parser

    executors = "tests.acceptance.ledger_executors"
    with pytest.raises(SystemExit) as exited:  # parsed only: the old code ran the worker
        parser().parse_args(["worker", "--executors", executors, option, "1e300"])
    assert exited.value.code == 2
    assert "invalid seconds '1e300': a number above 0, at most 1e+09" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", ["./tasks.py", "/srv/app/tasks.py", "", "app/tasks", "tasks:EXECUTORS"]
)
def test_an_executors_path_is_a_usage_error_naming_the_module_form(value, dsn, capsys):
    """A path, or nothing, ended in a traceback of importlib's (TypeError, ValueError),
    or in 'No module named 'tasks.py'; 'tasks' is not a package'."""
    from omnispindle.cli.main import main

    code = main(["worker", "--dsn", dsn, "--executors", value])
    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"omnispindle: argument --executors: invalid module {value!r}: ")
    assert "a module name as `python -m` takes it (tasks, myapp.tasks), not a path" in line


def test_children_that_fail_at_start_are_restarted_ever_more_slowly(empty_dsn, tmp_path):
    """A database not migrated yet (a deploy whose migration runs beside the workers)."""
    log = tmp_path / "supervisor.log"
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", empty_dsn]
    command += ["--executors", "tests.acceptance.ledger_executors", "--processes", "2"]
    with log.open("w") as stderr:
        supervisor = subprocess.Popen(
            command, env=worker_env(empty_dsn), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        poll(lambda: log.read_text().count("exited with code 1; restarting in 1.0 s") == 2, 60)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    lines = log.read_text().splitlines()
    assert sum("exited with code 1; restarting in 0.5 s" in line for line in lines) == 2
    assert sum("has no omnispindle schema" in line for line in lines) >= 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--executors", "no_such_executors"], "cannot import executors module"),
        (
            ["--executors", "tests.acceptance.ledger_executors", "--capabilities", "gpu"],
            "--capabilities gpu leave none of module",
        ),
    ],
)
def test_children_that_cannot_load_their_executors_end_the_supervisor(dsn, options, message):
    """Each restart would fail alike: the supervisor stops, with the worker's exit code."""
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", dsn, "--processes", "2"]
    done = subprocess.run(
        command + options, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_CONFIG
    lines = done.stderr.splitlines()
    assert sum(" started" in line and "worker process" in line for line in lines) <= 2
    assert not any("restarting in" in line for line in lines)
    assert any(line.startswith(f"omnispindle: {message}") for line in lines)
    assert any("cannot load its executors; stopping" in line for line in lines)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["--processes", "2", "--retention", "1h", "--archive-after", "2h"], "archive_after must"),
        (
            ["--min-processes", "1", "--max-processes", "2", "--lease-timeout", "90000"],
            "lease_timeout must be at most 86400 seconds",
        ),
        (["--processes", "2", "--heartbeat-interval", "30"], "heartbeat_interval (30 s) must"),
    ],
)
def test_settings_every_child_would_refuse_end_the_supervisor(dsn, settings, message):
    """As they end one worker process, instead of children that refuse them restarted for ever."""
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", dsn]
    command += ["--executors", "tests.acceptance.ledger_executors", *settings]
    done = subprocess.run(
        command, env=worker_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()  # no child started
    assert line.startswith(f"omnispindle: {message}")


# `omnispindle worker --min-processes N --max-processes M`: as many as the backlog asks.


def test_a_backlog_grows_the_processes_and_its_end_shrinks_them(client, dsn, conn, tmp_path):
    marker = tmp_path / "go"
    ids = [client.submit_task("wait_for_file", {"marker": str(marker)}) for _ in range(12)]
    supervisor = start_worker_process(
        dsn, "--min-processes", "1", "--max-processes", "3", "--scale-down-after", "2"
    )
    seen: set[int] = set()

    def active_count():
        """One read serves both the record of every process seen and the count."""
        pids = active_pids(conn)
        seen.update(pids)
        return len(pids)

    try:
        poll(lambda: active_count() > 1, timeout=60)
        poll(lambda: active_count() == 3, timeout=60)
        assert len(seen) == 3, "more processes than --max-processes, or one replaced"
        marker.touch()
        tasks = client.wait_for_batch(ids, timeout=120)
        poll(lambda: len(active_pids(conn)) == 1, timeout=60)
        assert supervisor.poll() is None
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert not any(alive(pid) for pid in seen)
    states = conn.execute("SELECT state::text, count(*) FROM omnispindle.workers GROUP BY 1")
    assert states.fetchall() == [("stopped", 3)]


def test_a_scale_down_stops_an_idle_process_not_a_busy_one(client, dsn, conn, ledger, tmp_path):
    """The first process runs task a, the second task b; a ends, and one process is
    enough. The idle first one stays (it takes turns at maintenance), and so must the
    busy second one: stopping it would hand b back, to start again on the first."""
    log = tmp_path / "supervisor.log"
    markers = {name: tmp_path / name for name in ("a", "b")}
    a, b = (client.submit_task("hold", {"marker": str(markers[n])}) for n in ("a", "b"))
    command = [sys.executable, "-m", "omnispindle", "worker", "--dsn", dsn]
    command += ["--executors", "tests.acceptance.ledger_executors", "--concurrency", "1"]
    command += ["--min-processes", "1", "--max-processes", "2", "--scale-down-after", "1"]
    command += ["--shutdown-timeout", "1"]
    with log.open("w") as stderr:
        supervisor = subprocess.Popen(
            command, env=worker_env(dsn), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        poll(lambda: len(runs_of(ledger)) == 2, timeout=60)
        busy = runs_of(ledger)[b]
        markers["a"].touch()
        poll(lambda: "scaling from 2 to 1 worker processes" in log.read_text(), timeout=60)
        stopped = came_true(lambda: len(runs_of(ledger)) > 2 or not alive(busy[0]), within=5)
        assert not stopped, "the busy process was stopped, and its task handed back"
        markers["b"].touch()
        tasks = client.wait_for_batch([a, b], timeout=60)
        poll(lambda: active_pids(conn) == {runs_of(ledger)[a][0]}, timeout=60)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        stop_for_good(supervisor, conn)
    assert [t["state"] for t in tasks] == ["succeeded", "succeeded"]
    assert ledger.execute("SELECT count(*) FROM test_ledger").fetchone()[0] == 2, "a task ran twice"


def came_true(condition, within):
    """Whether ``condition`` held at some poll within ``within`` seconds."""
    try:
        poll(condition, timeout=within)
    except AssertionError:
        return False
    return True


def runs_of(ledger):
    """The pids each task ran in, by task id."""
    rows = ledger.execute("SELECT task_id, array_agg(pid) FROM test_ledger GROUP BY task_id")
    return dict(rows.fetchall())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-processes", "2"], "--min-processes and --max-processes go together"),
        (["--min-processes", "3", "--max-processes", "2"], "must not be above --max-processes"),
        (["--processes", "4", "--min-processes", "1", "--max-processes", "3"], "--processes (4)"),
        (["--max-concurrency", "4"], "--max-concurrency was given alone"),
        (["--concurrency", "9", "--min-concurrency", "1", "--max-concurrency", "8"], "from"),
    ],
)
def test_contradictory_scaling_options_are_a_usage_error(args, message, capsys):
    from omnispindle.cli.main import main

    code = main(["worker", "--executors", "tests.acceptance.ledger_executors", *args])
    assert code == 2
    assert message in capsys.readouterr().err


SHUTDOWN = 2.0
LATE = 2.0  # what a stop may take past its bound on a busy machine


def waiting_for_locks(conn) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]


@pytest.mark.parametrize(
    "processes", [("--processes", "2"), ("--min-processes", "1", "--max-processes", "2")]
)
def test_sigterm_stops_a_fleet_a_lock_on_the_tasks_holds_up(dsn, conn, processes):
    """A lock on the tasks held a scaling supervisor's backlog read, so that it kept
    SIGTERM from its children until the lock went, and each child waited for it
    in its step. The supervisor cancels its read and passes the signal on; each
    child stops within its shutdown timeout, its blocked statement cancelled."""
    supervisor = start_worker_process(dsn, *processes, "--shutdown-timeout", str(SHUTDOWN))
    try:
        poll(lambda: active_pids(conn), timeout=60)
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE omnispindle.tasks IN ACCESS EXCLUSIVE MODE")
            # A child's step, and the scaling supervisor's read or the other child's step.
            poll(lambda: waiting_for_locks(conn) >= 2, timeout=60)
            started = time.monotonic()
            supervisor.send_signal(signal.SIGTERM)
            try:
                code = supervisor.wait(timeout=SHUTDOWN + LAST_WORDS + 10)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - started
            locker.rollback()
    finally:
        stop_for_good(supervisor, conn)
    assert code == 0, f"exit code {code} after {took:.1f} s"
    assert took < SHUTDOWN + LAST_WORDS + LATE, took

"""The README's Quick Start, run as a new user would, and the embedded server's set-up.

``python_block`` and ``run_script`` also serve the tests that run a page's
example (tests/docs runs every code block of README.md and docs/).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omnispindle import TaskQueue
from omnispindle.errors import ConfigurationError, EmbeddedServerUnavailable

from ..docs.pages import python_block

__all__ = ["python_block", "run_script"]


def run_script(code: str, cwd, env_dsn: str | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` as a script in ``cwd``, on ``env_dsn`` or, without it, the embedded server."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMNISPINDLE_DSN", "OMNISPINDLE_DATA_DIR")
    }
    if env_dsn:
        env["OMNISPINDLE_DSN"] = env_dsn
    script = cwd / "script.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.smoke
def test_quick_start_runs_verbatim_with_no_configuration(tmp_path):
    done = run_script(python_block("## Quick Start"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Result: 15\n"
    assert (tmp_path / ".omnispindle" / "pgdata" / "PG_VERSION").exists()


def test_state_persists_across_restarts(tmp_path):
    path = tmp_path / "state"
    first = TaskQueue(persistence_path=path)
    from omnispindle import TaskQueueClient

    task_id = TaskQueueClient(local_queue=first).submit_task("later", {"keep": True})
    first.shutdown()
    second = TaskQueue(persistence_path=path)
    try:
        assert second.load_state() == {"pending": 1}
        assert TaskQueueClient(local_queue=second).get_task(task_id)["parameters"] == {"keep": True}
    finally:
        second.shutdown()


def test_missing_pgserver_names_both_fixes(monkeypatch):
    monkeypatch.delenv("OMNISPINDLE_DSN", raising=False)
    monkeypatch.setitem(sys.modules, "pgserver", None)
    with pytest.raises(EmbeddedServerUnavailable) as raised:
        TaskQueue()
    assert "pip install 'omnispindle[embedded]'" in str(raised.value)
    assert "OMNISPINDLE_DSN" in str(raised.value)


def test_persistence_path_with_a_dsn_is_refused(dsn):
    with pytest.raises(ConfigurationError, match="persistence_path"):
        TaskQueue(dsn=dsn, persistence_path="state")


def test_two_queues_of_one_process_share_the_embedded_server_until_both_shut_down(tmp_path):
    path = tmp_path / "state"
    first = TaskQueue(persistence_path=path)
    second = TaskQueue(persistence_path=path, pool_timeout=1)
    try:
        first.shutdown()
        from omnispindle import TaskQueueClient

        task_id = TaskQueueClient(local_queue=second).submit_task("later", {})
        assert TaskQueueClient(local_queue=second).get_task(task_id)["state"] == "pending"
    finally:
        first.shutdown()
        second.shutdown()
    assert not (path / "postmaster.pid").exists()  # the last one stopped it


def test_an_embedded_database_in_a_directory_with_spaces_and_quotes_starts(tmp_path):
    path = tmp_path / "My Project's (copy)" / "state"
    from omnispindle import TaskQueueClient

    with TaskQueue(persistence_path=path) as queue:
        task_id = TaskQueueClient(local_queue=queue).submit_task("later", {})
        assert TaskQueueClient(local_queue=queue).get_task(task_id)["state"] == "pending"
    assert (path / "PG_VERSION").exists()
    assert not (path / "postmaster.pid").exists()


def _stop_server_left_in(path) -> None:
    """Stop a server a test left running on ``path``, should it have."""
    import signal
    import time

    pid_file = path / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGINT)  # fast shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_server_a_killed_app_left_running_stops_with_the_next_app(tmp_path):
    import signal
    import time

    path = tmp_path / "state"
    ready = tmp_path / "ready"
    code = (
        "import sys, pathlib\n"
        "from omnispindle import TaskQueue\n"
        f"queue = TaskQueue(persistence_path={str(path)!r})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "sys.stdin.read()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMNISPINDLE_DSN"}
    app = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and app.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the first app did not start its queue"
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=30)
        assert (path / "postmaster.pid").exists()  # its server outlives it

        TaskQueue(persistence_path=path).shutdown()
        assert not (path / "postmaster.pid").exists()
    finally:
        app.kill()
        app.wait(timeout=30)
        _stop_server_left_in(path)


def test_a_stale_postmaster_pid_naming_another_process_is_set_aside(tmp_path):
    # After a crash or a reboot, postmaster.pid (and the socket's lock file) may
    # name a process id that some other program has now.
    path = tmp_path / "state"
    queue = TaskQueue(persistence_path=path)
    postmaster = (path / "postmaster.pid").read_text()
    socket_lock = next(path.glob(".s.PGSQL.*.lock"))
    socket_lock_text = socket_lock.read_text()
    queue.shutdown()
    assert not (path / "postmaster.pid").exists()

    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        old_pid = postmaster.split("\n", 1)[0]
        (path / "postmaster.pid").write_text(postmaster.replace(old_pid, str(other.pid), 1))
        socket_lock.write_text(socket_lock_text.replace(old_pid, str(other.pid), 1))
        from omnispindle import TaskQueueClient

        with TaskQueue(persistence_path=path, pool_timeout=1) as queue:
            task_id = TaskQueueClient(local_queue=queue).submit_task("later", {})
            assert TaskQueueClient(local_queue=queue).get_task(task_id)["state"] == "pending"
        assert other.poll() is None, "the other program was stopped"
    finally:
        other.kill()
        other.wait(timeout=30)
        _stop_server_left_in(path)

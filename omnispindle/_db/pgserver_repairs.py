"""Repairs of what pgserver leaves or cannot take: a stale state after a process
or a machine died, and a path the shell splits. Each leans on pgserver's
internals, and stands aside on a pgserver without them."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any


def keep_socket_paths_whole(pgserver_module: Any) -> None:
    """Have pgserver put the server's socket in a directory whose path the shell
    keeps whole.

    pg_ctl starts the server through ``/bin/sh`` with pgserver's ``-k DIR``
    unquoted, so a data directory whose path holds a space, a quote or a
    parenthesis (``~/My Project``) made the server refuse to start. Such a data
    directory gets its socket in pgserver's runtime directory, as one whose
    path is too long for a socket does. Done once per process, and only on the
    pgserver this was written for: another may choose its sockets otherwise.
    """
    server_module: Any = getattr(pgserver_module, "postgres_server", None)
    choose = getattr(server_module, "find_suitable_socket_dir", None)
    if choose is None or getattr(choose, "keeps_paths_whole", False):
        return

    def find_socket_dir(pgdata: Path, runtime_path: Path) -> Path:
        chosen: Path = choose(pgdata, runtime_path)
        if shlex.quote(str(chosen)) == str(chosen):
            return chosen
        # pgserver's own name for the runtime directory of this data directory.
        identity = f"{pgdata}-{pgdata.stat().st_ino}".encode()
        socket_dir = Path(runtime_path) / hashlib.sha256(identity).hexdigest()[:10]
        socket_dir.mkdir(parents=True, exist_ok=True)
        return socket_dir

    find_socket_dir.keeps_paths_whole = True  # type: ignore[attr-defined]
    server_module.find_suitable_socket_dir = find_socket_dir


def clear_what_killed_processes_left(pgserver_module: Any, data_dir: Path) -> None:
    """Before pgserver starts or attaches to the server of ``data_dir``, under its
    lock: what a process killed, or a machine that crashed, left there. Only on
    the pgserver this was written for, whose lock it takes."""
    server_class = getattr(
        getattr(pgserver_module, "postgres_server", None), "PostgresServer", None
    )
    lock = getattr(server_class, "_lock", None)
    if lock is None:
        return
    with lock:
        _set_aside_stale_lock_files(data_dir)
        _forget_processes_gone(data_dir)


def _forget_processes_gone(data_dir: Path) -> None:
    """Take the processes that are gone off pgserver's list of those using the
    server of ``data_dir``.

    pgserver stops the server when the last process on that list lets go of it.
    A process killed (SIGKILL, or SIGTERM, which runs no atexit) stayed on it
    for good, so that the server, which outlives it, was never stopped again.
    Call with pgserver's lock held.
    """
    import psutil

    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return  # none yet (or not pgserver's): pgserver makes its own
    if not isinstance(pids, list) or not all(isinstance(pid, int) for pid in pids):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _set_aside_stale_lock_files(data_dir: Path) -> None:
    """Remove ``postmaster.pid``, and the socket's lock file, when the process they
    name is no Postgres: after a crash or a reboot that process id may belong to
    another program.

    pgserver took such a process for the server: it gave a DSN on which nothing
    listened (DatabaseUnavailableError at every start), then stopped, or killed,
    that other program when the queue shut down. Call with pgserver's lock held.
    """
    import psutil

    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
        if psutil.Process(pid).name() == "postgres":
            return  # the server, or one we cannot tell from it: left alone
    except (OSError, ValueError, IndexError, psutil.Error):
        return  # none, not one Postgres wrote, or its process is gone (pgserver copes)
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        try:
            if socket_lock.read_text().splitlines()[0].strip() == str(pid):
                socket_lock.unlink()
        except (OSError, IndexError):
            pass
    pid_file.unlink(missing_ok=True)

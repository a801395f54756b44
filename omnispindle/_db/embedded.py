"""The embedded default: a private Postgres started from the pgserver wheel."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol

from omnispindle.errors import EmbeddedServerUnavailable

DATA_DIR_VARIABLE = "OMNISPINDLE_DATA_DIR"
DSN_VARIABLE = "OMNISPINDLE_DSN"


class Server(Protocol):
    """What Omnispindle uses of a pgserver handle."""

    def get_uri(self) -> str:
        """The server's DSN."""

    def cleanup(self) -> None:
        """Stop the server, unless another process still uses it."""


def default_data_dir() -> Path:
    """Where the embedded database lives when no path is given.

    ``$OMNISPINDLE_DATA_DIR``, else ``.omnispindle/pgdata`` in the working
    directory, like a SQLite file next to the app.
    """
    configured = os.environ.get(DATA_DIR_VARIABLE)
    return Path(configured) if configured else Path(".omnispindle") / "pgdata"


def _socket_dirs_the_shell_keeps_whole(pgserver_module: Any) -> None:
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


def _clear_what_killed_processes_left(pgserver_module: Any, data_dir: Path) -> None:
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


class _Shared:
    """The pgserver handle of one data directory, and how many handles of this
    process use it: pgserver keeps one per directory and process, and stops the
    server at its first ``cleanup()`` when no other process uses it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.users = 0


_shared: dict[Path, _Shared] = {}
_shared_lock = threading.Lock()


class SharedServer:
    """A handle on the embedded server of a data directory; the server stops at the
    ``cleanup()`` of the last handle of the last process that uses it."""

    def __init__(self, path: Path, shared: _Shared) -> None:
        self._path = path
        self._shared: _Shared | None = shared
        self._uri = shared.server.get_uri()

    def get_uri(self) -> str:
        """The server's DSN."""
        return self._uri

    def cleanup(self) -> None:
        """Let go of the server; the last handle of this process stops it, unless
        another process still uses it. Later calls do nothing."""
        with _shared_lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.users -= 1
            if shared.users == 0:
                del _shared[self._path]
                shared.server.cleanup()


def start_server(data_dir: str | os.PathLike[str] | None = None) -> Server:
    """Start (or attach to) the embedded server whose data is in ``data_dir``.

    Returns a handle whose ``get_uri()`` is the DSN. Several queues, of one
    process or of several, using one data directory share one server, which
    runs until the last of them lets go of it.

    Raises:
        EmbeddedServerUnavailable: pgserver is not installed.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns, harmlessly, where XDG_RUNTIME_DIR is unset.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pgserver
    except ImportError:
        raise EmbeddedServerUnavailable(
            "No database given and the embedded Postgres is not installed. Either "
            "install it with `pip install 'omnispindle[embedded]'`, or point Omnispindle "
            f"at a Postgres server: TaskQueue(dsn='postgresql://...') or {DSN_VARIABLE}."
        ) from None
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _shared_lock:
        _socket_dirs_the_shell_keeps_whole(pgserver)
        shared = _shared.get(path)
        if shared is None:
            _clear_what_killed_processes_left(pgserver, path)
            shared = _Shared(pgserver.get_server(path, cleanup_mode="stop"))
            _shared[path] = shared
        shared.users += 1
        return SharedServer(path, shared)

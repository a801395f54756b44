"""The embedded default: a private Postgres started from the pgserver wheel."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Protocol

from omnispindle._db import pgserver_repairs
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
        pgserver_repairs.keep_socket_paths_whole(pgserver)
        shared = _shared.get(path)
        if shared is None:
            pgserver_repairs.clear_what_killed_processes_left(pgserver, path)
            shared = _Shared(pgserver.get_server(path, cleanup_mode="stop"))
            _shared[path] = shared
        shared.users += 1
        return SharedServer(path, shared)

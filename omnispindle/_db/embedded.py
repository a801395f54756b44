"""The embedded default: a private Postgres started from the pgserver wheel."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Protocol

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


def start_server(data_dir: str | os.PathLike[str] | None = None) -> Server:
    """Start (or attach to) the embedded server whose data is in ``data_dir``.

    Returns the pgserver handle; its ``get_uri()`` is the DSN. Several
    processes using one data directory share one server.

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
    server: Server = pgserver.get_server(path, cleanup_mode="stop")
    return server

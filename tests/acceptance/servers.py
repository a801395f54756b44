"""An embedded Postgres of a test's own, which the test may stop, restart or freeze."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict


@contextmanager
def own_server(*, migrated: bool = False) -> Iterator[OwnServer]:
    """A server of the caller's own; ``migrated``: with the schema installed."""
    import pgserver

    # Not under pytest's private tmp_path: the server runs as another user.
    data_dir = tempfile.mkdtemp(prefix="omnispindle-restart-")
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        own = OwnServer(server)
        if migrated:
            from omnispindle import TaskQueue

            TaskQueue(dsn=own.dsn, migrate=True).shutdown()
        yield own
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


class OwnServer:
    """pg_ctl on a pgserver instance."""

    def __init__(self, server) -> None:
        self.server = server
        self.dsn: str = server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user)

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "restart")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        socket_dir = conninfo_to_dict(self.dsn)["host"]
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.server.log), "start"
        )

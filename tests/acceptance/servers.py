"""An embedded Postgres of a test's own, which the test may stop, restart or freeze,
and a streaming replica of one."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


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


@contextmanager
def replica_of(primary: OwnServer) -> Iterator[Replica]:
    """A streaming replica of ``primary``: a ``pg_basebackup`` of it, started on a
    socket of its own and following it from there on."""
    from pgserver._commands import pg_basebackup

    home = tempfile.mkdtemp(prefix="omnispindle-replica-")
    os.chmod(home, 0o777)  # its server may run as pgserver's own user
    replica = Replica(home, primary.server.system_user)
    source = conninfo_to_dict(primary.dsn)
    try:
        pg_basebackup(
            ["-D", replica.pgdata, "-R", "-X", "stream", "-c", "fast", "-h", source["host"]]
            + ["-U", "postgres"],
            user=replica.user,
        )
        replica.start()
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(home, ignore_errors=True)


class Replica:
    """A hot standby in ``home``: its data, socket and log."""

    def __init__(self, home: str, user: str) -> None:
        self.pgdata = os.path.join(home, "pgdata")
        self.socket_dir = os.path.join(home, "socket")
        self.log = os.path.join(home, "log")
        self.user = user
        os.mkdir(self.socket_dir)
        os.chmod(self.socket_dir, 0o777)
        self.dsn = make_conninfo(host=self.socket_dir, user="postgres", dbname="postgres")

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.user)

    def start(self) -> None:
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", self.log, "start")

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.pgdata, "postmaster.pid")):
            self._pg_ctl("-w", "-m", "immediate", "stop")

    def pause_replay(self) -> None:
        """Stop applying the primary's changes: the replica's view stands still."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() != ("paused",):
                assert time.monotonic() < deadline, "the replica did not pause its replay"
                conn.execute("SELECT pg_sleep(0.01)")

    def catch_up_with(self, primary: OwnServer) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        with psycopg.connect(primary.dsn, autocommit=True) as conn:
            (written,) = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone() or ("",)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            replayed = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
            while conn.execute(replayed, (written,)).fetchone() != (True,):
                assert time.monotonic() < deadline, "the replica did not catch up"
                conn.execute("SELECT pg_sleep(0.01)")

    def resume_replay(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

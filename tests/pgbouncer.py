"""A PgBouncer in transaction mode in front of the test server, started by the test."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .acceptance.workers import poll


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def pgbouncer(server_dsn: str, pool_mode: str = "transaction") -> Iterator[str]:
    """Start PgBouncer in front of the server of ``server_dsn``; yield a DSN template
    (``make_conninfo(it, dbname=...)``) that goes through it. Started as root, it
    runs as ``nobody``, or as the owner of the server's socket directory."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.skip("PgBouncer is not installed (Debian: apt-get install pgbouncer)")
    server = conninfo_to_dict(server_dsn)
    target = " ".join(f"{key}={server[key]}" for key in ("host", "port", "user") if server.get(key))
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="omnispindle-pgbouncer-"))
    folder.chmod(0o777)  # PgBouncer drops root for another user
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = {pool_mode}
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = {folder}/pgbouncer.log
"""
    )
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", _user_that_reaches(server.get("host") or "")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dsn = make_conninfo(host="127.0.0.1", port=str(port), user=server.get("user") or "postgres")
    try:
        poll(lambda: _answers(make_conninfo(dsn, dbname="postgres")), timeout=30)
        yield dsn
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _user_that_reaches(host: str) -> str:
    """A server on a Unix socket may admit only its own user to the socket's folder."""
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "nobody"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False

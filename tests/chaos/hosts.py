"""Hosts of a test's own: network namespaces joined by veth pairs, one for the
database server and one per worker host, each host on a subnet of its own with
the server. Only the namespaces this module creates get addresses; the link of
one host can be cut and restored while its processes run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..acceptance.servers import OwnServer

# 10.213.N.0/24: the server is .1 and host N is .2 on host N's link.
SUBNET = "10.213"


class HostsUnavailable(Exception):
    """Namespaces cannot be made here (not root, or no ``ip``)."""


@dataclass
class Host:
    """A worker host: its namespace, its end of its link, and the server's address on it."""

    namespace: str
    link: str  # the server's end of this host's link, in the server's namespace
    server_address: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    """The server's namespace and the hosts'."""

    server_namespace: str
    hosts: list[Host] = field(default_factory=list)

    def cut(self, host: Host) -> None:
        """Drops the host's link: its packets go nowhere, its connections stay open."""
        _ip("-n", self.server_namespace, "link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("-n", self.server_namespace, "link", "set", host.link, "up")

    def serve(self, server: OwnServer) -> None:
        """Restarts ``server`` inside the server's namespace, listening on every
        host's link as well as on its socket, and trusting the hosts' subnets."""
        pgdata = Path(server.server.pgdata)
        with (pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0.0/16 trust\n")
        server.stop()
        socket_dir = conninfo_to_dict(server.dsn)["host"]
        addresses = ",".join(host.server_address for host in self.hosts)
        pg_ctl = str(_pg_bin("pg_ctl"))
        as_owner = ["runuser", "-u", server.server.system_user, "--"]
        subprocess.run(
            ["ip", "netns", "exec", self.server_namespace, *as_owner, pg_ctl, "-D", str(pgdata),
             "-w", "-l", str(server.server.log), "-o", f"-h {addresses} -k {socket_dir}", "start"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def dsn(self, server: OwnServer, host: Host) -> str:
        """``server``'s DSN as ``host`` reaches it, over its link."""
        port = conninfo_to_dict(server.dsn).get("port") or "5432"
        return make_conninfo(server.dsn, host=host.server_address, port=port)


@contextmanager
def network(host_count: int) -> Iterator[Network]:
    """A server namespace and ``host_count`` host namespaces, removed on exit."""
    _check_possible()
    tag = uuid.uuid4().hex[:4]
    net = Network(server_namespace=f"osp{tag}db")
    made = [net.server_namespace]
    try:
        _ip("netns", "add", net.server_namespace)
        _ip("-n", net.server_namespace, "link", "set", "lo", "up")
        for n in range(1, host_count + 1):
            host = Host(f"osp{tag}h{n}", f"osp{tag}d{n}", f"{SUBNET}.{n}.1")
            made.append(host.namespace)
            _ip("netns", "add", host.namespace)
            _link(net.server_namespace, host, n, tag)
            net.hosts.append(host)
        yield net
    finally:
        for namespace in made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _link(server_namespace: str, host: Host, n: int, tag: str) -> None:
    """A veth pair from the server's namespace to ``host``'s, addressed and up."""
    inner = f"osp{tag}w{n}"
    _ip("-n", server_namespace, "link", "add", host.link, "type", "veth", "peer", "name", inner,
        "netns", host.namespace)  # fmt: skip
    _ip("-n", server_namespace, "addr", "add", f"{host.server_address}/24", "dev", host.link)
    _ip("-n", host.namespace, "addr", "add", f"{SUBNET}.{n}.2/24", "dev", inner)
    for namespace, device in ((server_namespace, host.link), (host.namespace, inner)):
        _ip("-n", namespace, "link", "set", device, "up")
    _ip("-n", host.namespace, "link", "set", "lo", "up")


def _check_possible() -> None:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("runuser"):
        raise HostsUnavailable("network namespaces need root, ip and runuser")
    probe = f"osp{uuid.uuid4().hex[:4]}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        raise HostsUnavailable(f"ip netns add failed: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _pg_bin(name: str) -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name

"""Which names answer this machine only, for servers that listen without credentials.

A page of any site can reach a server on 127.0.0.1: a DNS rebinding points the
site's name at 127.0.0.1, and the browser then takes the server for that site
and lets the page read its answers. Such requests carry the site's name as
their Host, which these checks tell from this machine's own names.
"""

from __future__ import annotations

import ipaddress


def host_name(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8187`` gives ``[::1]``."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` only answers this machine (a name other than localhost may not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def names_this_machine(host: str | None) -> bool:
    """Whether a request's Host header (None when it has none) names this machine."""
    return host is None or is_loopback(host_name(host))

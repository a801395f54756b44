"""Serving the dashboard on its own, as ``omnispindle dashboard`` does."""

from __future__ import annotations

from omnispindle._core.hosts import is_loopback
from omnispindle.dashboard.application import app
from omnispindle.dashboard.security import Auth, ThisMachineOnly
from omnispindle.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8187


def check_bind(host: str, auth: Auth | None) -> None:
    """Refuse to serve beyond this machine without credentials.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and ``auth`` is None.
    """
    if auth is None and not is_loopback(host):
        raise ConfigurationError(
            f"the dashboard would listen on {host}, beyond this machine, with no credentials "
            "asked: give --token or --basic-auth, or listen on 127.0.0.1"
        )


def serve(
    dsn: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    read_only: bool = False,
    show_payloads: bool = False,
    auth: Auth | None = None,
    schema: str | None = None,
    write_dsn: str | None = None,
    read_dsn: str | None = None,
    pooler: bool = False,
) -> None:
    """Serve the dashboard with uvicorn until interrupted; checks the address first.
    Without ``auth``, it answers only requests that name this machine as their host.

    Raises:
        ConfigurationError: a non-loopback ``host`` without ``auth``.
    """
    import uvicorn

    check_bind(host, auth)
    dashboard = app(
        dsn,
        read_only=read_only,
        show_payloads=show_payloads,
        auth=auth,
        schema=schema,
        write_dsn=write_dsn,
        read_dsn=read_dsn,
        pooler=pooler,
    )
    served = dashboard if auth is not None else ThisMachineOnly(dashboard)
    uvicorn.run(served, host=host, port=port, log_level="warning")

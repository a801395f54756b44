"""The HTTP endpoint that serves one WSGI app at ``/metrics`` and nothing else.

The socket is bound when the endpoint is made, so that a busy port fails
before anything else starts, but it listens only once ``start()`` is called:
until the metrics can be read, a scrape is refused instead of answered with
an empty page. A token, when given, is required as a Bearer token or as the
password of HTTP basic auth (any user name), the two ways Prometheus sends one.
Without one, an endpoint on a loopback address answers only requests that name
this machine as their Host: a page of another site could otherwise read it
through a DNS rebinding.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from omnispindle._core.hosts import is_loopback, names_this_machine

PATH = "/metrics"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds would fill it."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Endpoint:
    """A bound HTTP server for ``app``; serving starts with :meth:`start`.

    Args:
        port: the port (0 for any free one).
        addr: the address to bind.
        app: the WSGI app behind ``/metrics``.
        token: when set, the credential every request must carry.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, port: int, addr: str, app: WsgiApp, token: str | None = None) -> None:
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._server: _Server = server_class((addr, port), _QuietHandler, bind_and_activate=False)
        try:
            self._server.server_bind()
        except OSError:
            self._server.server_close()
            raise
        local = token is None and is_loopback(addr)
        self._server.set_app(guarded(app, token, this_machine_only=local))
        self._thread: threading.Thread | None = None

    @property
    def server_port(self) -> int:
        """The port bound (useful after asking for port 0)."""
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        """Listen, and answer requests from a daemon thread."""
        self._server.server_activate()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="omnispindle-metrics", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop answering (a no-op if it never started)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None

    def server_close(self) -> None:
        """Release the socket."""
        self._server.server_close()


def guarded(app: WsgiApp, token: str | None, *, this_machine_only: bool = False) -> WsgiApp:
    """``app`` at ``/metrics`` only, and only for requests that carry ``token``; with
    ``this_machine_only``, only for those whose Host names this machine."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if this_machine_only and not names_this_machine(environ.get("HTTP_HOST")):
            return _answer(
                start_response,
                "400 Bad Request",
                "this endpoint answers only to this machine's names\n",
            )
        if environ.get("PATH_INFO") != PATH:
            return _answer(start_response, "404 Not Found", f"only {PATH} is served here\n")
        if token is not None and not authorized(environ.get("HTTP_AUTHORIZATION", ""), token):
            return _answer(
                start_response,
                "401 Unauthorized",
                "a token is required\n",
                [("WWW-Authenticate", 'Basic realm="omnispindle"')],
            )
        return app(environ, start_response)

    return serve


def authorized(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (compared in constant time)."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        given = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def _answer(
    start_response: Callable[..., Any],
    status: str,
    text: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        + (headers or []),
    )
    return [body]

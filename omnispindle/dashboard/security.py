"""Who may use the dashboard: a bearer token or HTTP basic credentials.

With a token, a browser may open ``...?token=T`` once: the token moves into a
cookie (HttpOnly, SameSite=Strict, Secure by HTTPS) and the address is reloaded
without it, so that it stays out of the history and of links.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from omnispindle._core.hosts import names_this_machine
from omnispindle.errors import ConfigurationError

TOKEN_COOKIE = "omnispindle_dashboard_token"


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Requests carry ``Authorization: Bearer <token>``, or the cookie ``?token=`` set.

    Raises:
        ConfigurationError: an empty token.
    """

    token: str

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigurationError("the dashboard's token may not be empty")


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """Requests carry HTTP basic credentials (browsers ask for them).

    Raises:
        ConfigurationError: an empty user name or password.
    """

    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise ConfigurationError("basic auth needs a user name and a password")

    @classmethod
    def parse(cls, text: str) -> BasicAuth:
        """``user:password`` (the password may hold colons).

        Raises:
            ConfigurationError: no colon, or an empty part.
        """
        username, colon, password = text.partition(":")
        if not colon:
            raise ConfigurationError("basic auth credentials are given as user:password")
        return cls(username, password)


Auth = TokenAuth | BasicAuth


def _same(given: str, expected: str) -> bool:
    """A comparison whose time does not tell how much of a secret was guessed."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _bearer(connection: HTTPConnection) -> str | None:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _basic(connection: HTTPConnection) -> tuple[str, str] | None:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, _, password = decoded.partition(":")
    return username, password


def allowed(auth: Auth, connection: HTTPConnection) -> bool:
    """Whether the request proves it may use the dashboard."""
    if isinstance(auth, BasicAuth):
        given = _basic(connection)
        # Both compared, always: the time does not tell which one was wrong.
        return given is not None and (
            _same(given[0], auth.username) & _same(given[1], auth.password)
        )
    token = _bearer(connection) or connection.cookies.get(TOKEN_COOKIE)
    return token is not None and _same(token, auth.token)


def refusal(auth: Auth) -> Response:
    """401, with the challenge that makes a browser ask for basic credentials."""
    if isinstance(auth, BasicAuth):
        challenge = 'Basic realm="omnispindle dashboard", charset="UTF-8"'
        return PlainTextResponse("credentials needed", 401, {"WWW-Authenticate": challenge})
    return PlainTextResponse(
        "a token is needed: Authorization: Bearer <token>, or open the page with ?token=<token>",
        401,
        {"WWW-Authenticate": "Bearer"},
    )


def token_login(auth: TokenAuth, connection: HTTPConnection) -> Response | None:
    """For ``?token=`` with the right token: a redirect to the same page without it,
    setting the cookie; None when the request does not try it."""
    given = connection.query_params.get("token")
    if given is None or not _same(given, auth.token):
        return None
    kept = urlencode([(k, v) for k, v in connection.query_params.multi_items() if k != "token"])
    target = connection.url.path + (f"?{kept}" if kept else "")
    response = RedirectResponse(target, 303)
    response.set_cookie(TOKEN_COOKIE, auth.token, **cookie_settings(connection))
    return response


def cookie_settings(connection: HTTPConnection) -> dict[str, Any]:
    """How the dashboard sets its cookies: for its pages, out of scripts' and other
    sites' reach, and Secure when the request came by HTTPS (behind a proxy, as
    uvicorn reads X-Forwarded-Proto): a browser sends a cookie without it to the
    same host by plain HTTP too, where anyone on the way reads it."""
    return {
        "path": connection.scope.get("root_path") or "/",
        "httponly": True,
        "samesite": "strict",
        "secure": connection.url.scheme == "https",
    }


class AuthMiddleware:
    """Refuses every request (pages, fragments, static files, actions) that is not allowed."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if allowed(self.auth, connection):
            await self.app(scope, receive, send)
            return
        login = token_login(self.auth, connection) if isinstance(self.auth, TokenAuth) else None
        await (login or refusal(self.auth))(scope, receive, send)


class ThisMachineOnly:
    """Answers 400 to a request whose Host header names another machine.

    A dashboard without credentials listens on a loopback address, but a page
    of any site can reach it: a DNS rebinding points the site's name at
    127.0.0.1, and the browser then takes the dashboard for that site, lets the
    page read it and post its forms. Such requests carry the site's name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = HTTPConnection(scope).headers.get("host") if scope["type"] == "http" else None
        if names_this_machine(host):
            await self.app(scope, receive, send)
            return
        await PlainTextResponse("this dashboard answers only to this machine's names", 400)(
            scope, receive, send
        )

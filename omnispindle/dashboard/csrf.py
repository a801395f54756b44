"""Cross-site request forgery: every action form carries the token of a cookie.

A double-submit cookie: the page's forms hold the value of the cookie
``omnispindle_dashboard_csrf``, and a POST is accepted only when the form's
value and the cookie's are the same. Another site can make a browser send the
cookie, but cannot read it to put it in the form.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from omnispindle.dashboard.security import cookie_settings

CSRF_COOKIE = "omnispindle_dashboard_csrf"
CSRF_FIELD = "csrf_token"


def token_of(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a new one for :func:`remember` to set."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if token is None:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def remember(request: Request, response: Response) -> None:
    """Set the cookie of a token made for this request, if one was."""
    token = getattr(request.state, "new_csrf", None)
    if token is not None:
        response.set_cookie(CSRF_COOKIE, token, **cookie_settings(request))


def valid(request: Request, submitted: object) -> bool:
    """Whether a submitted form value matches the request's cookie."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(submitted, str):
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())

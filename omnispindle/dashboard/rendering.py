"""Pages from the package's Jinja2 templates, with links that stay below the mount point."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Router

from omnispindle._core import bidi
from omnispindle._core.cutting import newest_within
from omnispindle.dashboard import csrf
from omnispindle.dashboard.settings import REFRESH_SECONDS, Settings

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOTICE_COOKIE = "omnispindle_dashboard_notice"


def path_for(request: Request, name: str, **params: Any) -> str:
    """The path of a route of this dashboard, below wherever it is mounted.

    ``request.url_for`` asks the outermost router, which does not know the
    dashboard's route names when it is mounted; the dashboard's own router
    does, and the mount's prefix is the request's ``root_path``.
    """
    router: Router = request.scope["app"].router
    return str(request.scope.get("root_path", "")) + str(router.url_path_for(name, **params))


def is_live_refresh(request: Request) -> bool:
    """Whether htmx asks for the part of a page that refreshes itself."""
    return request.headers.get("hx-request") == "true"


def age(seconds: float | None) -> str:
    """``42s``, ``5m 3s``, ``2h 10m`` or ``3d 4h``; a dash for None."""
    if seconds is None:
        return "–"
    whole = int(seconds)
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // smaller_size}{smaller}"
    return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"


def moment(value: datetime | None) -> str:
    """A time in UTC to the second; a dash for None."""
    if value is None:
        return "–"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Verbatim(str):
    """Text a page gives back as it is, such as a filter's value in its form field:
    shown escaped, it would be sent back escaped and match nothing."""


def shown(value: Any) -> Any:
    """Each value a template prints: text with the characters that reorder it from
    right to left shown as ``\\u202e``, as the command line shows them, so that
    task data reads as stored and leaves the rest of its cell alone."""
    if isinstance(value, str) and not isinstance(value, (Markup, Verbatim)):
        return bidi.escaped(value)
    return value


# Characters of one value a page shows: a result may be 16 MiB, and a task's
# page carries it again at every live refresh.
MOST_SHOWN_CHARS = 100_000


def pretty_json(value: Any) -> str:
    """A JSON value indented for reading, cut after ``MOST_SHOWN_CHARS``."""
    return cut(json.dumps(value, indent=2, sort_keys=True, default=str))


def compact_json(value: Any) -> str:
    """A JSON value on one line, cut after ``MOST_SHOWN_CHARS``."""
    return cut(json.dumps(value, ensure_ascii=False, default=str))


def cut(text: str) -> str:
    """The text, or its start and a line saying how much was left out."""
    if len(text) <= MOST_SHOWN_CHARS:
        return text
    return (
        f"{text[:MOST_SHOWN_CHARS]}\n… cut: {len(text):,} characters, the first"
        f" {MOST_SHOWN_CHARS:,} shown (omnispindle tasks ID --json prints all)"
    )


def cut_text(value: Any) -> Any:
    """Text cut as ``cut`` does; any other value as it is."""
    return cut(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class ShownErrors:
    """The newest errors of a task's history within ``MOST_SHOWN_CHARS``, and what
    the rest of it held."""

    errors: list[Mapping[str, Any]]
    left_out: int
    chars: int


def _error_text(error: Any) -> str:
    if not isinstance(error, Mapping):
        return json.dumps(error, default=str)
    return "".join(
        str(error.get(key) or "") for key in ("type", "message", "traceback")
    ) or json.dumps(error, default=str)


def newest_errors(errors: Any) -> ShownErrors:
    """A history of 101 attempts may hold 6 MB, carried again at every live
    refresh: the newest errors within the characters a value is shown, as the
    last is the one that counts."""
    errors = list(errors or [])
    sizes = [len(_error_text(e)) for e in errors]
    count = newest_within(sizes, MOST_SHOWN_CHARS)
    return ShownErrors(errors[len(errors) - count :], len(errors) - count, sum(sizes))


def notice_value(kind: str, text: str) -> str:
    """A notice for the next page (``kind``: done or refused), as a cookie's value."""
    return base64.urlsafe_b64encode(json.dumps({"kind": kind, "text": text}).encode()).decode()


def read_notice(request: Request) -> dict[str, str] | None:
    """The notice an action left for this page, if any (a mangled one is dropped)."""
    value = request.cookies.get(NOTICE_COOKIE)
    if not value:
        return None
    try:
        notice = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(notice, dict) or not {"kind", "text"} <= notice.keys():
        return None
    return {"kind": str(notice["kind"]), "text": str(notice["text"])}


@dataclass(frozen=True)
class Renderer:
    """Renders templates with what every page needs: settings, links and the CSRF token."""

    settings: Settings
    environment: jinja2.Environment

    @classmethod
    def create(cls, settings: Settings) -> Renderer:
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            finalize=shown,
        )
        environment.filters.update(
            age=age,
            moment=moment,
            pretty_json=pretty_json,
            compact_json=compact_json,
            newest_errors=newest_errors,
            cut=cut_text,
            verbatim=Verbatim,
        )
        return cls(settings, environment)

    def page(
        self, request: Request, template: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        """The template rendered for this request, with a notice left by an action."""
        notice = None if is_live_refresh(request) else read_notice(request)
        html = self.environment.get_template(template).render(
            {
                **context,
                "request": request,
                "settings": self.settings,
                "refresh_seconds": REFRESH_SECONDS,
                "csrf_token": csrf.token_of(request),
                "notice": notice,
                "path_for": lambda name, **params: path_for(request, name, **params),
            }
        )
        response = HTMLResponse(html, status)
        csrf.remember(request, response)
        if request.cookies.get(NOTICE_COOKIE) and not is_live_refresh(request):
            response.delete_cookie(NOTICE_COOKIE, path=request.scope.get("root_path") or "/")
        return response

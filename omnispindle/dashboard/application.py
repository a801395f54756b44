"""The dashboard as an ASGI app: its routes, its static files, and who may use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from omnispindle.dashboard.actions import Actions
from omnispindle.dashboard.pages import Pages
from omnispindle.dashboard.rendering import Renderer
from omnispindle.dashboard.security import Auth, AuthMiddleware
from omnispindle.dashboard.settings import Settings
from omnispindle.dashboard.source import Source

STATIC = Path(__file__).resolve().parent / "static"


def app(
    dsn: str,
    *,
    read_only: bool = False,
    show_payloads: bool = False,
    auth: Auth | None = None,
    schema: str | None = None,
    write_dsn: str | None = None,
    read_dsn: str | None = None,
    pooler: bool = False,
) -> Starlette:
    """The web dashboard of the queue at ``dsn``, an ASGI app to serve or to mount.

    Args:
        dsn: the database to show; a role with the observer access of
            ``omnispindle.grant_access`` may read every page but a task's streamed
            partial results (they are read from the table).
        read_only: offer no action, and refuse every POST with 403.
        show_payloads: show parameters, results, errors and partial results
            (by default they are hidden: they may hold personal data).
        auth: ``TokenAuth(token)`` or ``BasicAuth(user, password)`` that every
            request must prove; None for none (only behind your own app's auth,
            or on a loopback address).
        schema: the queue's schema (default ``$OMNISPINDLE_SCHEMA``, else omnispindle).
        write_dsn: the database connection the actions use, for a ``dsn``
            whose role may only read (default: ``dsn``).
        read_dsn: a streaming replica the pages read from (default: ``dsn``);
            the actions still go to ``write_dsn`` or ``dsn``.
        pooler: the DSNs lead to a pooler in transaction mode (PgBouncer):
            prepare no statement, as ``TaskQueue(pooler=True)``. Without it,
            a page whose statements psycopg prepared after a few refreshes
            fails once the pooler hands its next transaction to another
            server connection.

    Raises:
        ValidationError: ``schema`` is not a name a queue may use (on first request).

    Example:
        >>> from starlette.applications import Starlette  # doctest: +SKIP
        >>> site = Starlette()  # doctest: +SKIP
        >>> site.mount("/tasks", app(dsn="postgresql://app@db/app"))  # doctest: +SKIP
    """
    settings = Settings(read_only=read_only, show_payloads=show_payloads, auth=auth)
    source = Source(dsn, schema=schema, write_dsn=write_dsn, read_dsn=read_dsn, pooler=pooler)
    pages = Pages(source, Renderer.create(settings))
    actions = Actions(source, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        source.close()

    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/series", pages.series, name="series"),
        Route("/workers", pages.workers, name="workers"),
        Route("/tasks", pages.tasks, name="tasks"),
        Route("/tasks/{task_id:int}", pages.task, name="task"),
        Route("/tasks/{task_id:int}/{action}", actions.handle, methods=["POST"], name="action"),
        Route(
            "/tasks/selection/{action}",
            actions.handle_selection,
            methods=["POST"],
            name="selection_action",
        ),
        Route("/schedules", pages.schedules, name="schedules"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [] if auth is None else [Middleware(AuthMiddleware, auth=auth)]
    dashboard = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    dashboard.state.source = source
    return dashboard

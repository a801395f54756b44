"""The pages, each a GET handler; under htmx, a page answers only its live part."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from omnispindle.dashboard import filters, reading
from omnispindle.dashboard.rendering import Renderer, is_live_refresh
from omnispindle.dashboard.source import Source
from omnispindle.errors import TaskNotFoundError


@dataclass(frozen=True)
class Pages:
    """The GET handlers of one dashboard."""

    source: Source
    renderer: Renderer

    def _page(self, request: Request, name: str, **context: object) -> Response:
        part = f"_{name}_live.html" if is_live_refresh(request) else f"{name}.html"
        return self.renderer.page(request, part, {"page": name, **context})

    def overview(self, request: Request) -> Response:
        return self._page(request, "overview", overview=reading.overview(self.source))

    def series(self, request: Request) -> Response:
        return JSONResponse(reading.series(self.source))

    def workers(self, request: Request) -> Response:
        return self._page(request, "workers", workers=reading.workers(self.source))

    def tasks(self, request: Request) -> Response:
        wanted = filters.parse(request.query_params)
        page = reading.task_page(self.source, wanted.task_filter, wanted.before)
        later = None if page.next_before is None else _query_with(request, page.next_before)
        return self._page(
            request,
            "tasks",
            wanted=wanted,
            tasks=page,
            states=filters.STATES,
            next_url=later,
            first_url=_query_with(request, None),
        )

    def task(self, request: Request) -> Response:
        task_id: int = request.path_params["task_id"]
        try:
            view = reading.task_view(self.source, task_id)
        except TaskNotFoundError as exc:
            return self.renderer.page(
                request, "missing.html", {"page": "tasks", "message": str(exc)}, 404
            )
        return self._page(request, "task", view=view)

    def schedules(self, request: Request) -> Response:
        return self._page(request, "schedules", schedules=reading.schedules(self.source))


def _query_with(request: Request, before: int | None) -> str:
    """This list's path and filters, with the page cursor ``before`` (None: the first page)."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "before" and v]
    if before is not None:
        kept.append(("before", str(before)))
    return f"{request.url.path}?{urlencode(kept)}"

"""The actions: retry, cancel (with the dependents, as the library does), and retry
with dependents, on one task or on the tasks ticked in the list, each a POST of a
form that carries the CSRF token.

Each runs the very operation ``omnispindle retry`` and ``omnispindle cancel``
run; a typed error the library raises is shown on the page the form was on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from omnispindle._client import operations
from omnispindle._db.query import Operation
from omnispindle.dashboard import csrf
from omnispindle.dashboard.rendering import NOTICE_COOKIE, notice_value, path_for
from omnispindle.dashboard.security import cookie_settings
from omnispindle.dashboard.settings import Settings
from omnispindle.dashboard.source import Source
from omnispindle.errors import OmnispindleError

CANCEL_REASON = "cancelled from the dashboard"
MOST_SELECTED = 500  # tasks one POST may act on: a page of the list, with room to spare

# Each action: the operation it runs on the tasks given, all of them or none.
ACTIONS: dict[str, Callable[[list[int]], Operation[Any]]] = {
    "retry": lambda task_ids: operations.retry_tasks(task_ids),
    "retry_with_dependents": lambda task_ids: operations.retry_tasks(
        task_ids, with_dependents=True
    ),
    "cancel": lambda task_ids: operations.cancel_tasks(task_ids, CANCEL_REASON),
}


@dataclass(frozen=True)
class Actions:
    """The POST handlers of one dashboard."""

    source: Source
    settings: Settings

    async def handle(self, request: Request) -> Response:
        """Run the action the route names on the route's task, if allowed; then back
        to the form's page."""
        return await self._handle(request, lambda form: [request.path_params["task_id"]])

    async def handle_selection(self, request: Request) -> Response:
        """Run the action the route names on the tasks ticked in the form, all or none."""
        return await self._handle(request, _selected)

    async def _handle(
        self, request: Request, task_ids: Callable[[FormData], list[int] | None]
    ) -> Response:
        if self.settings.read_only:
            return PlainTextResponse("this dashboard is read-only", 403)
        async with request.form(max_files=0, max_fields=MOST_SELECTED + 10) as form:
            if not csrf.valid(request, form.get(csrf.CSRF_FIELD)):
                return PlainTextResponse("missing or wrong CSRF token: reload the page", 403)
            action = ACTIONS.get(request.path_params["action"])
            if action is None:
                return PlainTextResponse("no such action", 404)
            ids = task_ids(form)
            if not ids:
                return PlainTextResponse(
                    f"tick from 1 to {MOST_SELECTED} tasks, each by its id", 400
                )
            kind, text = await _run(self.source, action, ids)
            return _back_with_notice(request, form.get("next"), ids, kind, text)


def _selected(form: FormData) -> list[int] | None:
    """The task ids ticked in a form; None if there are none, too many, or one is no id."""
    given = form.getlist("task_id")
    if not 0 < len(given) <= MOST_SELECTED:
        return None
    try:
        return [int(str(value)) for value in given]
    except ValueError:
        return None


def _back_with_notice(
    request: Request, target: object, task_ids: list[int], kind: str, text: str
) -> Response:
    """Back to the form's page, carrying what the action did in a cookie."""
    response = RedirectResponse(_back(request, target, task_ids), 303)
    response.set_cookie(NOTICE_COOKIE, notice_value(kind, text), **cookie_settings(request))
    return response


async def _run(
    source: Source, action: Callable[[list[int]], Operation[Any]], task_ids: list[int]
) -> tuple[str, str]:
    """("done", what happened) or ("refused", the library's typed error, also one
    for ids it refuses before anything runs)."""
    try:
        outcomes = await run_in_threadpool(source.write, action(task_ids))
    except OmnispindleError as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    return "done", "; ".join(outcome["message"] for outcome in outcomes)


def _back(request: Request, target: object, task_ids: list[int]) -> str:
    """Where to go after an action: the form's page, if it is one of this dashboard's,
    else the first task's page (the task list for a negative id, which has none)."""
    home = str(request.scope.get("root_path", "")) + "/"
    if (
        isinstance(target, str)
        and target.startswith(home)
        and not target.startswith("//")
        and not any(c in target for c in "\\\r\n")
    ):
        return target
    if task_ids[0] < 0:
        return path_for(request, "tasks")
    return path_for(request, "task", task_id=task_ids[0])

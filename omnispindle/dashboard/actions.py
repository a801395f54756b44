"""The actions: retry, cancel (with the dependents, as the library does), and retry
with dependents, each a POST of a form that carries the CSRF token.

Each runs the very operation ``omnispindle retry`` and ``omnispindle cancel``
run; a typed error the library raises is shown on the page the form was on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from omnispindle._client import operations
from omnispindle._db.query import Operation
from omnispindle.dashboard import csrf
from omnispindle.dashboard.rendering import NOTICE_COOKIE, notice_value, path_for
from omnispindle.dashboard.settings import Settings
from omnispindle.dashboard.source import Source
from omnispindle.errors import OmnispindleError

CANCEL_REASON = "cancelled from the dashboard"

# Each action: the operation it runs on one task.
ACTIONS: dict[str, Callable[[int], Operation[Any]]] = {
    "retry": lambda task_id: operations.retry_tasks([task_id]),
    "retry_with_dependents": lambda task_id: operations.retry_tasks(
        [task_id], with_dependents=True
    ),
    "cancel": lambda task_id: operations.cancel_tasks([task_id], CANCEL_REASON),
}


@dataclass(frozen=True)
class Actions:
    """The POST handlers of one dashboard."""

    source: Source
    settings: Settings

    async def handle(self, request: Request) -> Response:
        """Run the action the route names, if allowed; then back to the form's page."""
        if self.settings.read_only:
            return PlainTextResponse("this dashboard is read-only", 403)
        async with request.form(max_files=0, max_fields=10) as form:
            return await self._act(request, form.get(csrf.CSRF_FIELD), form.get("next"))

    async def _act(self, request: Request, token: object, target: object) -> Response:
        """The action, once the form is read."""
        if not csrf.valid(request, token):
            return PlainTextResponse("missing or wrong CSRF token: reload the page", 403)
        task_id: int = request.path_params["task_id"]
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return PlainTextResponse("no such action", 404)
        kind, text = await _run(self.source, action(task_id))
        response = RedirectResponse(_back(request, target, task_id), 303)
        response.set_cookie(
            NOTICE_COOKIE,
            notice_value(kind, text),
            path=request.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
        )
        return response


async def _run(source: Source, operation: Operation[Any]) -> tuple[str, str]:
    """("done", what happened) or ("refused", the library's typed error)."""
    try:
        outcomes = await run_in_threadpool(source.write, operation)
    except OmnispindleError as exc:
        return "refused", f"{type(exc).__name__}: {exc}"
    return "done", "; ".join(outcome["message"] for outcome in outcomes)


def _back(request: Request, target: object, task_id: int) -> str:
    """Where to go after an action: the form's page, if it is one of this dashboard's,
    else the task's page."""
    home = str(request.scope.get("root_path", "")) + "/"
    if (
        isinstance(target, str)
        and target.startswith(home)
        and not target.startswith("//")
        and not any(c in target for c in "\\\r\n")
    ):
        return target
    return path_for(request, "task", task_id=task_id)

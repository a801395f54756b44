"""The dashboard mounted below /ops in a Starlette app, as users mount it, on a fresh database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import psycopg
import psycopg.sql
import pytest
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from omnispindle import TaskQueueClient
from omnispindle.dashboard import app

MOUNT = "/ops"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def mounted(**settings: object) -> Starlette:
    """An app of the user's with the dashboard at ``/ops``."""
    return Starlette(routes=[Mount(MOUNT, app=app(**settings))])  # type: ignore[arg-type]


@pytest.fixture
def browse(dsn: str) -> Iterator[Callable[..., TestClient]]:
    """``browse(**settings)``: a client of the dashboard at /ops with these settings."""
    opened: list[TestClient] = []

    def open_client(**settings: object) -> TestClient:
        settings.setdefault("dsn", dsn)
        test_client = TestClient(mounted(**settings))
        opened.append(test_client.__enter__())
        return test_client

    yield open_client
    for test_client in opened:
        test_client.__exit__(None, None, None)


@pytest.fixture
def web(browse: Callable[..., TestClient]) -> TestClient:
    """A client of a dashboard with actions and payloads shown."""
    return browse(show_payloads=True)


@pytest.fixture
def observer_dsn(dsn: str, conn: psycopg.Connection) -> Iterator[str]:
    """The DSN of a login role with observer access, as the docs advise for a
    dashboard that can change nothing; the role is dropped afterwards."""
    name = f"os_observer_{uuid.uuid4().hex[:8]}"
    role = psycopg.sql.Identifier(name)
    conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(role))
    conn.execute("SELECT omnispindle.grant_access(%s::regrole, 'observer')", [name])
    yield make_conninfo(dsn, user=name)
    conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(role))
    conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(role))


def csrf_token(page_html: str) -> str:
    """The CSRF token a page's action forms carry."""
    match = _CSRF.search(page_html)
    assert match, "the page has no action form"
    return match[1]


def failed_task(client: TaskQueueClient, start_worker: Callable[..., object], **options) -> int:
    """A task of type ``boom`` that fails for good, and is failed when this returns."""

    def boom(task_data: dict) -> dict:
        raise RuntimeError("the boom task always fails")

    task_id = client.submit_task("boom", {"n": 1}, max_retries=0, **options)
    start_worker({"boom": boom})
    assert client.wait_for_task(task_id, timeout=30)["state"] == "failed"
    return task_id

"""The task list: filters, and keyset pages that together hold every row once."""

from __future__ import annotations

import re

from omnispindle.dashboard import reading
from tests.dashboard.conftest import MOUNT

ROW = re.compile(r'<tr data-task-id="(\d+)" data-state="(\w+)">')
NEXT = re.compile(r'<a rel="next" href="([^"]+)">')


def listed(page_html: str) -> list[int]:
    return [int(task_id) for task_id, _ in ROW.findall(page_html)]


def test_pages_hold_every_task_once_newest_first(web, client, monkeypatch):
    monkeypatch.setattr(reading, "PAGE_SIZE", 7)
    ids = client.submit_batch([{"task_type": "t", "parameters": {"i": i}} for i in range(30)])
    seen: list[int] = []
    url = f"{MOUNT}/tasks"
    pages = 0
    while url:
        page = web.get(url.replace("&amp;", "&")).text
        seen += listed(page)
        pages += 1
        found = NEXT.search(page)
        url = found[1] if found else ""
    assert seen == sorted(ids, reverse=True)
    assert pages == 5


def test_filters_by_type_state_priority_text_and_age(web, client):
    low = client.submit_task("mail", {"to": "Ada@example.com"}, priority=-5)
    high = client.submit_task("mail", {"to": "bob@example.com"}, priority=9)
    other = client.submit_task("resize", {"to": "ada"})
    client.cancel_task(other)

    def ids(query: str) -> list[int]:
        return listed(web.get(f"{MOUNT}/tasks?{query}").text)

    assert ids("type=mail") == [high, low]
    assert ids("state=cancelled") == [other]
    assert ids("priority=9") == [high]
    assert ids("text=ADA") == [other, low]
    assert ids("text=%25") == []  # % is a character, not a wildcard
    assert ids("older_than=1h") == []
    assert ids("newer_than=1h&type=mail&state=pending") == [high, low]


def test_a_bad_filter_is_reported_and_ignored(web, client):
    task_id = client.submit_task("mail", {})
    page = web.get(f"{MOUNT}/tasks?state=exploded&priority=high&older_than=soon").text
    assert "Ignored state" in page and "Ignored priority" in page and "Ignored older than" in page
    assert listed(page) == [task_id]


def test_the_worker_filter_finds_a_workers_tasks(web, client, start_worker):
    task_id = client.submit_task("noop", {})
    worker = start_worker({"noop": lambda data: {}}, name="alpha")
    client.wait_for_task(task_id, timeout=30)
    assert listed(web.get(f"{MOUNT}/tasks?worker=alpha").text) == [task_id]
    assert listed(web.get(f"{MOUNT}/tasks?worker=beta").text) == []
    assert worker is not None

"""The task list: filters, and keyset pages that together hold every row once."""

from __future__ import annotations

import re

import pytest

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


def test_a_rare_match_is_found_by_bounded_pages_that_say_how_far_they_looked(
    web, client, monkeypatch
):
    """A filter matching rarely walked the whole table for one page (1.1 s on a million)."""
    monkeypatch.setattr(reading, "MOST_EXAMINED", 10)
    monkeypatch.setattr(reading, "PAGE_SIZE", 3)
    ids = client.submit_batch(
        [{"task_type": "t", "parameters": {"word": "needle" if i % 9 == 0 else "hay"}}
         for i in range(40)]
    )  # fmt: skip
    needles = sorted((ids[i] for i in range(0, 40, 9)), reverse=True)
    seen: list[int] = []
    pages: list[str] = []
    url = f"{MOUNT}/tasks?text=needle"
    while url:
        page = web.get(url.replace("&amp;", "&")).text
        pages.append(page)
        seen += listed(page)
        found = NEXT.search(page)
        url = found[1] if found else ""
    assert seen == needles
    # 10 tasks looked through per page; the fifth finds none below the fourth.
    assert len(pages) == 5
    assert all("Looked through the 10" in page for page in pages[:4])
    assert "No task matches." in pages[4]


@pytest.mark.parametrize("field", ["type", "worker", "text"])
def test_a_filter_holding_a_nul_character_is_reported_and_ignored(web, client, field):
    task_id = client.submit_task("mail", {})
    page = web.get(f"{MOUNT}/tasks", params={field: "a\x00b"})
    assert page.status_code == 200
    assert f"Ignored {field}: text without a NUL character" in page.text
    assert listed(page.text) == [task_id]

"""The dashboard in headless Chromium, served by uvicorn below /ops: live counts, actions
from the page, a workflow's graph and a running task's partial results.

Each test saves a screenshot of the pages it visits in ``$OMNISPINDLE_SCREENSHOTS``
(default: the test's tmp dir); with ``$OMNISPINDLE_README_PICTURE`` set (``make
screenshots``), the overview's also becomes the README's picture.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnispindle import current_task
from omnispindle.bench.first_paint import served
from tests.dashboard.conftest import MOUNT, mounted

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
README_PICTURE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"
WAIT_MS = 20_000


@pytest.fixture
def server(dsn: str) -> Iterator[str]:
    """The dashboard (actions and payloads on) served on a free port; its base URL."""
    with served(mounted(dsn=dsn, show_payloads=True)) as base:
        yield base + MOUNT


@pytest.fixture
def page(server: str) -> Iterator:
    """A Chromium page; confirmation dialogs are accepted."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 860})
        tab.on("dialog", lambda dialog: dialog.accept())
        yield tab
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("OMNISPINDLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def expect():
    return pytest.importorskip("playwright.sync_api").expect


def test_the_overview_counts_change_without_a_reload(page, server, client, start_worker, shots):
    page.goto(server + "/")
    page.evaluate("window.notReloaded = true")
    succeeded = page.locator('[data-total="succeeded"]')
    expect()(succeeded).to_have_text("0")
    ids = [client.submit_task("double", {"x": i}) for i in range(12)]
    expect()(page.locator('[data-total="pending"]')).to_have_text("12", timeout=WAIT_MS)
    start_worker({"double": lambda data: {"y": 2 * data["parameters"]["x"]}})
    client.wait_for_batch(ids, timeout=30)
    expect()(succeeded).to_have_text("12", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True
    drawn = re.compile(r"\d+")  # charts.js stamps the time it last drew
    expect()(page.locator(".charts")).to_have_attribute("data-drawn", drawn, timeout=WAIT_MS)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    if os.environ.get("OMNISPINDLE_README_PICTURE"):
        page.screenshot(path=str(README_PICTURE))
    page.goto(server + "/workers")
    expect()(page.locator("tr[data-worker]")).to_have_count(1, timeout=WAIT_MS)
    page.screenshot(path=str(shots / "workers.png"), full_page=True)
    client.add_periodic_task("nightly", "0 3 * * *", "report", {})
    page.goto(server + "/schedules")
    page.screenshot(path=str(shots / "schedules.png"), full_page=True)


def test_retry_and_cancel_from_the_task_list(page, server, client, start_worker, shots):
    def boom(task_data: dict) -> dict:
        raise RuntimeError("the boom task always fails")

    failed = client.submit_task("boom", {}, max_retries=0)
    worker = start_worker({"boom": boom})
    client.wait_for_task(failed, timeout=30)
    worker.stop(timeout=30)
    waiting = client.submit_task("later", {})
    page.goto(server + "/tasks")
    row = page.locator(f'tr[data-task-id="{failed}"]')
    expect()(row).to_have_attribute("data-state", "failed")
    page.screenshot(path=str(shots / "tasks.png"), full_page=True)
    row.locator('button[data-action="retry"]').click()
    expect()(page.locator(".notice")).to_contain_text(f"task {failed} is pending again")
    expect()(page.locator(f'tr[data-task-id="{failed}"]')).to_have_attribute(
        "data-state", "pending"
    )
    page.locator(f'tr[data-task-id="{waiting}"] button[data-action="cancel"]').click()
    expect()(page.locator(f'tr[data-task-id="{waiting}"]')).to_have_attribute(
        "data-state", "cancelled"
    )
    assert client.get_task(waiting)["state"] == "cancelled"


def test_a_three_level_workflow_shows_each_state(page, server, client, start_worker, shots):
    root = client.submit_task("extract", {})
    middle = [client.submit_task("transform", {}, dependencies=[root]) for _ in range(2)]
    leaf = client.submit_task("load", {}, dependencies=middle)
    start_worker({"extract": lambda data: {"rows": 3}})
    client.wait_for_task(root, timeout=30)
    page.goto(f"{server}/tasks/{leaf}")
    states = {root: "succeeded", middle[0]: "pending", middle[1]: "pending", leaf: "blocked"}
    for task_id, state in states.items():
        node = page.locator(f'svg.graph g[data-task-id="{task_id}"]')
        expect()(node).to_have_attribute("data-state", state, timeout=WAIT_MS)
        expect()(node).to_contain_text(state)
    page.screenshot(path=str(shots / "workflow.png"), full_page=True)


def test_a_running_tasks_partial_results_appear_live(page, server, client, start_worker, shots):
    go_on = threading.Event()
    emitted = threading.Event()

    def chunks(task_data: dict) -> dict:
        for n in range(3):
            current_task().emit({"chunk": n})
        emitted.set()
        go_on.wait(60)
        current_task().emit({"chunk": "last"})
        return {"chunks": 4}

    task_id = client.submit_task("chunks", {})
    page.goto(f"{server}/tasks/{task_id}")
    page.evaluate("window.notReloaded = true")
    start_worker({"chunks": chunks})
    assert emitted.wait(30)
    partials = page.locator("ol.partials li")
    expect()(partials).to_have_count(3, timeout=WAIT_MS)
    expect()(page.locator('[data-field="state"]')).to_have_text("running")
    page.screenshot(path=str(shots / "task.png"), full_page=True)
    go_on.set()
    expect()(partials).to_have_count(4, timeout=WAIT_MS)
    expect()(page.locator('[data-field="state"]')).to_have_text("succeeded", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True


def test_ticked_tasks_are_cancelled_together_and_ticks_survive_a_refresh(page, server, client):
    ticked = [client.submit_task("later", {"n": n}) for n in range(2)]
    spared = client.submit_task("later", {"n": 2})
    page.goto(server + "/tasks")
    for task_id in ticked:
        page.locator(f"#pick-{task_id}").check()
    # A live refresh replaces the table; the ticks stay.
    with page.expect_response(
        lambda answer: "/tasks" in answer.url and answer.request.headers.get("hx-request") == "true"
    ):
        pass
    for task_id in ticked:
        expect()(page.locator(f"#pick-{task_id}")).to_be_checked()
    page.locator('button[data-selection-action="cancel"]').click()
    for task_id in ticked:
        expect()(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_attribute(
            "data-state", "cancelled", timeout=WAIT_MS
        )
    assert client.get_task(spared)["state"] == "pending"


# The left edge of each character of every text node in ``root``, in the order
# the characters are stored.
_CHARACTER_LEFT_EDGES = """root => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const edges = [];
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getBoundingClientRect();
      if (rect.width > 0) edges.push(rect.left);
    }
    nodes.push(edges);
  }
  return nodes;
}"""


def test_a_task_type_that_reorders_text_reads_left_to_right(page, server, client, start_worker):
    # "report<U+202E>exe.txt" would show as "reporttxt.exe": a type, worker or
    # error that reads as another once drawn.
    spoof = "report\u202eexe.txt"

    def fail(task_data: dict) -> dict:
        raise RuntimeError("saved report\u202eexe.txt")

    task_id = client.submit_task(spoof, {}, max_retries=0)
    start_worker({spoof: fail}, name="w\u2067x")
    client.wait_for_task(task_id, timeout=30)
    page.goto(server + "/tasks")
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect()(row).to_have_attribute("data-state", "failed")
    for edges in row.evaluate(_CHARACTER_LEFT_EDGES):
        assert edges == sorted(edges), edges
    expect()(row).to_contain_text("report\\u202eexe.txt")
    page.goto(f"{server}/tasks/{task_id}")
    for line in (page.locator("h1"), page.locator("details summary")):
        for edges in line.evaluate(_CHARACTER_LEFT_EDGES):
            assert edges == sorted(edges), edges

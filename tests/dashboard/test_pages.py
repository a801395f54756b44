"""Every page renders from a real queue, with links below the mount point."""

from __future__ import annotations

import re

import pytest

from omnispindle._maintenance import rollup
from omnispindle.dashboard import reading
from tests.acceptance.workers import poll
from tests.dashboard.conftest import MOUNT

from ..integration.test_cli_people import failed_with_big_errors

HREF = re.compile(r'\s(?:href|src|action|hx-get|data-series)="([^"]+)"')
# The characters that reorder text from right to left (U+202E and its kin).
BIDI = {"\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u061c"}


def test_every_link_of_every_page_stays_below_the_mount_point(web, client):
    task_id = client.submit_task("resize", {"image": "cat.png"})
    for path in ("/", "/workers", "/tasks", f"/tasks/{task_id}", "/schedules"):
        page = web.get(MOUNT + path)
        assert page.status_code == 200, path
        links = HREF.findall(page.text)
        assert links, path
        assert [link for link in links if not link.startswith(MOUNT + "/")] == [], path


def test_static_files_ship_inside_the_package(web):
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css", "charts.js"):
        assert web.get(f"{MOUNT}/static/{name}").status_code == 200, name


def test_the_overview_counts_tasks_by_type_and_state(web, client):
    for _ in range(3):
        client.submit_task("resize", {})
    client.submit_task("email", {})
    page = web.get(MOUNT + "/").text
    assert '<span class="figure" data-total="pending">4</span>' in page
    assert 'data-type="resize"' in page and 'data-type="email"' in page


def test_the_overview_counts_ready_tasks_no_live_worker_can_run(web, client, start_worker):
    start_worker({"resize": lambda data: {}}, capabilities=["resize"])
    client.pause_task_type("resize")
    client.submit_task("resize", {}, required_capabilities=["gpu"])
    shown = '<span class="figure" data-total="unclaimable">1</span>'
    # Counted once the worker has registered: then a live worker runs the type.
    assert poll(lambda: shown in web.get(MOUNT + "/").text, 30)


def test_a_live_refresh_answers_only_the_live_part(web, client):
    client.submit_task("resize", {})
    part = web.get(MOUNT + "/", headers={"HX-Request": "true"}).text
    assert part.lstrip().startswith('<section id="live"')
    assert "<html" not in part
    assert f'hx-get="{MOUNT}/"' in part


def test_the_series_has_sixty_minutes_and_counts_what_finished(web, client, start_worker):
    task_id = client.submit_task("double", {"x": 2})
    start_worker({"double": lambda data: {"y": 4}})
    client.wait_for_task(task_id, timeout=30)
    series = web.get(MOUNT + "/series").json()
    assert len(series["minute"]) == 60
    assert sum(series["succeeded"]) == 1 and sum(series["failed"]) == 0


def test_workers_show_slots_and_lost_ones_are_marked(web, client, start_worker, conn):
    # No sweeper here: it would declare the ghost dead before the page is read.
    start_worker(
        {"noop": lambda data: {}}, concurrency=3, capabilities=["noop", "gpu"], sweep_interval=None
    )
    poll(lambda: "gpu" in web.get(MOUNT + "/workers").text, timeout=30)
    conn.execute(
        "INSERT INTO omnispindle.workers (name, host, pid, concurrency, version, "
        "last_heartbeat_at, lease_timeout_seconds) "
        "VALUES ('ghost', 'gone', 1, 2, 'x', now() - interval '10 minutes', 30)"
    )
    page = web.get(MOUNT + "/workers").text
    assert "gpu" in page and "0 / 3" in page
    assert 'class="worker-lost" data-worker="ghost"' in page


def test_a_task_page_shows_the_tasks_group_and_idempotency_key(web, client):
    keyed = client.submit_task("bill", group_key="tenant-7", idempotency_key="order-7")
    page = web.get(f"{MOUNT}/tasks/{keyed}").text
    assert "<th>Group</th><td>tenant-7</td>" in page
    assert "<th>Idempotency key</th><td>order-7</td>" in page
    plain = web.get(f"{MOUNT}/tasks/{client.submit_task('bill')}").text
    assert "<th>Group</th>" not in plain and "<th>Idempotency key</th>" not in plain


def test_a_task_page_hides_payloads_unless_asked(browse, client):
    task_id = client.submit_task("resize", {"secret": "hunter2"})
    hidden = browse().get(f"{MOUNT}/tasks/{task_id}").text
    assert "hunter2" not in hidden and "hidden" in hidden
    shown = browse(show_payloads=True).get(f"{MOUNT}/tasks/{task_id}").text
    assert "hunter2" in shown


def test_an_unknown_task_is_a_404_page(web):
    page = web.get(f"{MOUNT}/tasks/987654")
    assert page.status_code == 404 and "no task with id 987654" in page.text


def test_a_three_level_workflow_draws_every_task_with_its_state(web, client):
    root = client.submit_task("extract", {})
    middle = [client.submit_task("transform", {}, dependencies=[root]) for _ in range(2)]
    leaf = client.submit_task("load", {}, dependencies=middle)
    client.cancel_task(middle[1])  # cancels the leaf too
    page = web.get(f"{MOUNT}/tasks/{middle[0]}").text
    expected = {root: "pending", middle[0]: "blocked", middle[1]: "cancelled", leaf: "cancelled"}
    for task_id, state in expected.items():
        assert f'data-task-id="{task_id}" data-state="{state}"' in page
    assert page.count('class="edge"') == 4


def test_schedules_show_their_next_tick(web, client):
    client.add_periodic_task("nightly", "0 3 * * *", "report", {})
    page = web.get(MOUNT + "/schedules").text
    assert 'data-schedule="nightly"' in page and "03:00:00 UTC" in page


# A known workload made directly: per type, tasks finished in the last hour and
# long before it, a running task whose lease expired, and old finished ones.
KNOWN_WORKLOAD = """
INSERT INTO omnispindle.tasks (task_type, state, attempts, result, errors, finished_at)
SELECT t, s::omnispindle.task_state, 1,
       CASE WHEN s = 'succeeded' THEN '{}'::jsonb END,
       CASE WHEN s = 'failed' THEN '[{"type": "Boom"}]'::jsonb ELSE '[]'::jsonb END,
       now() - a::interval
FROM (VALUES ('resize', 'succeeded', '10 minutes'), ('resize', 'succeeded', '1 second'),
             ('resize', 'failed', '30 minutes'), ('resize', 'succeeded', '3 hours'),
             ('email', 'cancelled', '2 minutes'), ('email', 'failed', '2 days'),
             ('archive', 'succeeded', '5 hours')) AS w (t, s, a);
INSERT INTO omnispindle.tasks (task_type, state, attempts, started_at, lease_token,
                               lease_expires_at)
VALUES ('email', 'running', 1, now() - interval '1 minute', gen_random_uuid(),
        now() - interval '5 seconds');
"""
EXACT_OVERVIEW = """
SELECT task_type, state::text, count(*)
FROM omnispindle.tasks
WHERE finished_at IS NULL OR finished_at >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1, 2
"""
OVERVIEW_CELL = re.compile(r'data-state="(\w+)">(?:<a [^>]*>)?(\d+)')


def overview_counts(page: str) -> dict[tuple[str, str], int]:
    """Every non-zero count of the overview's table, by task type and state."""
    found = {}
    for row in page.split("<tr data-type=")[1:]:
        task_type = row.split('"')[1]
        for state, count in OVERVIEW_CELL.findall(row.split("</tr>")[0]):
            if int(count):
                found[task_type, state] = int(count)
    return found


def test_the_overview_counts_unfinished_tasks_and_those_finished_in_the_last_hour(
    web, client, conn, queue
):
    parent = client.submit_task("resize", {})
    client.submit_task("resize", {}, dependencies=[parent])
    client.submit_task("email", {})
    conn.execute(KNOWN_WORKLOAD)
    rollup.roll_up(queue.db, settle=5)  # all but the task finished a second ago
    exact = {(t, s): n for t, s, n in conn.execute(EXACT_OVERVIEW).fetchall()}
    page = web.get(MOUNT + "/").text
    assert overview_counts(page) == exact
    assert 'data-type="archive"' not in page  # it finished hours ago
    assert '<span class="figure" data-total="expired_leases">1</span>' in page
    assert '<span class="figure" data-total="succeeded">2</span>' in page
    assert "finished in the last hour" in page


def test_an_observer_role_reads_a_task_page_without_its_partial_results(
    observer_dsn, browse, client
):
    task_id = client.submit_task("resize", {"image": "cat.png"})
    page = browse(dsn=observer_dsn, show_payloads=True).get(f"{MOUNT}/tasks/{task_id}")
    assert page.status_code == 200
    assert 'data-field="state">pending<' in page.text and "cat.png" in page.text
    assert "Not readable by the database role of this dashboard" in page.text


def test_an_observer_roles_task_page_never_runs_a_read_it_may_not(
    observer_dsn, browse, client, record_statements
):
    # Each refused read is an error in the server's log, and the page refreshes
    # every two seconds.
    task_id = client.submit_task("resize", {})
    web = browse(dsn=observer_dsn, show_payloads=True)
    statements = record_statements()
    for _ in range(3):
        assert "Not readable by the database role" in web.get(f"{MOUNT}/tasks/{task_id}").text
    assert "dashboard_partials" not in statements.names


STREAMED = """
INSERT INTO omnispindle.task_stream (task_id, seq, attempt, payload)
SELECT %s, n, 1, jsonb_build_object('page', n) FROM generate_series(1, %s) AS n
"""
PARTIAL = re.compile(r'<li data-seq="(\d+)">')


def test_a_task_page_shows_its_newest_partial_results_and_how_many_it_streamed(
    browse, client, conn
):
    # A task may stream 100,000; its page, read again every two seconds, held them all.
    task_id = client.submit_task("crawl", {})
    conn.execute(STREAMED, [task_id, 5000])
    shown = browse(show_payloads=True).get(f"{MOUNT}/tasks/{task_id}").text
    newest = range(5001 - reading.MOST_PARTIALS, 5001)
    assert PARTIAL.findall(shown) == [str(seq) for seq in newest]
    assert f"5,000 streamed; the newest {reading.MOST_PARTIALS} are shown" in shown
    hidden = browse().get(f"{MOUNT}/tasks/{task_id}").text
    assert "5,000 streamed; hidden" in hidden


BIG_PARTIALS = """
INSERT INTO omnispindle.task_stream (task_id, seq, attempt, payload)
SELECT %s, n, 1, to_jsonb(repeat('p', 1000000)) FROM generate_series(1, 3) AS n
"""


def test_a_task_page_cuts_each_big_value_and_says_so(web, client, start_worker, conn):
    # A 16 MiB result made the page 18 MB, sent again at every live refresh.
    task_id = client.submit_task("big", {"text": "a" * 900_000})
    conn.execute(BIG_PARTIALS, [task_id])
    start_worker({"big": lambda data: ["r" * 90] * 40_000})
    assert client.wait_for_task(task_id, timeout=60)["state"] == "succeeded"
    page = web.get(f"{MOUNT}/tasks/{task_id}", headers={"HX-Request": "true"}).text
    assert len(page) < 600_000  # five values of 100,000 characters and the rest
    assert page.count("the first 100,000 shown (omnispindle tasks ID --json prints all)") == 5
    assert "… cut: 3,840,002 characters" in page  # the result, indented


def test_a_task_page_shows_the_newest_errors_of_a_long_history_and_says_so(web, client, conn):
    # 101 attempts of the longest errors a worker stores made a page of over 6 MB.
    task_id = failed_with_big_errors(conn, client, 20)
    page = web.get(f"{MOUNT}/tasks/{task_id}", headers={"HX-Request": "true"}).text
    assert len(page) < 200_000
    assert "… cut: 20 errors of 1,2" in page
    assert "characters; the newest 1 shown (omnispindle tasks ID --json prints all)" in page
    assert "attempt 20 t" in page and "attempt 19 t" not in page


@pytest.mark.parametrize("task_id", ["9223372036854775808", "99999999999999999999999"])
def test_an_id_beyond_any_task_is_a_404_page(web, task_id):
    page = web.get(f"{MOUNT}/tasks/{task_id}")
    assert page.status_code == 404 and f"no task with id {task_id}" in page.text


def test_characters_that_reorder_text_right_to_left_are_shown_escaped(web, client, start_worker):
    # U+202E and its kin reorder what follows them on the page: a task type
    # "report<U+202E>exe.txt" would read "reporttxt.exe", and more of its cell.
    spoof = "report\u202eexe.txt"

    def fail(task_data: dict) -> dict:
        raise RuntimeError("saved \u2067report\u202dexe")

    task_id = client.submit_task(spoof, {"file": "a\u202eb"}, max_retries=0)
    start_worker({spoof: fail}, name="w\u2066x")
    client.wait_for_task(task_id, timeout=30)
    client.add_periodic_task("nightly\u200f", "0 3 * * *", spoof, {})
    pages = {
        path: web.get(MOUNT + path).text
        for path in (
            "/",
            "/workers",
            "/tasks",
            f"/tasks/{task_id}",
            "/schedules",
            "/tasks?type=" + spoof,
        )
    }
    kept_filter = f'<input name="type" value="{spoof}">'
    for path, page in pages.items():
        assert not set(page.replace(kept_filter, "")) & BIDI, path
    assert "report\\u202eexe.txt" in pages["/tasks"] and "w\\u2066x" in pages["/workers"]
    assert "saved \\u2067report\\u202dexe" in pages[f"/tasks/{task_id}"]
    assert "nightly\\u200f" in pages["/schedules"]
    # The filter keeps what was asked for, so that filtering again finds the type.
    assert kept_filter in pages["/tasks?type=" + spoof]

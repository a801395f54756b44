"""Actions change states through the library; without a CSRF token, or read-only, none do."""

from __future__ import annotations

from tests.dashboard.conftest import MOUNT, csrf_token, failed_task


def post(web, task_id: int, action: str, token: str | None, **fields: str):
    form = {"csrf_token": token, **fields} if token is not None else dict(fields)
    return web.post(f"{MOUNT}/tasks/{task_id}/{action}", data=form, follow_redirects=False)


def test_retry_puts_a_failed_task_back_and_says_so(web, client, start_worker):
    task_id = failed_task(client, start_worker)
    token = csrf_token(web.get(f"{MOUNT}/tasks?state=failed").text)
    back = f"{MOUNT}/tasks?state=failed"
    answer = post(web, task_id, "retry", token, next=back)
    assert answer.status_code == 303 and answer.headers["location"] == back
    page = web.get(f"{MOUNT}/tasks/{task_id}").text
    assert f"task {task_id} is pending again" in page
    assert client.get_task(task_id)["state"] in {"pending", "running", "failed"}
    assert client.get_task(task_id)["attempts"] >= 1


def test_retry_with_dependents_revives_the_cancelled_dependents(web, client, start_worker):
    parent = client.submit_task("boom", {}, max_retries=0)
    child = client.submit_task("after", {}, dependencies=[parent])

    def boom(task_data: dict) -> dict:
        raise RuntimeError("fails")

    worker = start_worker({"boom": boom})
    assert client.wait_for_task(child, timeout=30)["state"] == "cancelled"
    worker.stop(timeout=30)
    token = csrf_token(web.get(f"{MOUNT}/tasks/{parent}").text)
    assert post(web, parent, "retry_with_dependents", token).status_code == 303
    assert client.get_task(child)["state"] == "blocked"


def test_cancel_cancels_the_task_and_its_descendants(web, client):
    parent = client.submit_task("step", {})
    child = client.submit_task("step", {}, dependencies=[parent])
    token = csrf_token(web.get(f"{MOUNT}/tasks/{parent}").text)
    assert post(web, parent, "cancel", token).status_code == 303
    assert client.get_task(parent)["state"] == "cancelled"
    assert client.get_task(child)["state"] == "cancelled"
    assert "cancelled from the dashboard" in web.get(f"{MOUNT}/tasks/{parent}").text


def test_a_refused_action_shows_the_librarys_typed_error(web, client):
    task_id = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks/{task_id}").text)
    answer = post(web, task_id, "retry", token)
    assert answer.status_code == 303
    page = web.get(answer.headers["location"]).text
    assert "TaskStateError" in page and 'class="notice refused"' in page
    assert client.get_task(task_id)["state"] == "pending"


def test_a_post_without_the_csrf_token_changes_nothing(web, client):
    task_id = client.submit_task("step", {})
    web.get(f"{MOUNT}/tasks/{task_id}")  # the cookie is set; the form value is missing
    assert post(web, task_id, "cancel", None).status_code == 403
    assert post(web, task_id, "cancel", "forged").status_code == 403
    assert client.get_task(task_id)["state"] == "pending"


def test_a_read_only_dashboard_offers_no_action_and_refuses_them(browse, client):
    task_id = client.submit_task("step", {})
    web = browse(read_only=True)
    page = web.get(f"{MOUNT}/tasks/{task_id}").text
    assert "data-action" not in page and "read-only" in page
    token = web.cookies.get("omnispindle_dashboard_csrf") or "any"
    assert post(web, task_id, "cancel", token).status_code == 403
    assert client.get_task(task_id)["state"] == "pending"


def test_an_action_never_redirects_off_the_dashboard(web, client):
    task_id = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks/{task_id}").text)
    answer = post(web, task_id, "cancel", token, next="https://elsewhere.example/")
    assert answer.headers["location"] == f"{MOUNT}/tasks/{task_id}"


def post_selection(web, action: str, token: str, task_ids: list) -> object:
    form = {"csrf_token": token, "task_id": [str(i) for i in task_ids]}
    return web.post(f"{MOUNT}/tasks/selection/{action}", data=form, follow_redirects=False)


def test_the_ticked_tasks_are_cancelled_in_one_action(web, client):
    ticked = [client.submit_task("step", {"n": n}) for n in range(3)]
    untouched = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks").text)
    answer = post_selection(web, "cancel", token, ticked)
    assert answer.status_code == 303
    assert [client.get_task(i)["state"] for i in ticked] == ["cancelled"] * 3
    assert client.get_task(untouched)["state"] == "pending"


def test_a_selection_is_acted_on_all_or_none(web, client, start_worker):
    failed = failed_task(client, start_worker)
    pending = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks").text)
    answer = post_selection(web, "retry", token, [failed, pending])
    page = web.get(answer.headers["location"]).text
    assert "TaskStateError" in page
    assert client.get_task(failed)["state"] == "failed"
    answer = post_selection(web, "retry", token, [failed])
    assert f"task {failed} is pending again" in web.get(answer.headers["location"]).text


def test_a_selection_that_is_no_list_of_ids_changes_nothing(web, client):
    task_id = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks").text)
    assert post_selection(web, "cancel", token, []).status_code == 400
    assert post_selection(web, "cancel", token, [task_id, "x"]).status_code == 400
    assert post_selection(web, "cancel", token, list(range(1, 600))).status_code == 400
    refused = post_selection(web, "cancel", token, [0])
    assert "ValidationError" in web.get(refused.headers["location"]).text
    assert post_selection(web, "cancel", "forged", [task_id]).status_code == 403
    assert client.get_task(task_id)["state"] == "pending"


def test_an_action_on_an_id_no_task_may_have_is_refused_on_the_page(web, client):
    task_id = client.submit_task("step", {})
    token = csrf_token(web.get(f"{MOUNT}/tasks").text)
    beyond = 10**20
    for act in (
        lambda: post(web, beyond, "cancel", token),
        lambda: post_selection(web, "cancel", token, [task_id, beyond]),
        lambda: post_selection(web, "retry", token, [-3]),
    ):
        answer = act()
        assert answer.status_code == 303
        page = web.get(answer.headers["location"]).text
        assert 'class="notice refused"' in page and "ValidationError" in page
    assert client.get_task(task_id)["state"] == "pending"

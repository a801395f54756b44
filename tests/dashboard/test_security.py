"""Credentials when configured, and no serving beyond this machine without them."""

from __future__ import annotations

import http.client
import subprocess
import sys

import pytest

from omnispindle.dashboard import BasicAuth, TokenAuth, check_bind
from omnispindle.errors import ConfigurationError
from tests.acceptance.workers import poll
from tests.dashboard.conftest import MOUNT
from tests.pgbouncer import free_port


def test_a_token_is_asked_of_every_request(browse):
    web = browse(auth=TokenAuth("s3cret"))
    assert web.get(MOUNT + "/").status_code == 401
    assert web.get(MOUNT + "/static/htmx.min.js").status_code == 401
    assert web.get(MOUNT + "/", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert web.get(MOUNT + "/", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_token_in_the_address_moves_into_a_cookie(browse):
    web = browse(auth=TokenAuth("s3cret"))
    login = web.get(MOUNT + "/tasks?token=s3cret&state=pending", follow_redirects=False)
    assert login.status_code == 303
    assert login.headers["location"] == MOUNT + "/tasks?state=pending"
    assert web.get(MOUNT + "/tasks?state=pending").status_code == 200
    assert browse(auth=TokenAuth("s3cret")).get(MOUNT + "/?token=wrong").status_code == 401


def test_basic_auth_is_asked_with_a_challenge(browse):
    web = browse(auth=BasicAuth("ops", "pa:ss"))
    refused = web.get(MOUNT + "/")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert web.get(MOUNT + "/", auth=("ops", "wrong")).status_code == 401
    assert web.get(MOUNT + "/", auth=("ops", "pa:ss")).status_code == 200


def test_an_unauthenticated_post_changes_nothing(browse, client):
    task_id = client.submit_task("step", {})
    web = browse(auth=TokenAuth("s3cret"))
    answer = web.post(f"{MOUNT}/tasks/{task_id}/cancel", data={"csrf_token": "x"})
    assert answer.status_code == 401
    assert client.get_task(task_id)["state"] == "pending"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_addresses_need_no_credentials(host):
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "dashboard.example"])
def test_other_addresses_need_credentials(host):
    with pytest.raises(ConfigurationError, match="--token or --basic-auth"):
        check_bind(host, None)
    check_bind(host, TokenAuth("t"))


def test_the_command_refuses_to_listen_beyond_this_machine_without_credentials(dsn):
    done = subprocess.run(
        [sys.executable, "-m", "omnispindle", "dashboard", "--dsn", dsn, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "beyond this machine" in done.stderr and "--token or --basic-auth" in done.stderr


def test_bad_basic_credentials_are_refused():
    with pytest.raises(ConfigurationError):
        BasicAuth.parse("no-colon")
    with pytest.raises(ConfigurationError):
        TokenAuth("")


def _status_for_host(port: int, host: str) -> int | None:
    """The status of ``GET /`` on the dashboard at ``port`` with ``Host: host``; None
    while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_the_command_without_credentials_answers_only_this_machines_names(dsn):
    # A page of another site whose name a DNS rebinding points at 127.0.0.1 is
    # of the same origin as the dashboard for the browser: it could read the
    # pages and post the actions. Its requests carry its own name as Host.
    port = free_port()
    command = [sys.executable, "-m", "omnispindle", "dashboard", "--dsn", dsn, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(lambda: server.poll() is not None or _status_for_host(port, "localhost"), 60)
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        own = [f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"]
        assert [_status_for_host(port, host) for host in own] == [200] * len(own)
        foreign = [f"rebound.example:{port}", "rebound.example", f"192.168.1.5:{port}"]
        assert [_status_for_host(port, host) for host in foreign] == [400] * len(foreign)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _login_cookie(port: int, headers: dict[str, str]) -> str | None:
    """The Set-Cookie of ``GET /?token=s3cret`` on the dashboard at ``port``; None
    while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/?token=s3cret", headers=headers)
        return connection.getresponse().getheader("set-cookie")
    except OSError:
        return None
    finally:
        connection.close()


def test_behind_a_tls_proxy_the_token_cookie_is_secure(dsn):
    """The cookie had no Secure: a browser sent the token by plain HTTP to the same host."""
    port = free_port()
    command = [sys.executable, "-m", "omnispindle", "dashboard", "--dsn", dsn]
    command += ["--port", str(port), "--token", "s3cret"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(lambda: server.poll() is not None or _login_cookie(port, {}), 60)
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
        by_tls = _login_cookie(port, {"X-Forwarded-Proto": "https"}) or ""
        assert "omnispindle_dashboard_token=s3cret" in by_tls and "Secure" in by_tls
        # Plain HTTP on this machine: a Secure cookie would not come back.
        assert "Secure" not in (_login_cookie(port, {}) or "")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cookies_of_pages_read_by_https_are_secure(browse):
    web = browse(auth=TokenAuth("s3cret"))
    web.base_url = web.base_url.copy_with(scheme="https")
    page = web.get(MOUNT + "/", headers={"Authorization": "Bearer s3cret"})
    assert page.status_code == 200 and "Secure" in page.headers["set-cookie"]

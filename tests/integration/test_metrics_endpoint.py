"""The metrics endpoint as something exposed: where it listens, what it answers,
to whom, and what a scrape costs (issue 18, finding 4)."""

from __future__ import annotations

import base64
import functools
import http.client
import inspect
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from omnispindle import prometheus
from omnispindle.cli.main import parser as cli_parser

from ..acceptance.workers import ROOT, poll
from .test_metrics import DEADLINE, free_port, parse, sample, scrape

TOKEN = "scrape-secret"


def get(port: int, path: str = "/metrics", authorization: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


@pytest.fixture
def serve(queue):
    """``serve(**options)``: the queue's metrics on a free port; returns the port."""
    servers = []

    def start(**options):
        server = prometheus.serve(queue, 0, "127.0.0.1", **options)
        servers.append(server)
        return server.server_port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_endpoint_binds_this_host_only_by_default():
    """It bound 0.0.0.0, every interface, by default."""
    metrics = cli_parser().parse_args(["metrics"])
    assert metrics.addr == "127.0.0.1"
    assert inspect.signature(prometheus.serve).parameters["addr"].default == "127.0.0.1"


def test_only_the_metrics_path_is_served(serve):
    """Any path answered with the metrics."""
    port = serve()
    assert get(port)[0] == 200
    for path in ("/", "/index.html", "/metrics/extra", "/favicon.ico"):
        status, body = get(port, path)
        assert status == 404, path
        assert "omnispindle_tasks" not in body


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_token_is_required_when_set(serve):
    """Anyone who could reach the port could scrape."""
    port = serve(token=TOKEN)
    assert get(port)[0] == 401
    assert get(port, authorization="Bearer wrong")[0] == 401
    assert get(port, authorization=basic("prometheus", "wrong"))[0] == 401
    assert get(port, authorization="Basic not-base64!")[0] == 401
    for good in (f"Bearer {TOKEN}", basic("prometheus", TOKEN)):
        status, body = get(port, authorization=good)
        assert status == 200 and "omnispindle_tasks" in body


def test_a_read_serves_every_scrape_within_the_cache_interval(serve, client, record_statements):
    """Each GET recomputed the views over the whole table; parallel scrapes each did."""
    port = serve(cache_seconds=600)
    client.submit_task("first")
    log = record_statements()
    bodies: list[str] = []
    scrapers = [threading.Thread(target=lambda: bodies.append(scrape(port))) for _ in range(8)]
    for scraper in scrapers:
        scraper.start()
    for scraper in scrapers:
        scraper.join()
    client.submit_task("second")
    bodies.append(scrape(port))
    assert log.names.count("task_type_metrics") == 1
    assert len(bodies) == 9 and len({body.split("omnispindle_scrape")[0] for body in bodies}) == 1
    assert ("omnispindle_tasks", (("state", "pending"), ("task_type", "second"))) not in parse(
        bodies[-1]
    )[1]


def test_without_a_cache_each_scrape_reads_anew(serve, client):
    port = serve(cache_seconds=0)
    scrape(port)
    client.submit_task("later")
    assert sample(parse(scrape(port))[1], "omnispindle_tasks", task_type="later", state="pending")


def test_task_types_beyond_the_busiest_are_summed_as_other(serve, client):
    """20,000 task types gave a 20 MB scrape with 280,554 series."""
    busy = [{"task_type": f"busy-{n:02d}"} for n in range(10) for _ in range(3)]
    quiet = [{"task_type": f"quiet-{n:03d}"} for n in range(150)]
    client.submit_batch(busy + quiet)
    _, samples = parse(scrape(serve(max_task_types=10)))
    task_types = {
        dict(labels)["task_type"] for name, labels in samples if name == "omnispindle_tasks"
    }
    assert task_types == {f"busy-{n:02d}" for n in range(10)} | {"(other)"}
    assert sample(samples, "omnispindle_tasks", task_type="(other)", state="pending") == 150
    assert sample(samples, "omnispindle_tasks", task_type="busy-03", state="pending") == 3
    pending = [
        value
        for (name, labels), value in samples.items()
        if name == "omnispindle_tasks" and dict(labels)["state"] == "pending"
    ]
    assert sum(pending) == 180


def test_the_command_answers_its_first_scrape_with_a_complete_page(dsn, client):
    """The first scrape after a start was an empty page (0 bytes, 200) in 2 of 5 starts."""
    client.submit_task("later")
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "omnispindle", "metrics", "--dsn", dsn, "--port", str(port)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = poll(functools.partial(_first_answer, port), DEADLINE)
            assert "omnispindle_tasks{" in first
        finally:
            process.terminate()
            process.communicate(timeout=DEADLINE)


def _first_answer(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None  # not listening yet: refused, which Prometheus reports as down


def test_the_command_takes_its_token_from_the_environment(dsn):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "omnispindle", "metrics", "--dsn", dsn, "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "OMNISPINDLE_METRICS_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(lambda: _status(port) == 401, DEADLINE)
        assert get(port, authorization=f"Bearer {TOKEN}")[0] == 200
    finally:
        process.terminate()
        process.communicate(timeout=DEADLINE)


def _status(port: int) -> int | None:
    try:
        return get(port)[0]
    except OSError:
        return None


def _status_for_host(port: int, host: str) -> int | None:
    """The status of a scrape at ``port`` with ``Host: host``; None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", "/metrics", headers={"Host": host})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_the_command_without_a_token_answers_only_this_machines_names(dsn):
    # A page of another site whose name a DNS rebinding points at 127.0.0.1 is
    # of the same origin as the endpoint for the browser: it could read the
    # metrics (task types, worker names and hosts). Its requests carry its name.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "omnispindle", "metrics", "--dsn", dsn, "--port", str(port)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "OMNISPINDLE_METRICS_TOKEN"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(lambda: process.poll() is not None or _status_for_host(port, "localhost"), DEADLINE)
        assert process.poll() is None, process.communicate()[1]
        own = [f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"]
        assert [_status_for_host(port, host) for host in own] == [200] * len(own)
        foreign = [f"rebound.example:{port}", "rebound.example", f"192.168.1.5:{port}"]
        assert [_status_for_host(port, host) for host in foreign] == [400] * len(foreign)
    finally:
        process.terminate()
        process.communicate(timeout=DEADLINE)


def test_a_token_lets_a_scrape_name_the_host_as_prometheus_knows_it(serve):
    # With a token the rebinding page cannot scrape, and a Prometheus elsewhere
    # names the machine as it knows it.
    port = serve(token=TOKEN)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        headers = {"Host": f"metrics.example:{port}", "Authorization": f"Bearer {TOKEN}"}
        connection.request("GET", "/metrics", headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()

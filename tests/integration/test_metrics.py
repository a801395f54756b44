"""Metrics: TaskQueue.get_metrics(), the Prometheus collector and ``omnispindle metrics``."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omnispindle import prometheus
from omnispindle.cli.main import main

from ..acceptance.test_quickstart import python_block, run_script
from ..acceptance.workers import ROOT, poll

DEADLINE = 30
SLEEP = 0.2
OK, BAD, IDLE, HOLD = 3, 2, 3, 1  # tasks per kind in the workload
STATES = ("blocked", "pending", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Workload:
    hold_id: int
    runner: str
    holder: str


def sleeps(task):
    time.sleep(SLEEP)  # the work being measured, not a wait for a condition
    return {"slept": SLEEP}


def fails_unless_flaky(task):
    if task["parameters"].get("flaky") and task["attempt"] > 1:
        return {"ok": True}
    raise RuntimeError(f"attempt {task['attempt']} fails")


@pytest.fixture
def workload(client, start_worker):
    """A settled queue with every state in it.

    ``ok``: 3 succeeded after 0.2 s. ``bad``: 2 failed after 2 attempts, 1
    succeeded on its second. ``idle`` (no worker runs it): 3 ready, one
    delayed by a minute, one cancelled, one blocked. ``hold``: 1 running on
    a worker of concurrency 2, until the test ends.
    """
    release, started = threading.Event(), threading.Event()

    def hold(task):
        started.set()
        release.wait(DEADLINE)
        return {}

    start_worker({"ok": sleeps, "bad": fails_unless_flaky}, name="runner")
    start_worker({"hold": hold}, name="holder", concurrency=2)
    finished = [client.submit_task("ok") for _ in range(OK)]
    finished += [client.submit_task("bad", max_retries=1, retry_backoff=0) for _ in range(BAD)]
    finished.append(client.submit_task("bad", {"flaky": True}, max_retries=1, retry_backoff=0))
    for _ in range(IDLE):
        client.submit_task("idle")
    client.submit_task("idle", delay=60)
    client.cancel_task(client.submit_task("idle"))
    hold_id = client.submit_task("hold")
    client.submit_task("idle", dependencies=[hold_id])
    client.wait_for_batch(finished, timeout=DEADLINE)
    assert started.wait(DEADLINE), "the hold task never started"
    yield Workload(hold_id=hold_id, runner="runner", holder="holder")
    release.set()


# Expected figures of the workload, per task type.
EXPECTED = {
    "ok": {"succeeded": OK, "finished_last_hour": OK, "retried_last_hour": 0},
    "bad": {
        "succeeded": 1,
        "failed": BAD,
        "finished_last_hour": BAD + 1,
        "retried_last_hour": BAD + 1,
    },
    "idle": {"blocked": 1, "pending": IDLE + 1, "cancelled": 1, "finished_last_hour": 1},
    "hold": {"running": HOLD},
}


# --- independent figures, straight from the tables ------------------------------------


def counts_by_state(conn) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT task_type, state::text, count(*) FROM omnispindle.tasks GROUP BY 1, 2"
    ).fetchall()
    return {(task_type, state): count for task_type, state, count in rows}


def finished_within(conn, window: str) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT task_type, state::text, count(*) FROM omnispindle.tasks"
        " WHERE finished_at > now() - %s::interval GROUP BY 1, 2",
        [window],
    ).fetchall()
    return {(task_type, state): count for task_type, state, count in rows}


def retried_last_hour(conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT task_type, count(*) FROM omnispindle.tasks"
        " WHERE finished_at > now() - interval '1 hour' AND attempts > 1"
        " GROUP BY 1"
    ).fetchall()
    return dict(rows)


def oldest_ready_seconds(conn) -> dict[str, float]:
    rows = conn.execute(
        "SELECT task_type, extract(epoch FROM now() - min(run_after))::float8"
        " FROM omnispindle.tasks WHERE state = 'pending' AND run_after <= now()"
        " GROUP BY 1"
    ).fetchall()
    return dict(rows)


def worker_figures(conn) -> dict[str, dict]:
    rows = conn.execute(
        "SELECT w.name, w.id::text, w.concurrency,"
        " (SELECT count(*) FROM omnispindle.tasks t WHERE t.worker_id = w.id"
        "  AND t.state = 'running'),"
        " (SELECT count(*) FROM omnispindle.tasks t WHERE t.worker_id = w.id"
        "  AND t.finished_at > now() - interval '1 hour'),"
        " (SELECT count(*) FROM omnispindle.tasks t WHERE t.worker_id = w.id"
        "  AND t.state = 'failed' AND t.finished_at > now() - interval '1 hour')"
        " FROM omnispindle.workers w"
    ).fetchall()
    return {
        name: {
            "id": worker_id,
            "concurrency": concurrency,
            "running_tasks": running,
            "finished_last_hour": finished,
            "failed_last_hour": failed,
        }
        for name, worker_id, concurrency, running, finished, failed in rows
    }


# --- get_metrics() --------------------------------------------------------------------


def test_metrics_of_a_known_workload_match_the_tables(queue, conn, workload):
    metrics = queue.get_metrics()
    rows = {row["task_type"]: row for row in metrics["task_types"]}
    assert set(rows) == set(EXPECTED)
    states, minute, hour = (
        counts_by_state(conn),
        finished_within(conn, "1 minute"),
        finished_within(conn, "1 hour"),
    )
    for task_type, row in rows.items():
        for state in STATES:
            assert row[state] == states.get((task_type, state), 0)
            assert row[state] == EXPECTED[task_type].get(state, 0), (task_type, state)
        for state in FINISHED:
            assert row[f"{state}_last_minute"] == minute.get((task_type, state), 0)
            assert row[f"{state}_last_hour"] == hour.get((task_type, state), 0)
        assert row["finished_last_minute"] == sum(minute.get((task_type, s), 0) for s in FINISHED)
        assert row["finished_last_hour"] == EXPECTED[task_type].get("finished_last_hour", 0)
        assert row["retried_last_hour"] == retried_last_hour(conn).get(task_type, 0)
        assert row["retried_last_hour"] == EXPECTED[task_type].get("retried_last_hour", 0)
    assert rows["bad"]["failure_rate_last_hour"] == pytest.approx(BAD / (BAD + 1))
    assert rows["bad"]["retry_rate_last_hour"] == 1.0
    assert rows["ok"]["failure_rate_last_hour"] == 0.0
    assert rows["hold"]["failure_rate_last_hour"] is None  # nothing finished
    assert isinstance(metrics["collected_at"], datetime)


def test_percentiles_and_ages_are_sane(queue, conn, workload):
    rows = {row["task_type"]: row for row in queue.get_metrics()["task_types"]}
    for task_type in ("ok", "bad"):
        for kind in ("wait", "run"):
            p50, p95, p99 = (rows[task_type][f"{kind}_{p}_seconds"] for p in ("p50", "p95", "p99"))
            assert 0 <= p50 <= p95 <= p99, (task_type, kind)
    assert rows["ok"]["run_p50_seconds"] >= SLEEP
    assert rows["hold"]["run_p50_seconds"] is None  # still running: not measured yet
    oldest = oldest_ready_seconds(conn)
    assert set(oldest) == {"idle"}  # the delayed task is not ready
    # Read a moment apart, so the table's figure is the later one.
    assert 0 < rows["idle"]["oldest_ready_seconds"] <= oldest["idle"]
    assert rows["ok"]["oldest_ready_seconds"] is None


def always_fails(task):
    raise RuntimeError(f"attempt {task['attempt']} fails")


def test_a_task_cancelled_while_its_retry_waits_measures_no_wait(queue, client, conn, start_worker):
    # Its start is that of the failed attempt, before the backoff's run_after:
    # a wait of minus the backoff (-40 s) came out as every quantile.
    start_worker({"flop": always_fails})
    cancelled = client.submit_task("flop", max_retries=3, retry_backoff=60)
    poll(lambda: client.get_task(cancelled)["error"], DEADLINE)
    client.cancel_task(cancelled)
    row = next(r for r in queue.get_metrics()["task_types"] if r["task_type"] == "flop")
    assert row["cancelled_last_hour"] == 1
    assert [row[f"wait_{p}_seconds"] for p in ("p50", "p95", "p99")] == [None, None, None]


def test_worker_figures_and_utilisation(queue, conn, workload):
    workers = {row["name"]: row for row in queue.get_metrics()["workers"]}
    expected = worker_figures(conn)
    assert set(workers) == {workload.runner, workload.holder}
    for name, figures in expected.items():
        for key, value in figures.items():
            assert workers[name][key] == value, (name, key)
        assert workers[name]["state"] == "active"
        assert 0 <= workers[name]["heartbeat_age_seconds"] < DEADLINE
    assert workers[workload.holder]["utilisation"] == 0.5
    assert workers[workload.holder]["running_tasks"] == HOLD
    assert workers[workload.runner]["utilisation"] == 0.0
    assert workers[workload.runner]["finished_last_hour"] == OK + BAD + 1
    assert workers[workload.runner]["failed_last_hour"] == BAD


def test_totals_sum_the_task_types(queue, conn, workload):
    metrics = queue.get_metrics()
    totals = metrics["totals"]
    by_state = counts_by_state(conn)
    for state in STATES:
        assert totals[state] == sum(n for (_, s), n in by_state.items() if s == state)
    for key in (
        "finished_last_minute",
        "finished_last_hour",
        "failed_last_hour",
        "retried_last_hour",
    ):
        assert totals[key] == sum(row[key] for row in metrics["task_types"])
    assert totals["finished_last_hour"] == OK + BAD + 1 + 1
    assert totals["failure_rate_last_hour"] == pytest.approx(BAD / (OK + BAD + 1))
    assert totals["workers"] == {"active": 2, "stopped": 0, "dead": 0}


def test_an_empty_queue_has_zero_totals_and_no_rows(queue):
    metrics = queue.get_metrics()
    assert metrics["task_types"] == [] and metrics["workers"] == []
    assert metrics["totals"]["pending"] == 0
    assert metrics["totals"]["failure_rate_last_hour"] is None
    assert metrics["totals"]["oldest_ready_seconds"] is None


# --- Prometheus -----------------------------------------------------------------------


def parse(text: str) -> tuple[dict, dict[tuple, float]]:
    """The families by name, and every sample keyed by (name, sorted labels)."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    return families, samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE) as response:
        return response.read().decode()


@pytest.fixture
def endpoint(queue):
    """The queue's metrics served on a free port; yields the port."""
    server = prometheus.serve(queue, 0, "127.0.0.1", cache_seconds=0)
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_the_endpoint_serves_the_tables_at_scrape_time(queue, conn, workload, endpoint):
    _, samples = parse(scrape(endpoint))
    states, hour = counts_by_state(conn), finished_within(conn, "1 hour")
    for task_type in EXPECTED:
        for state in STATES:
            assert sample(
                samples, "omnispindle_tasks", task_type=task_type, state=state
            ) == states.get((task_type, state), 0)
        for state in FINISHED:
            assert sample(
                samples, "omnispindle_tasks_finished_last_hour", task_type=task_type, state=state
            ) == hour.get((task_type, state), 0)
    assert (
        sample(samples, "omnispindle_tasks_finished_last_minute", task_type="bad", state="failed")
        == BAD
    )
    assert sample(samples, "omnispindle_task_failure_ratio", task_type="bad") == pytest.approx(
        BAD / (BAD + 1)
    )
    assert sample(samples, "omnispindle_task_retry_ratio", task_type="bad") == 1.0
    assert sample(samples, "omnispindle_task_run_seconds", task_type="ok", quantile="0.5") >= SLEEP
    assert sample(samples, "omnispindle_oldest_ready_task_age_seconds", task_type="idle") > 0
    assert sample(samples, "omnispindle_oldest_ready_task_age_seconds", task_type="ok") == 0
    assert sample(samples, "omnispindle_workers", state="active") == 2


def test_the_endpoint_reads_the_tables_anew_at_each_scrape(client, endpoint):
    _, before = parse(scrape(endpoint))
    assert ("omnispindle_tasks", (("state", "pending"), ("task_type", "later"))) not in before
    client.submit_task("later")
    _, after = parse(scrape(endpoint))
    assert sample(after, "omnispindle_tasks", task_type="later", state="pending") == 1


def test_worker_series_carry_the_worker_name_and_id(conn, workload, endpoint):
    _, samples = parse(scrape(endpoint))
    workers = worker_figures(conn)
    for name, figures in workers.items():
        labels = {"worker": name, "worker_id": figures["id"]}
        assert (
            sample(samples, "omnispindle_worker_running_tasks", **labels)
            == figures["running_tasks"]
        )
        assert (
            sample(samples, "omnispindle_worker_tasks_finished_last_hour", **labels)
            == figures["finished_last_hour"]
        )
    holder = {"worker": workload.holder, "worker_id": workers[workload.holder]["id"]}
    assert sample(samples, "omnispindle_worker_utilization_ratio", **holder) == 0.5


def test_names_help_and_units_follow_prometheus_conventions(workload, endpoint):
    families, samples = parse(scrape(endpoint))
    assert set(families) == {family.name for family in prometheus.FAMILIES}
    for name, family in families.items():
        assert re.fullmatch(r"omnispindle_[a-z0-9_]+", name), name
        assert family.documentation, f"{name} has no HELP"
        assert family.type == "gauge" and not name.endswith("_total"), name
        # A time is in seconds and says so; a fraction is a ratio.
        words = name.split("_")
        if {"age", "duration", "wait", "run", "latency", "time"} & set(words):
            assert name.endswith("_seconds"), name
        if {"rate", "ratio", "utilization", "utilisation", "fraction"} & set(words):
            assert name.endswith("_ratio"), name
    for (name, labels), value in samples.items():
        if name.endswith("_ratio"):
            assert 0 <= value <= 1, (name, labels)
        for label, label_value in labels:
            if label == "quantile":
                assert 0 < float(label_value) < 1


def test_paused_and_limited_types_and_the_demand_are_exported(client, queue, endpoint):
    client.submit_batch([{"task_type": "capped"} for _ in range(5)])
    client.submit_batch([{"task_type": "held"} for _ in range(2)])
    client.submit_task("free")
    client.set_task_type_limit("capped", max_running=2, starts_per_second=4)
    client.pause_task_type("held")
    _, samples = parse(scrape(endpoint))
    assert sample(samples, "omnispindle_task_type_paused", task_type="held") == 1
    assert sample(samples, "omnispindle_task_type_max_running", task_type="capped") == 2
    assert sample(samples, "omnispindle_task_type_max_starts_per_second", task_type="capped") == 4
    assert sample(samples, "omnispindle_tasks_held_back", task_type="capped") == 0
    assert sample(samples, "omnispindle_task_demand") == 3  # 2 capped, 1 free, none held
    figures = queue.get_metrics()
    assert (figures["paused"], figures["totals"]["demand"]) == (["held"], 3)
    assert [limit["task_type"] for limit in figures["limits"]] == ["capped"]


def test_scrape_duration_is_reported(endpoint):
    _, samples = parse(scrape(endpoint))
    assert 0 <= sample(samples, "omnispindle_scrape_duration_seconds") < DEADLINE


# --- the command ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("omnispindle: "), err
    return lines[0]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnispindle", *args]


def test_once_prints_an_exposition_that_parses(capsys, dsn, workload):
    capsys.readouterr()
    assert main(["metrics", "--dsn", dsn, "--once"]) == 0
    out = capsys.readouterr().out
    _, samples = parse(out)
    assert sample(samples, "omnispindle_tasks", task_type="ok", state="succeeded") == OK


def test_a_busy_port_is_one_line_exit_1_before_anything_starts(empty_dsn):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The database has no schema: reaching it first would fail differently.
        done = subprocess.run(
            command("metrics", "--dsn", empty_dsn, "--port", str(port), "--addr", "127.0.0.1"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    assert done.returncode == 1
    assert one_error_line(done.stderr).startswith(f"omnispindle: port {port} is in use")
    assert done.stdout == ""


def test_the_command_serves_until_sigterm(dsn, client):
    client.submit_task("later")
    port = free_port()
    process = subprocess.Popen(
        command(
            "--log-level",
            "WARNING",
            "metrics",
            "--dsn",
            dsn,
            "--port",
            str(port),
            "--addr",
            "127.0.0.1",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = poll(lambda: _try_scrape(port), DEADLINE)
        assert sample(parse(text)[1], "omnispindle_tasks", task_type="later", state="pending") == 1
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == ""


def _try_scrape(port: int) -> str | None:
    try:
        text = scrape(port)
    except OSError:
        return None  # not listening yet
    # Until the collector is registered, the endpoint serves no omnispindle metric.
    return text if "omnispindle_tasks" in text else None


def test_without_prometheus_client_the_command_names_the_extra(capsys, dsn, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    capsys.readouterr()
    assert main(["metrics", "--dsn", dsn, "--once"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "omnispindle[metrics]" in line


# --- the README -----------------------------------------------------------------------


def test_the_readme_metrics_example_runs(tmp_path, dsn):
    done = run_script(python_block("### Metrics"), tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert "resize" in done.stdout

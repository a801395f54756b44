"""Peer benchmarks: procrastinate and pgqueuer run the bench scenarios on a real server."""

from __future__ import annotations

import psycopg
import pytest

pytest.importorskip("procrastinate")
pytest.importorskip("pgqueuer")
pytest.importorskip("psutil")

from omnispindle.bench import peers as bench_peers
from omnispindle.bench import runner
from omnispindle.bench.peers import PEERS, PeerUnavailableError, run_peer
from omnispindle.bench.workflows import BenchmarkError

DRAIN_KEYS = {
    "system",
    "scenario",
    "tasks",
    "workers",
    "tasks_per_s",
    "worker_cpu_s_per_1k",
    "pg_cpu_s_per_1k",
}
ENQUEUE_KEYS = {"system", "scenario", "tasks", "bulk_per_s", "single_per_s"}
LATENCY_KEYS = {"system", "scenario", "samples", "p50_ms", "p99_ms"}
STEADY_KEYS = {
    "system",
    "scenario",
    "workers",
    "concurrency",
    "seconds",
    "tasks",
    "offered_per_s",
    "completed_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "table_mb_start",
    "table_mb_max",
    "table_mb_end",
    "wal_mb",
}


def peer_count(server_dsn: str, peer: str, statement: str, **params) -> int:
    """A figure read from the peer's own database after its run."""
    with psycopg.connect(bench_peers.prepare_database(server_dsn, peer)) as conn:
        return bench_peers.fetch_value(conn, statement, params)


@pytest.mark.parametrize("peer", PEERS)
def test_drain_runs_every_task(server_dsn, peer):
    result = run_peer(peer, "drain", server_dsn, tasks=300, runs=1, workers=1)

    assert set(result) == DRAIN_KEYS
    assert (result["system"], result["scenario"], result["tasks"], result["workers"]) == (
        peer,
        "drain",
        300,
        1,
    )
    assert result["tasks_per_s"] > 0
    assert result["worker_cpu_s_per_1k"] >= 0
    assert result["pg_cpu_s_per_1k"] is None or result["pg_cpu_s_per_1k"] >= 0
    assert peer_count(server_dsn, peer, f"{peer}_done", tasks=["noop"]) == 300


@pytest.mark.parametrize("peer", PEERS)
def test_enqueue_stores_the_bulk_and_the_singles(server_dsn, peer):
    result = run_peer(peer, "enqueue", server_dsn, tasks=500, runs=1)

    assert set(result) == ENQUEUE_KEYS
    assert (result["system"], result["scenario"], result["tasks"]) == (peer, "enqueue", 500)
    assert result["bulk_per_s"] > 0 and result["single_per_s"] > 0
    # 500 in bulk, then N/10 singles but at least 1,000
    assert peer_count(server_dsn, peer, f"{peer}_queued") == 1_500


@pytest.mark.parametrize("peer", PEERS)
def test_latency_samples_every_probe(server_dsn, peer):
    result = run_peer(peer, "latency", server_dsn, runs=1, concurrency=4)

    assert set(result) == LATENCY_KEYS
    assert (result["system"], result["scenario"], result["samples"]) == (peer, "latency", 200)
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert peer_count(server_dsn, peer, "peer_latency_samples") == 200


@pytest.mark.parametrize("peer", PEERS)
def test_a_steady_run_feeds_naps_at_its_rate_and_runs_them_all(server_dsn, peer):
    result = run_peer(peer, "steady", server_dsn, workers=1, concurrency=8, rate=200, seconds=1.5)

    assert set(result) == STEADY_KEYS
    assert (result["system"], result["scenario"], result["workers"]) == (peer, "steady", 1)
    assert 200 <= result["tasks"] <= 1.5 * 200  # what 1.5 s at 200 a second submits
    assert result["offered_per_s"] == pytest.approx(200, rel=0.2)
    assert 0 < result["completed_per_s"] <= result["offered_per_s"]
    assert 0 <= result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["table_mb_max"] >= result["table_mb_start"] > 0
    assert result["wal_mb"] > 0
    assert peer_count(server_dsn, peer, f"{peer}_done", tasks=["nap"]) == result["tasks"]


@pytest.mark.parametrize("peer", PEERS)
def test_a_steady_run_to_a_depth_tops_the_queue_up_and_runs_every_nap(server_dsn, peer):
    result = run_peer(peer, "steady", server_dsn, workers=1, concurrency=8, depth=40, seconds=1.5)

    assert set(result) == STEADY_KEYS | {"depth"}
    assert result["depth"] == 40
    assert result["tasks"] > 40  # the first top-up, then more as the worker ran them
    assert 0 < result["completed_per_s"] <= result["offered_per_s"]
    assert peer_count(server_dsn, peer, f"{peer}_done", tasks=["nap"]) == result["tasks"]


def test_a_steady_run_at_a_share_of_the_drain_offers_the_peers_the_same_rate(queue, monkeypatch):
    offered = {}

    def peer_run(peer, scenario, dsn, **options):
        offered[peer] = options["rate"]
        return {"system": peer, "scenario": scenario}

    monkeypatch.setattr(runner, "run_peer", peer_run)
    options = {"share": 0.5, "tasks": 2_000, "seconds": 1.5, "workers_count": 1}
    ours, _theirs = runner.run(queue, "steady", {**options, "concurrency": 8}, ["pgqueuer"])

    assert ours["share"] == 0.5 and ours["drain_per_s"] > 0
    assert offered == {"pgqueuer": 0.5 * ours["drain_per_s"]}
    assert ours["offered_per_s"] == pytest.approx(offered["pgqueuer"], rel=0.2)


def test_a_steady_run_to_no_depth_is_refused(server_dsn):
    with pytest.raises(BenchmarkError, match="depth of at least 1"):
        run_peer("pgqueuer", "steady", server_dsn, depth=0, seconds=1)


def test_a_steady_run_without_a_rate_is_refused(server_dsn):
    with pytest.raises(BenchmarkError, match="rate and seconds"):
        run_peer("pgqueuer", "steady", server_dsn, rate=0, seconds=1)


def test_peers_run_with_our_scenarios_defaults_where_none_was_given():
    given = {"rate": 300.0}
    options = runner.peer_options("steady", {**runner.defaults_of("steady"), **given})
    assert options == {
        "tasks": 20_000,
        "rate": 300.0,
        "depth": None,
        "seconds": 60.0,
        "workers": 2,
        "concurrency": 32,
    }


@pytest.mark.parametrize(
    ("peer", "scenario", "message"),
    [
        ("celery", "drain", "unknown peer 'celery'"),
        ("pgqueuer", "recovery", "unknown scenario 'recovery'"),
    ],
)
def test_unknown_peer_or_scenario_raises(server_dsn, peer, scenario, message):
    with pytest.raises(PeerUnavailableError, match=message) as raised:
        run_peer(peer, scenario, server_dsn)
    assert isinstance(raised.value, BenchmarkError)


@pytest.mark.parametrize("missing", ["procrastinate", "psutil"])
def test_a_missing_package_raises(server_dsn, monkeypatch, missing):
    monkeypatch.setattr(bench_peers, "_importable", lambda package: package != missing)

    with pytest.raises(PeerUnavailableError, match=f"{missing} is not installed"):
        run_peer("procrastinate", "drain", server_dsn)


def test_available_peers_are_those_that_import(monkeypatch):
    assert bench_peers.available_peers() == list(PEERS)

    monkeypatch.setattr(bench_peers, "_importable", lambda package: package != "procrastinate")
    assert bench_peers.available_peers() == ["pgqueuer"]

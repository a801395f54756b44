"""Peer benchmarks: procrastinate and pgqueuer run the bench scenarios on a real server."""

from __future__ import annotations

import psycopg
import pytest

pytest.importorskip("procrastinate")
pytest.importorskip("pgqueuer")
pytest.importorskip("psutil")

from omnispindle.bench import peers as bench_peers
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

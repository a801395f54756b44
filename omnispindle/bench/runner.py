"""Runs one ``omnispindle bench`` scenario, and the same scenario on peers, with ratios."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from omnispindle.bench import autoscale as bench_autoscale
from omnispindle.bench import cpu as bench_cpu
from omnispindle.bench import fairness as bench_fairness
from omnispindle.bench import fleet as bench_fleet
from omnispindle.bench import scheduling as bench_scheduling
from omnispindle.bench import soak as bench_soak
from omnispindle.bench import steady as bench_steady
from omnispindle.bench import throughput as bench_throughput
from omnispindle.bench import workflows as bench
from omnispindle.bench.peers import PEERS, run_peer
from omnispindle.bench.peers import SCENARIOS as PEER_SCENARIOS
from omnispindle.task_queue import TaskQueue


def dashboard(queue: TaskQueue, tasks: int = 1_000_000, runs: int = 7) -> dict[str, Any]:
    """The dashboard scenario, imported on use: it needs omnispindle[dashboard]."""
    from omnispindle.bench.dashboard import dashboard as bench_dashboard

    return bench_dashboard(queue, tasks, runs)


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "enqueue": bench_throughput.enqueue,
    "drain": bench_throughput.drain,
    "scheduling": bench_scheduling.scheduling,
    "cpu": bench_cpu.cpu,
    "autoscale": bench_autoscale.autoscale,
    "fairness": bench_fairness.fairness,
    "latency": bench_throughput.latency,
    "dag": bench.dag,
    "recovery": bench.recovery,
    "soak": bench_soak.soak,
    "steady": bench_steady.steady,
    "dashboard": dashboard,
    "fleet": bench_fleet.fleet,
}
# Which figures are better when higher; the ratio column says how many times
# better Omnispindle did than the peer.
HIGHER_IS_BETTER = {
    "tasks_per_s": True,
    "completed_per_s": True,
    "bulk_per_s": True,
    "single_per_s": True,
    "worker_cpu_s_per_1k": False,
    "pg_cpu_s_per_1k": False,
    "p50_ms": False,
    "p99_ms": False,
}


def run(
    queue: TaskQueue, scenario: str, options: dict[str, Any], peers: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Our figures first, then each peer's from the same run, each with its ratios."""
    if scenario == "steady" and options.get("share") is not None:
        options = bench_steady.rate_from_share(queue, {**defaults_of(scenario), **options})
    ours = SCENARIOS[scenario](queue, **options)
    rows = [ours]
    for peer in peers:
        theirs = run_peer(
            peer,
            scenario,
            queue.dsn,
            **peer_options(scenario, {**defaults_of(scenario), **options}),
        )
        rows.append({**theirs, **ratios(ours, theirs)})
    return rows


def defaults_of(scenario: str) -> dict[str, Any]:
    """Our scenario's default options, which a peer runs with where none was given."""
    parameters = inspect.signature(SCENARIOS[scenario]).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def peer_options(scenario: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ours that a peer run takes, under its names."""
    names = {
        "tasks": "tasks",
        "runs": "runs",
        "workers_count": "workers",
        "concurrency": "concurrency",
        "rate": "rate",
        "depth": "depth",
        "seconds": "seconds",
    }
    return {names[k]: v for k, v in options.items() if k in names}


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """``x_<figure>``: how many times better ours is (above 1 means better)."""
    found: dict[str, float | None] = {}
    for figure, higher in HIGHER_IS_BETTER.items():
        if figure in ours and figure in theirs:
            a, b = ours[figure], theirs[figure]
            found[f"x_{figure}"] = None if not a or not b else round(a / b if higher else b / a, 2)
    return found


def check_peers(scenario: str, peers: Iterable[str]) -> list[str]:
    """The peers asked for, refused with a clear message where they cannot run."""
    chosen = list(peers)
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        raise bench.BenchmarkError(
            f"unknown peer(s) {', '.join(unknown)}; the peers are {', '.join(PEERS)}"
        )
    if chosen and scenario not in PEER_SCENARIOS:
        raise bench.BenchmarkError(f"peers run only the {', '.join(PEER_SCENARIOS)} scenarios")
    return chosen

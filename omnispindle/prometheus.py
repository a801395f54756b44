"""Prometheus metrics of a queue, read from its views at every scrape.

Needs ``prometheus-client`` (``pip install 'omnispindle[metrics]'``); it is
imported only when a function here is called.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from omnispindle._db.pool import Database
from omnispindle._observe.metrics import Snapshot, snapshot
from omnispindle.errors import ConfigurationError
from omnispindle.states import FINISHED_STATES, TaskState

QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
WORKER_LABELS = ("worker", "worker_id")


@dataclass(frozen=True)
class Family:
    """One metric: its name, help text and label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


FAMILIES = (
    Family("omnispindle_tasks", "Tasks in each state.", ("task_type", "state")),
    Family(
        "omnispindle_tasks_finished_last_minute",
        "Tasks that finished in the last minute, by final state.",
        ("task_type", "state"),
    ),
    Family(
        "omnispindle_tasks_finished_last_hour",
        "Tasks that finished in the last hour, by final state.",
        ("task_type", "state"),
    ),
    Family(
        "omnispindle_tasks_retried_last_hour",
        "Tasks finished in the last hour that took more than one attempt.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_failure_ratio",
        "Failed / (succeeded + failed) over the last hour; absent without such tasks.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_retry_ratio",
        "Retried / finished over the last hour; absent without finished tasks.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_queue_wait_seconds",
        "Quantiles of start time minus run_after, over tasks finished in the last hour.",
        ("task_type", "quantile"),
    ),
    Family(
        "omnispindle_task_run_seconds",
        "Quantiles of finish time minus start time, over tasks that succeeded or failed "
        "in the last hour.",
        ("task_type", "quantile"),
    ),
    Family(
        "omnispindle_oldest_ready_task_age_seconds",
        "How long the oldest ready (pending, due) task has waited; 0 when none is ready.",
        ("task_type",),
    ),
    Family("omnispindle_workers", "Registered workers in each state.", ("state",)),
    Family("omnispindle_worker_concurrency", "Tasks an active worker runs at once.", WORKER_LABELS),
    Family("omnispindle_worker_running_tasks", "Tasks an active worker is running.", WORKER_LABELS),
    Family(
        "omnispindle_worker_utilization_ratio",
        "Running tasks / concurrency of an active worker.",
        WORKER_LABELS,
    ),
    Family(
        "omnispindle_worker_tasks_finished_last_hour",
        "Tasks an active worker finished in the last hour.",
        WORKER_LABELS,
    ),
    Family(
        "omnispindle_worker_tasks_failed_last_hour",
        "Tasks an active worker failed for good in the last hour.",
        WORKER_LABELS,
    ),
    Family(
        "omnispindle_worker_heartbeat_age_seconds",
        "Time since an active worker's last heartbeat.",
        WORKER_LABELS,
    ),
    Family("omnispindle_scrape_duration_seconds", "Time taken to read the metrics at this scrape."),
)


def client() -> Any:
    """The ``prometheus_client`` module.

    Raises:
        ConfigurationError: it is not installed.
    """
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:
        raise ConfigurationError(
            "Prometheus metrics need prometheus-client: pip install 'omnispindle[metrics]'"
        ) from None
    return prometheus_client


class QueueCollector:
    """A ``prometheus_client`` collector that reads the queue's views at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> Iterator[Any]:
        """The families without samples, so that registering runs no query."""
        return iter(_empty_families().values())

    def collect(self) -> Iterator[Any]:
        """Every family, with the values in the tables now."""
        started = time.perf_counter()
        gauges = _empty_families()
        add_samples(gauges, self.db.run(snapshot()))
        gauges["omnispindle_scrape_duration_seconds"].add_metric([], time.perf_counter() - started)
        return iter(gauges.values())


def add_samples(gauges: dict[str, Any], figures: Snapshot) -> None:
    """Fill the families from a metrics snapshot (``TaskQueue.get_metrics()``)."""
    for task_type in figures["task_types"]:
        _add_task_type(gauges, task_type)
    for worker in figures["workers"]:
        # Stopped and dead workers stay in the table for good; as series they
        # would only pile up. omnispindle_workers{state} counts them.
        if worker["state"] == "active":
            _add_worker(gauges, worker)
    for state, count in figures["totals"]["workers"].items():
        gauges["omnispindle_workers"].add_metric([state], count)


def _add_task_type(gauges: dict[str, Any], row: Mapping[str, Any]) -> None:
    task_type = row["task_type"]
    for state in TaskState:
        gauges["omnispindle_tasks"].add_metric([task_type, state.value], row[state.value])
    for state in sorted(FINISHED_STATES):
        for window in ("last_minute", "last_hour"):
            gauges[f"omnispindle_tasks_finished_{window}"].add_metric(
                [task_type, state.value], row[f"{state.value}_{window}"]
            )
    gauges["omnispindle_tasks_retried_last_hour"].add_metric([task_type], row["retried_last_hour"])
    _add_if_known(
        gauges["omnispindle_task_failure_ratio"], [task_type], row["failure_rate_last_hour"]
    )
    _add_if_known(gauges["omnispindle_task_retry_ratio"], [task_type], row["retry_rate_last_hour"])
    for quantile, column in QUANTILES:
        _add_if_known(
            gauges["omnispindle_task_queue_wait_seconds"],
            [task_type, quantile],
            row[f"wait_{column}_seconds"],
        )
        _add_if_known(
            gauges["omnispindle_task_run_seconds"],
            [task_type, quantile],
            row[f"run_{column}_seconds"],
        )
    gauges["omnispindle_oldest_ready_task_age_seconds"].add_metric(
        [task_type], row["oldest_ready_seconds"] or 0.0
    )


def _add_worker(gauges: dict[str, Any], row: Mapping[str, Any]) -> None:
    # Names need not be unique (two workers may be given one): the id keeps each
    # worker's series apart.
    labels = [row["name"], row["id"]]
    for name, column in (
        ("concurrency", "concurrency"),
        ("running_tasks", "running_tasks"),
        ("utilization_ratio", "utilisation"),
        ("tasks_finished_last_hour", "finished_last_hour"),
        ("tasks_failed_last_hour", "failed_last_hour"),
        ("heartbeat_age_seconds", "heartbeat_age_seconds"),
    ):
        gauges[f"omnispindle_worker_{name}"].add_metric(labels, row[column])


def _add_if_known(gauge: Any, labels: list[str], value: float | None) -> None:
    # No sample rather than NaN: the figure has nothing to measure yet.
    if value is not None:
        gauge.add_metric(labels, value)


def _empty_families() -> dict[str, Any]:
    gauge = client().core.GaugeMetricFamily
    return {
        family.name: gauge(family.name, family.help, labels=list(family.labels))
        for family in FAMILIES
    }


def registry(db: Database | None = None) -> Any:
    """A registry holding a [QueueCollector][omnispindle.prometheus.QueueCollector]
    on ``db``, or empty (register it later)."""
    found = client().CollectorRegistry(auto_describe=False)
    if db is not None:
        found.register(QueueCollector(db))
    return found


def exposition(db: Database) -> str:
    """The metrics in the Prometheus text format, read now."""
    text: bytes = client().generate_latest(registry(db))
    return text.decode()


def listen(port: int, addr: str, metrics_registry: Any) -> Any:
    """Serve ``metrics_registry`` over HTTP from a daemon thread.

    Returns:
        The HTTP server: ``server_port`` is the port bound (useful with port 0);
        ``shutdown()`` then ``server_close()`` stop it.

    Raises:
        ConfigurationError: the port is in use, or the address cannot be bound.
    """
    try:
        server, _thread = client().start_http_server(port, addr, registry=metrics_registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} is in use on {addr}: stop what listens there or pick another --port"
            ) from exc
        raise ConfigurationError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    return server


def serve(queue: Any, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve ``queue``'s metrics at ``http://addr:port/`` (any path) until ``shutdown()``.

    Returns:
        The HTTP server, as [listen][omnispindle.prometheus.listen].
    """
    return listen(port, addr, registry(queue.db))

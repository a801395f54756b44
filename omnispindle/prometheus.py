"""Prometheus metrics of a queue, read from its views at scrape time.

Needs ``prometheus-client`` (``pip install 'omnispindle[metrics]'``); it is
imported only when a function here is called. A read is cached for a few
seconds (parallel scrapes share one), and the task types beyond the busiest
``max_task_types`` are summed as one ``(other)`` type, so that neither the
database's work nor the number of series grows with every scraper or type.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from omnispindle._core import defaults
from omnispindle._db.pool import Database
from omnispindle._observe.endpoint import Endpoint
from omnispindle._observe.metrics import OTHER_TASK_TYPES, Snapshot, folded, snapshot
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
    Family(
        "omnispindle_tasks_unclaimable",
        "Ready tasks that no live worker can run while live workers run their type: "
        "none of those declares every capability they need.",
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
    Family(
        "omnispindle_task_type_paused",
        "1 for each paused task type: no worker claims its tasks.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_type_max_running",
        "The running limit of a limited task type, across every worker.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_type_max_running_per_group",
        "The running limit of each group of a limited task type, across every worker.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_type_max_starts_per_second_per_group",
        "The rate limit of each group of a limited task type, across every worker.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_type_max_starts_per_second",
        "The rate limit of a limited task type, across every worker.",
        ("task_type",),
    ),
    Family(
        "omnispindle_tasks_held_back",
        "Ready tasks of a limited task type that its limits hold back now.",
        ("task_type",),
    ),
    Family(
        "omnispindle_task_demand",
        "Tasks that could run at once now: running and ready, within limits "
        "(divide by a worker's concurrency for the processes to run).",
    ),
    Family(
        "omnispindle_scrape_duration_seconds",
        "Time taken to read these figures from the database (a cached read keeps its own).",
    ),
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
    """A ``prometheus_client`` collector that reads the queue's views at scrape time.

    Args:
        db: the queue's database.
        cache_seconds: a read serves every scrape for this long (0: read at each).
        max_task_types: task types with series of their own, the busiest first;
            the others are summed as ``task_type="(other)"``.
    """

    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float = defaults.METRICS_CACHE_SECONDS,
        max_task_types: int = defaults.METRICS_MAX_TASK_TYPES,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.max_task_types = max_task_types
        self._lock = threading.Lock()  # parallel scrapes wait for one read
        self._read: tuple[float, Snapshot, float] | None = None  # when, figures, duration

    def describe(self) -> Iterator[Any]:
        """The families without samples, so that registering runs no query."""
        return iter(_empty_families().values())

    def collect(self) -> Iterator[Any]:
        """Every family, with the values in the tables now (or ``cache_seconds`` ago)."""
        figures, took = self._figures()
        gauges = _empty_families()
        add_samples(gauges, figures, self.max_task_types)
        gauges["omnispindle_scrape_duration_seconds"].add_metric([], took)
        return iter(gauges.values())

    def _figures(self) -> tuple[Snapshot, float]:
        with self._lock:
            now = time.monotonic()
            if self._read is None or now - self._read[0] >= self.cache_seconds:
                started = time.perf_counter()
                figures = self.db.run(snapshot())
                self._read = (now, figures, time.perf_counter() - started)
            return self._read[1], self._read[2]


def add_samples(
    gauges: dict[str, Any], figures: Snapshot, max_task_types: int | None = None
) -> None:
    """Fill the families from a metrics snapshot (``TaskQueue.get_metrics()``), with
    at most ``max_task_types`` task types of their own when given."""
    task_types: list[Mapping[str, Any]] = list(figures["task_types"])
    if max_task_types is not None:
        task_types = folded(figures["task_types"], max_task_types)
    for task_type in task_types:
        _add_task_type(gauges, task_type)
    _add_unclaimable(gauges, figures, task_types)
    for worker in figures["workers"]:
        # Stopped and dead workers stay in the table for good; as series they
        # would only pile up. omnispindle_workers{state} counts them.
        if worker["state"] == "active":
            _add_worker(gauges, worker)
    for state, count in figures["totals"]["workers"].items():
        gauges["omnispindle_workers"].add_metric([state], count)
    _add_scheduling(gauges, figures)


def _add_scheduling(gauges: dict[str, Any], figures: Snapshot) -> None:
    """Paused and limited task types (few: an operator sets each), and the demand."""
    for task_type in figures["paused"]:
        gauges["omnispindle_task_type_paused"].add_metric([task_type], 1)
    for limit in figures["limits"]:
        labels = [limit["task_type"]]
        _add_if_known(gauges["omnispindle_task_type_max_running"], labels, limit["max_running"])
        _add_if_known(
            gauges["omnispindle_task_type_max_running_per_group"],
            labels,
            limit["max_running_per_group"],
        )
        _add_if_known(
            gauges["omnispindle_task_type_max_starts_per_second_per_group"],
            labels,
            limit["starts_per_second_per_group"],
        )
        _add_if_known(
            gauges["omnispindle_task_type_max_starts_per_second"],
            labels,
            limit["starts_per_second"],
        )
        gauges["omnispindle_tasks_held_back"].add_metric(labels, limit["held_back"])
    gauges["omnispindle_task_demand"].add_metric([], figures["totals"]["demand"])


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


def _add_unclaimable(
    gauges: dict[str, Any], figures: Snapshot, task_types: list[Mapping[str, Any]]
) -> None:
    """A sample for each task type with series of its own (0 for most), the
    rest summed in ``(other)`` as their other figures are."""
    ready: Counter[str] = Counter()
    for stuck in figures["unclaimable"]:
        ready[stuck["task_type"]] += stuck["ready"]
    kept = {row["task_type"] for row in task_types} - {OTHER_TASK_TYPES}
    for row in task_types:
        task_type = row["task_type"]
        count = ready[task_type]
        if task_type == OTHER_TASK_TYPES:
            count = sum(n for name, n in ready.items() if name not in kept)
        gauges["omnispindle_tasks_unclaimable"].add_metric([task_type], count)


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


def registry(db: Database | None = None, **collector_options: Any) -> Any:
    """A registry holding a [QueueCollector][omnispindle.prometheus.QueueCollector]
    on ``db`` (with ``collector_options``), or empty (register it later)."""
    found = client().CollectorRegistry(auto_describe=False)
    if db is not None:
        found.register(QueueCollector(db, **collector_options))
    return found


def exposition(db: Database, **collector_options: Any) -> str:
    """The metrics in the Prometheus text format, read now."""
    text: bytes = client().generate_latest(registry(db, **collector_options))
    return text.decode()


def listen(
    port: int, addr: str, metrics_registry: Any, *, token: str | None = None, start: bool = True
) -> Endpoint:
    """Serve ``metrics_registry`` at ``/metrics`` over HTTP from a daemon thread.

    Args:
        token: when set, every scrape must carry it (``Authorization: Bearer
            TOKEN``, or basic auth with it as the password).
        start: False to bind the port now and listen only at ``start()``.

    Returns:
        The endpoint: ``server_port`` is the port bound (useful with port 0);
        ``shutdown()`` then ``server_close()`` stop it.

    Raises:
        ConfigurationError: the port is in use, or the address cannot be bound.
    """
    app = client().make_wsgi_app(metrics_registry)
    try:
        endpoint = Endpoint(port, addr, app, token)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} is in use on {addr}: stop what listens there or pick another --port"
            ) from exc
        raise ConfigurationError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    if start:
        endpoint.start()
    return endpoint


def serve(
    queue: Any,
    port: int,
    addr: str = defaults.METRICS_ADDRESS,
    *,
    token: str | None = None,
    cache_seconds: float = defaults.METRICS_CACHE_SECONDS,
    max_task_types: int = defaults.METRICS_MAX_TASK_TYPES,
) -> Endpoint:
    """Serve ``queue``'s metrics at ``http://addr:port/metrics`` until ``shutdown()``.

    Binds the loopback address unless told otherwise; see
    [QueueCollector][omnispindle.prometheus.QueueCollector] for the other options.

    Returns:
        The endpoint, as [listen][omnispindle.prometheus.listen].
    """
    metrics_registry = registry(
        queue.reads, cache_seconds=cache_seconds, max_task_types=max_task_types
    )
    return listen(port, addr, metrics_registry, token=token)

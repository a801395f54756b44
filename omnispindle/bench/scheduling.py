"""``omnispindle bench scheduling``: the drain with every scheduling feature on
against strict priority, alternating in one run.

"Scheduled" gives the benchmark's task type a running limit and a rate limit
that never bind (so every claim counts its running tasks and takes from its
bucket under the type's lock) and the aging strategy (so every claim orders it
in a pass of its own). What that costs shows in the rate and in each side's
CPU per thousand tasks: the workers' and the server's.
"""

from __future__ import annotations

from typing import Any

from omnispindle.bench.peers import medians
from omnispindle.bench.throughput import NOOP_TYPE, drain_once, workers
from omnispindle.bench.workflows import BenchmarkError
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

# The share of the strict rate the scheduled drain must keep.
TARGET_SHARE = 0.7
# High enough never to hold a task back: the cost is the bookkeeping alone.
NEVER_BINDING_RATE = 1_000_000.0
AGING_SECONDS = 1.0


def scheduling(
    queue: TaskQueue,
    tasks: int = 20_000,
    workers_count: int = 2,
    concurrency: int = 32,
    runs: int = 3,
    **_: Any,
) -> dict[str, Any]:
    """Medians of drains in each mode (strict priority, aging alone, limits alone,
    both: "scheduled"), run in turns, and the scheduled rate's share of the strict."""
    if runs < 1:
        raise BenchmarkError(f"a benchmark needs at least one run, got {runs}")
    client = TaskQueueClient(local_queue=queue)
    modes = {"strict": _strict, "aging": _aging, "limits": _limits, "scheduled": _scheduled}
    samples: dict[str, list[dict[str, float | None]]] = {mode: [] for mode in modes}

    def one(mode: str) -> dict[str, float | None]:
        modes[mode](client, workers_count * concurrency)
        with workers(queue, workers_count, concurrency) as pids:
            return drain_once(queue, pids, tasks)

    try:
        for _run in range(runs):  # in turns, so that a busy spell weighs on every mode
            for mode in modes:
                samples[mode].append(one(mode))
    finally:
        _strict(client, 0)
    figures = {mode: medians(found) for mode, found in samples.items()}
    strict, scheduled = figures["strict"]["tasks_per_s"], figures["scheduled"]["tasks_per_s"]
    share = None if not strict or scheduled is None else scheduled / strict
    return {
        "system": "omnispindle",
        "scenario": "scheduling",
        "tasks": tasks,
        "workers": workers_count,
        "concurrency": concurrency,
        **{
            f"{mode}_{name}": value
            for mode, found in figures.items()
            for name, value in found.items()
        },
        "share_of_strict": share,
        "met": share is not None and share >= TARGET_SHARE,
    }


def _strict(client: TaskQueueClient, _slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)
    client.set_task_type_strategy(NOOP_TYPE, "priority")


def _aging(client: TaskQueueClient, _slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)
    client.set_task_type_strategy(NOOP_TYPE, "aging", aging_seconds=AGING_SECONDS)


def _limits(client: TaskQueueClient, slots: int) -> None:
    client.set_task_type_strategy(NOOP_TYPE, "priority")
    client.set_task_type_limit(
        NOOP_TYPE,
        max_running=max(1, slots),
        starts_per_second=NEVER_BINDING_RATE,
        burst=int(NEVER_BINDING_RATE),
    )


def _scheduled(client: TaskQueueClient, slots: int) -> None:
    _limits(client, slots)
    client.set_task_type_strategy(NOOP_TYPE, "aging", aging_seconds=AGING_SECONDS)

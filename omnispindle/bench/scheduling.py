"""``omnispindle bench scheduling``: the drain with the scheduling features on,
one by one and together, against strict priority, in turns within one run.

The limits are a running limit and a rate limit that never bind, so every
claim counts the type's running tasks and takes from its bucket under the
type's lock. Aging and fair share order the type in a pass of its own; for
fair share the tasks are in ``GROUPS`` groups taking turns; in "fair_all"
each group has its own running limit and rate too, also never binding. A type
has one strategy, so "all on" is the limits with aging, and the limits with
fair share and the limits per group. What each costs shows in the
rate and in the CPU per thousand tasks of the workers and of the server.

With ``delayed``, each drain has that many tasks due a day later before it, in
the same groups, submitted first: what the claims pay for tasks not yet due.
"""

from __future__ import annotations

from typing import Any

from omnispindle._core import defaults
from omnispindle.bench import queries as bq
from omnispindle.bench.peers import medians
from omnispindle.bench.throughput import (
    NOOP_TYPE,
    checked_runs,
    drain_once,
    noop_entries,
    workers,
)
from omnispindle.client import TaskQueueClient
from omnispindle.task_queue import TaskQueue

# The share of the strict rate the scheduled drain must keep.
TARGET_SHARE = 0.7
# High enough never to hold a task back: the cost is the bookkeeping alone.
NEVER_BINDING_RATE = 1_000_000.0
AGING_SECONDS = 1.0
GROUPS = 10
DELAYED_SECONDS = 86_400.0  # the tasks due later are due the next day


def scheduling(
    queue: TaskQueue,
    tasks: int = 20_000,
    workers_count: int = 2,
    concurrency: int = 32,
    runs: int = 3,
    delayed: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """Medians of drains in each mode, run in turns, and the share of the strict
    rate that the slower of the two "all on" modes keeps; ``delayed`` tasks due
    the next day stand before each drain's."""
    client = TaskQueueClient(local_queue=queue)
    modes = {
        "strict": _strict,
        "aging": _aging,
        "fair": _fair,
        "limits": _limits,
        "aging_limits": _aging_limits,
        "fair_limits": _fair_limits,
        "fair_all": _fair_all,
    }
    samples: dict[str, list[dict[str, float | None]]] = {mode: [] for mode in modes}

    def one(mode: str) -> dict[str, float | None]:
        modes[mode](client, workers_count * concurrency)
        groups = GROUPS if "fair" in mode else 0
        _submit_delayed(client, delayed, groups)
        try:
            with workers(queue, workers_count, concurrency) as pids:
                return drain_once(queue, pids, tasks, groups)
        finally:
            queue.db.run(bq.delete_pending(NOOP_TYPE))

    try:
        for _run in range(
            checked_runs(runs)
        ):  # in turns, so that a busy spell weighs on every mode
            for mode in modes:
                samples[mode].append(one(mode))
    finally:
        _strict(client, 0)
    figures = {mode: medians(found) for mode, found in samples.items()}
    strict = figures["strict"]["tasks_per_s"]
    all_on = [figures[mode]["tasks_per_s"] for mode in ("aging_limits", "fair_all")]
    slowest = None if None in all_on else min(rate for rate in all_on if rate is not None)
    share = None if not strict or slowest is None else slowest / strict
    return {
        "system": "omnispindle",
        "scenario": "scheduling",
        "tasks": tasks,
        "workers": workers_count,
        "concurrency": concurrency,
        "delayed": delayed,
        **{
            f"{mode}_{name}": value
            for mode, found in figures.items()
            for name, value in found.items()
        },
        "share_of_strict": share,
        "met": share is not None and share >= TARGET_SHARE,
    }


def _submit_delayed(client: TaskQueueClient, count: int, groups: int) -> None:
    """``count`` no-op tasks due the next day, in ``groups`` groups taking turns if
    any, in batches as large as a batch may be."""
    for first in range(0, count, defaults.MAX_BATCH_SIZE):
        numbers = range(first, min(count, first + defaults.MAX_BATCH_SIZE))
        client.submit_batch(noop_entries(numbers, groups, delay=DELAYED_SECONDS))


def _strict(client: TaskQueueClient, _slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)
    client.set_task_type_strategy(NOOP_TYPE, "priority")


def _aging(client: TaskQueueClient, _slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)
    client.set_task_type_strategy(NOOP_TYPE, "aging", aging_seconds=AGING_SECONDS)


def _limits(client: TaskQueueClient, slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)  # a limit per group would keep fair share
    client.set_task_type_strategy(NOOP_TYPE, "priority")
    _never_binding_limits(client, slots)


def _fair(client: TaskQueueClient, _slots: int) -> None:
    client.clear_task_type_limit(NOOP_TYPE)
    client.set_task_type_strategy(NOOP_TYPE, "fair")


def _aging_limits(client: TaskQueueClient, slots: int) -> None:
    _limits(client, slots)
    client.set_task_type_strategy(NOOP_TYPE, "aging", aging_seconds=AGING_SECONDS)


def _fair_limits(client: TaskQueueClient, slots: int) -> None:
    _limits(client, slots)
    client.set_task_type_strategy(NOOP_TYPE, "fair")


def _fair_all(client: TaskQueueClient, slots: int) -> None:
    client.set_task_type_strategy(NOOP_TYPE, "fair")  # limits per group need it
    _never_binding_limits(
        client,
        slots,
        max_running_per_group=max(1, slots),
        starts_per_second_per_group=NEVER_BINDING_RATE,
    )


def _never_binding_limits(client: TaskQueueClient, slots: int, **per_group: Any) -> None:
    """A running limit of every slot and a rate no drain reaches, and the
    limits per group given."""
    client.set_task_type_limit(
        NOOP_TYPE,
        max_running=max(1, slots),
        starts_per_second=NEVER_BINDING_RATE,
        burst=int(NEVER_BINDING_RATE),
        **per_group,
    )

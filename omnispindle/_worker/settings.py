"""A worker's settings, checked once (see ``WorkerClient`` for their meaning)."""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass

from omnispindle._core import defaults, validation
from omnispindle._core.scaling import Bounds, bounds
from omnispindle._maintenance import history, retention
from omnispindle._maintenance.sweeper import SweeperConfig
from omnispindle.errors import ValidationError

_names = itertools.count(1)


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's validated settings."""

    name: str
    concurrency: int  # executors at once; where an auto-scaled pool starts
    poll_interval: float
    lease_timeout: float
    heartbeat_interval: float
    shutdown_timeout: float
    sweeper: SweeperConfig | None
    schedule_interval: float | None = None
    scaling: Bounds | None = None  # None: a fixed pool of ``concurrency``
    scale_down_after: float = defaults.SCALE_DOWN_AFTER


def default_name() -> str:
    """``HOST-PID-N``: unique across the hosts and processes of a fleet."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_names)}"


def worker_settings(
    *,
    concurrency: object,
    name: str | None,
    min_concurrency: object = None,
    max_concurrency: object = None,
    scale_down_after: object = defaults.SCALE_DOWN_AFTER,
    poll_interval: object,
    lease_timeout: object,
    heartbeat_interval: object,
    shutdown_timeout: object,
    sweep_interval: object,
    dead_worker_after: object,
    schedule_interval: object,
    retention_seconds: object,
    archive_after: object = None,
) -> WorkerSettings:
    """Check a worker's settings; a worker without a name gets ``default_name()``.

    Raises:
        ValidationError: a setting has the wrong type or range.
    """
    lease = validation.positive_number("lease_timeout", lease_timeout)
    if lease > defaults.MAX_LEASE_TIMEOUT:
        raise ValidationError(
            f"lease_timeout must be at most {defaults.MAX_LEASE_TIMEOUT:g} seconds (a day): "
            "heartbeats renew the lease"
        )
    # Checked also when this worker never sweeps: a typo should not wait for a config change.
    keep = retention.optional_horizon("retention", retention_seconds)
    archive = history.archive_horizon("archive_after", archive_after, keep)
    heartbeat = _heartbeat_within(lease, heartbeat_interval)
    limits = defaults.CONCURRENCY_RANGE
    scaling = bounds("concurrency", concurrency, min_concurrency, max_concurrency, limits)
    fixed = defaults.CONCURRENCY if concurrency is None else concurrency
    return WorkerSettings(
        name=name or default_name(),
        concurrency=scaling.start
        if scaling is not None
        else validation.int_in_range("concurrency", fixed, limits),
        poll_interval=validation.seconds("poll_interval", poll_interval),
        lease_timeout=lease,
        heartbeat_interval=heartbeat or lease * defaults.HEARTBEAT_SHARE,
        shutdown_timeout=validation.seconds("shutdown_timeout", shutdown_timeout),
        sweeper=None
        if sweep_interval is None
        else SweeperConfig(
            interval=validation.seconds("sweep_interval", sweep_interval),
            dead_worker_after=validation.seconds("dead_worker_after", dead_worker_after),
            retention=keep,
            archive_after=archive,
        ),
        schedule_interval=validation.optional_seconds("schedule_interval", schedule_interval),
        scaling=scaling,
        scale_down_after=validation.seconds("scale_down_after", scale_down_after),
    )


def _heartbeat_within(lease: float, heartbeat_interval: object) -> float | None:
    """The heartbeat interval, None for the default; one as long as the lease is refused:
    every lease would lapse before the next heartbeat renewed it, and the sweeper hand
    its task to another worker while it still runs."""
    heartbeat = validation.optional_positive_number("heartbeat_interval", heartbeat_interval)
    if heartbeat is not None and heartbeat >= lease:
        raise ValidationError(
            f"heartbeat_interval ({heartbeat:g} s) must be shorter than lease_timeout "
            f"({lease:g} s): each heartbeat renews the leases, which lapse otherwise and "
            "have their tasks run again"
        )
    return heartbeat

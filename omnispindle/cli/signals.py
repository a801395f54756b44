"""Stopping long-running commands cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("omnispindle.cli")


def on_stop_signals(stop: Callable[[], object]) -> None:
    """Call ``stop()`` on SIGTERM and SIGINT (the handler only asks; the loop exits)."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

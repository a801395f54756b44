"""A process's LISTEN connection listens only on the channels subscribed to in it:
a worker is not woken by every finished step of every worker."""

from __future__ import annotations

import threading

from omnispindle._db.notifier import FINISHED_CHANNEL, READY_CHANNEL, Notifier

DEADLINE = 30


class HeardNotifier(Notifier):
    """A notifier that records the channel of every wake, subscribed to or not."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.heard: list[str | None] = []

    def _wake(self, channel: str | None, payload: str = "") -> None:
        self.heard.append(channel)
        super()._wake(channel, payload)


def test_a_process_is_sent_only_the_channels_it_subscribed_to(dsn, conn):
    notifier = HeardNotifier(dsn)
    ready = threading.Event()
    try:
        notifier.subscribe(READY_CHANNEL, ready.set)
        assert notifier.connected.wait(DEADLINE)
        ready.clear()
        conn.execute("NOTIFY omnispindle_finished")
        conn.execute("NOTIFY omnispindle_ready")  # delivered after the first, if at all
        assert ready.wait(DEADLINE)
        assert FINISHED_CHANNEL not in notifier.heard
    finally:
        notifier.close()


def test_a_channel_subscribed_to_on_a_live_connection_is_listened_on(dsn, conn):
    notifier = Notifier(dsn)
    finished = threading.Event()
    try:
        notifier.subscribe(READY_CHANNEL, lambda: None)
        assert notifier.connected.wait(DEADLINE)
        notifier.subscribe(FINISHED_CHANNEL, finished.set)
        # Woken once listened on, since what was sent before went unheard ...
        assert finished.wait(DEADLINE)
        finished.clear()
        # ... and by each notification from then on.
        conn.execute("NOTIFY omnispindle_finished")
        assert finished.wait(DEADLINE)
    finally:
        notifier.close()

"""A process's LISTEN connection listens only on the channels subscribed to in it:
a worker is not woken by every finished step of every worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from omnispindle._db.notifier import FINISHED_CHANNEL, LISTEN_MORE, READY_CHANNEL, Notifier

from ..acceptance.workers import poll

DEADLINE = 30


class HeardNotifier(Notifier):
    """A notifier that records the channel of every wake, subscribed to or not."""

    def __init__(self, dsn: str, **options: float) -> None:
        super().__init__(dsn, **options)
        self.heard: list[str | None] = []

    def _wake(self, channel: str | None, payload: str = "") -> None:
        self.heard.append(channel)
        super()._wake(channel, payload)


def heard_once_sent(conn, payloads: list[str], payload: str) -> bool:
    """Whether ``payload`` was heard on the ready channel; if not, send it (again):
    what is sent before the connection listens is lost."""
    if payload in payloads:
        return True
    conn.execute("SELECT pg_notify('omnispindle_ready', %s)", (payload,))
    return False


@contextmanager
def hearing_ready(notifier: Notifier, conn) -> Iterator[list[str]]:
    """The payloads ``notifier`` hears on the ready channel, once it listens there;
    the notifier is closed on leaving."""
    payloads: list[str] = []
    try:
        notifier.subscribe(READY_CHANNEL, payloads.append, with_payload=True)
        poll(lambda: heard_once_sent(conn, payloads, "listening"), DEADLINE)
        yield payloads
    finally:
        notifier.close()


def test_a_process_is_sent_only_the_channels_it_subscribed_to(dsn, conn):
    notifier = HeardNotifier(dsn)
    with hearing_ready(notifier, conn) as payloads:
        conn.execute("NOTIFY omnispindle_finished")
        conn.execute("NOTIFY omnispindle_ready, 'after'")  # delivered after the first, if at all
        poll(lambda: "after" in payloads, DEADLINE)
        assert FINISHED_CHANNEL not in notifier.heard


def test_a_channel_subscribed_to_on_a_live_connection_is_listened_on_at_once(dsn, conn):
    # A slice longer than the deadline: only the notice of the subscription can
    # have the loop listen on the new channel in time.
    notifier = Notifier(dsn, hearing_slice=DEADLINE * 20)
    payloads: list[str] = []
    try:
        notifier.subscribe(READY_CHANNEL, lambda: None)
        assert notifier.connected.wait(DEADLINE)
        notifier.subscribe(FINISHED_CHANNEL, payloads.append, with_payload=True)
        poll(lambda: notifier.listens_on(FINISHED_CHANNEL), DEADLINE)
        # Woken once listened on (what was sent before went unheard), then by
        # each notification.
        poll(lambda: "" in payloads, DEADLINE)
        conn.execute("NOTIFY omnispindle_finished, 'done'")
        poll(lambda: "done" in payloads, DEADLINE)
    finally:
        notifier.close()


def test_the_notice_of_a_subscription_drops_none_sent_with_it(dsn, conn):
    with hearing_ready(Notifier(dsn), conn) as payloads:
        # Committed together, so delivered together: the notice and what follows it.
        with conn.transaction():
            conn.execute("SELECT pg_notify('omnispindle_probe', %s)", (LISTEN_MORE,))
            for n in range(20):
                conn.execute("SELECT pg_notify('omnispindle_ready', %s)", (str(n),))
        poll(lambda: "19" in payloads, DEADLINE)
        assert [p for p in payloads if p.isdigit()] == [str(n) for n in range(20)]


def test_a_subscriber_that_raises_leaves_the_others_woken(dsn, conn, caplog):
    """A callback that raised ended the LISTEN connection's thread: no subscriber
    of the process was woken again."""

    def broken(payload: str) -> None:
        raise ZeroDivisionError(payload)

    notifier = Notifier(dsn)
    notifier.subscribe(READY_CHANNEL, broken, with_payload=True)
    with hearing_ready(notifier, conn) as payloads:
        conn.execute("NOTIFY omnispindle_ready, 'first'")
        conn.execute("NOTIFY omnispindle_ready, 'second'")
        poll(lambda: "second" in payloads, DEADLINE)
    assert "a subscriber of omnispindle_ready failed" in caplog.text

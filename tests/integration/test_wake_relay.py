"""The supervisor's relay of notifications to its worker processes (issue 19): one
LISTEN connection, a pipe per child, and a child that is not reading never
holds the others up."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable

from omnispindle._db.namespace import DEFAULT
from omnispindle._db.notifier import CANCEL_CHANNEL, FINISHED_CHANNEL, READY_CHANNEL
from omnispindle._db.relayed_notifier import RelayedNotifier, encode
from omnispindle.cli.wake_relay import WakeRelay

from ..acceptance.workers import poll

DEADLINE = 30
BARRIERS = itertools.count()


def listening(ready: Callable[[], bool]) -> None:
    """Wait until ``ready()``: a connection listens on the channels a test notifies."""
    poll(ready, DEADLINE)


def ended(child: RelayedNotifier) -> None:
    """Wait until the child's reader saw its pipe end and closed it: a later test's
    pipes may reuse the number."""
    poll(lambda: not child.connected.is_set(), DEADLINE)


def test_each_child_hears_the_relayed_channels_and_a_stuck_one_holds_none_up(dsn, conn):
    relay = WakeRelay(dsn, DEFAULT)
    try:
        stuck_reader, stuck_reports, _ = relay.open_pipe()  # a child that never reads
        reader, reports, _ = relay.open_pipe()
        child = RelayedNotifier(reader, None, report_fd=reports)
        ready: list[str] = []
        all_heard = threading.Event()
        cancels = threading.Event()

        def heard(payload: str) -> None:
            if not payload:  # a wake-up hint (the cascade's, a reconnect's): no notice of ours
                return
            ready.append(payload)
            if payload == "3000":
                all_heard.set()

        child.subscribe(READY_CHANNEL, heard, with_payload=True)
        child.subscribe(CANCEL_CHANNEL, cancels.set)
        listening(relay.listening)
        # In batches the reading child takes in, far more than a pipe holds in
        # all: the stuck child's pipe fills, and the other still hears every one.
        for first in range(1, 3001, 500):
            conn.execute(
                "SELECT pg_notify('omnispindle_ready', n::text)"
                " FROM generate_series(%s::int, %s::int) n",
                [first, first + 499],
            )
            poll(lambda last=str(first + 499): ready[-1:] == [last], DEADLINE)
            if first == 1:
                # Heard after the relay's connect, whose wake-up reaches every channel.
                cancels.clear()
            if first == 1001:
                # Hints amid the notices: two, so that the cascade reaches each child.
                conn.execute("NOTIFY omnispindle_ready")
                conn.execute("NOTIFY omnispindle_ready")
        conn.execute("NOTIFY omnispindle_cancel")
        assert all_heard.is_set()
        assert ready[-3000:] == [str(n) for n in range(1, 3001)]
        assert cancels.wait(DEADLINE)
        os.close(stuck_reader)
        os.close(stuck_reports)
    finally:
        relay.close()
    ended(child)


def test_a_child_wakes_everyone_when_the_relay_ends(dsn):
    relay = WakeRelay(dsn, DEFAULT)
    reader, reports, key = relay.open_pipe()
    child = RelayedNotifier(reader, None, report_fd=reports)
    woken = threading.Event()
    child.subscribe(READY_CHANNEL, lambda payload: woken.set(), with_payload=True)
    relay.close_pipe(key)
    assert woken.wait(DEADLINE)
    ended(child)
    relay.close()


def test_the_channels_not_relayed_are_heard_on_a_connection_of_the_childs_own(dsn, conn):
    reader, writer = os.pipe()
    child = RelayedNotifier(reader, dsn, namespace=DEFAULT)
    finished = threading.Event()
    try:
        child.subscribe(FINISHED_CHANNEL, finished.set)
        listening(lambda: child.listens_on(FINISHED_CHANNEL))
        conn.execute("NOTIFY omnispindle_finished")
        assert finished.wait(DEADLINE)
        assert child.subscriptions(FINISHED_CHANNEL) == 1
        assert child.subscriptions(READY_CHANNEL) == 0
    finally:
        child.close()
        os.close(writer)
    ended(child)


def test_a_line_the_child_cannot_read_wakes_everyone_and_the_relay_goes_on():
    reader, writer = os.pipe()
    child = RelayedNotifier(reader, None)
    heard: list[str] = []
    child.subscribe(READY_CHANNEL, heard.append, with_payload=True)
    try:
        os.write(writer, b"not json\n" + encode(READY_CHANNEL, "after"))
        poll(lambda: heard == ["", "after"], DEADLINE)
        assert child.connected.is_set()
    finally:
        os.close(writer)
    ended(child)


def test_a_payload_too_long_for_one_write_is_relayed_without_it(dsn, conn):
    relay = WakeRelay(dsn, DEFAULT)
    try:
        reader, reports, _ = relay.open_pipe()
        child = RelayedNotifier(reader, None, report_fd=reports)
        heard: list[str] = []
        child.subscribe(READY_CHANNEL, heard.append, with_payload=True)
        listening(relay.listening)
        conn.execute("SELECT pg_notify('omnispindle_ready', repeat('x', 5000))")
        conn.execute("NOTIFY omnispindle_ready, 'short'")
        poll(lambda: heard[-1:] == ["short"], DEADLINE)
        assert heard[-2:] == ["", "short"]
    finally:
        relay.close()
    ended(child)


def test_a_ready_notice_wakes_one_child_and_more_only_while_they_fill_their_slots(dsn, conn):
    """The cascade through real pipes, with no child's time running out: one child
    woken per notice, two more for one that reports it filled its slots, none for
    those that report they did not."""
    relay = WakeRelay(dsn, DEFAULT, hop_timeout=DEADLINE * 10)
    try:
        children = [Child(*relay.open_pipe()[:2]) for _ in range(4)]
        listening(relay.listening)
        barrier(conn, children)
        for child in children:  # the connection's first wake-up woke one, perhaps
            if any(READY_CHANNEL.encode() in line for line in child.heard):
                child.report(filled=False)
            child.heard.clear()

        conn.execute("NOTIFY omnispindle_ready")
        first = poll(lambda: [c for c in children if c.lines()], DEADLINE)
        assert len(first) == 1
        first[0].report(filled=True)
        poll(lambda: sum(1 for c in children if c.lines()) == 3, DEADLINE)
        widened = [c for c in children if c.heard and c is not first[0]]
        for child in widened:
            child.report(filled=False)
        barrier(conn, children)
        assert [len(c.heard) for c in children].count(1) == 1  # the cancel alone
    finally:
        relay.close()
        for child in children:
            child.close()


def barrier(conn, children) -> None:
    """Send a cancel notice, which goes to every child, and wait until each has it:
    whatever the relay wrote before has arrived too."""
    token = f"barrier-{next(BARRIERS)}"
    conn.execute("SELECT pg_notify('omnispindle_cancel', %s)", [token])
    poll(lambda: all(c.lines() and token.encode() in c.heard[-1] for c in children), DEADLINE)


class Child:
    """A child's ends of its relay pipes, read and written by the test."""

    def __init__(self, wake_reader: int, report_writer: int) -> None:
        self.wake, self.reports = wake_reader, report_writer
        os.set_blocking(wake_reader, False)
        self.heard: list[bytes] = []

    def lines(self) -> int:
        """Read what arrived; how many lines have arrived in all."""
        try:
            self.heard += [line for line in os.read(self.wake, 65536).split(b"\n") if line]
        except BlockingIOError:
            pass
        return len(self.heard)

    def report(self, filled: bool) -> None:
        os.write(self.reports, b"+" if filled else b"-")

    def close(self) -> None:
        os.close(self.wake)
        os.close(self.reports)

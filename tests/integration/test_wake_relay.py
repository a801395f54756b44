"""The supervisor's relay of notifications to its worker processes (issue 19): one
LISTEN connection, a pipe per child, and a child that is not reading never
holds the others up."""

from __future__ import annotations

import os
import threading

import psycopg

from omnispindle._db.namespace import DEFAULT
from omnispindle._db.notifier import CANCEL_CHANNEL, FINISHED_CHANNEL, READY_CHANNEL
from omnispindle._db.relayed_notifier import RelayedNotifier, encode
from omnispindle.cli.wake_relay import WakeRelay

from ..acceptance.workers import poll

DEADLINE = 30


def listening(relay_dsn: str) -> None:
    """Wait until some connection of the database listens."""
    with psycopg.connect(relay_dsn, autocommit=True) as conn:
        poll(
            lambda: conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN %'"
            ).fetchone(),
            DEADLINE,
        )


def test_each_child_hears_the_relayed_channels_and_a_stuck_one_holds_none_up(dsn, conn):
    relay = WakeRelay(dsn, DEFAULT)
    try:
        stuck_reader, _ = relay.open_pipe()  # a child that never reads
        reader, _ = relay.open_pipe()
        child = RelayedNotifier(reader, None)
        ready: list[str] = []
        all_heard = threading.Event()
        cancels = threading.Event()

        def heard(payload: str) -> None:
            ready.append(payload)
            if payload == "3000":
                all_heard.set()

        child.subscribe(READY_CHANNEL, heard, with_payload=True)
        child.subscribe(CANCEL_CHANNEL, cancels.set)
        listening(dsn)
        # In batches the reading child takes in, far more than a pipe holds in
        # all: the stuck child's pipe fills, and the other still hears every one.
        for first in range(1, 3001, 500):
            conn.execute(
                "SELECT pg_notify('omnispindle_ready', n::text)"
                " FROM generate_series(%s::int, %s::int) n",
                [first, first + 499],
            )
            poll(lambda last=str(first + 499): ready[-1:] == [last], DEADLINE)
        conn.execute("NOTIFY omnispindle_cancel")
        assert all_heard.is_set()
        assert ready[-3000:] == [str(n) for n in range(1, 3001)]
        assert cancels.wait(DEADLINE)
        os.close(stuck_reader)
    finally:
        relay.close()


def test_a_child_wakes_everyone_when_the_relay_ends(dsn):
    relay = WakeRelay(dsn, DEFAULT)
    reader, writer = relay.open_pipe()
    child = RelayedNotifier(reader, None)
    woken = threading.Event()
    child.subscribe(READY_CHANNEL, lambda payload: woken.set(), with_payload=True)
    relay.close_pipe(writer)
    assert woken.wait(DEADLINE)
    poll(lambda: not child.connected.is_set(), DEADLINE)
    relay.close()


def test_the_channels_not_relayed_are_heard_on_a_connection_of_the_childs_own(dsn, conn):
    reader, writer = os.pipe()
    child = RelayedNotifier(reader, dsn, namespace=DEFAULT)
    finished = threading.Event()
    try:
        child.subscribe(FINISHED_CHANNEL, finished.set)
        listening(dsn)
        conn.execute("NOTIFY omnispindle_finished")
        assert finished.wait(DEADLINE)
        assert child.subscriptions(FINISHED_CHANNEL) == 1
        assert child.subscriptions(READY_CHANNEL) == 0
    finally:
        child.close()
        os.close(writer)


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


def test_a_payload_too_long_for_one_write_is_relayed_without_it(dsn, conn):
    relay = WakeRelay(dsn, DEFAULT)
    try:
        reader, _ = relay.open_pipe()
        child = RelayedNotifier(reader, None)
        heard: list[str] = []
        child.subscribe(READY_CHANNEL, heard.append, with_payload=True)
        listening(dsn)
        conn.execute("SELECT pg_notify('omnispindle_ready', repeat('x', 5000))")
        conn.execute("NOTIFY omnispindle_ready, 'short'")
        poll(lambda: heard[-1:] == ["short"], DEADLINE)
        assert heard[-2:] == ["", "short"]
    finally:
        relay.close()

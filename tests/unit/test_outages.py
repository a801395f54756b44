"""The pieces that tell an outage: one log line at each end, a probe of a silent listener."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from omnispindle._db.listen_probe import ListenerSilent, SilenceProbe
from omnispindle._db.outages import Outage, ours, quiet_pool_attempts
from omnispindle._db.sqlstate import translate
from omnispindle.errors import DatabaseUnavailableError


def test_an_outage_logs_once_when_it_starts_and_once_when_it_ends(caplog):
    caplog.set_level(logging.WARNING)
    outage = Outage("the test", logging.getLogger("omnispindle.test"))
    outage.restored()
    for _ in range(3):
        outage.lost(OSError("refused"))
    assert outage.ongoing
    outage.restored()
    outage.restored()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0] == "the test lost the database (refused); retrying"
    assert messages[1].startswith("the test reached the database again after ")


def test_the_pools_own_attempt_lines_are_dropped_for_our_pools_only(caplog):
    caplog.set_level(logging.INFO, logger="psycopg.pool")
    quiet_pool_attempts()
    pool_log = logging.getLogger("psycopg.pool")
    pool_log.warning("error connecting in %r: %s", "omnispindle", "refused")
    pool_log.warning("error connecting in %r: %s", "app", "refused")

    class Connection:
        pass

    mine, theirs = Connection(), Connection()
    ours(mine)
    pool_log.warning("discarding closed connection: %s", mine)
    pool_log.warning("discarding closed connection: %s", theirs)
    assert [r.args[0] for r in caplog.records] == ["app", theirs]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_listener_is_probed_and_declared_dead_without_its_probe():
    sent: list[str] = []
    clock = Clock()
    probe = SilenceProbe(sent.append, after=10, timeout=5, clock=clock)
    clock.now = 9
    probe.check()
    assert sent == []
    clock.now = 10
    probe.check()
    assert sent == [probe.token]
    clock.now = 14
    probe.heard("someone else's")  # proves the connection, but is not the answer
    probe.check()
    clock.now = 15.5
    with pytest.raises(ListenerSilent):
        probe.check()


def test_a_probe_that_comes_back_keeps_the_listener():
    sent: list[str] = []
    clock = Clock()
    probe = SilenceProbe(sent.append, after=10, timeout=5, clock=clock)
    clock.now = 10
    probe.check()
    probe.heard(probe.token)
    clock.now = 19
    probe.check()
    assert len(sent) == 1
    clock.now = 20
    probe.check()
    assert len(sent) == 2


def test_a_probe_that_cannot_be_sent_is_tried_again_after_another_silence():
    clock = Clock()

    def refuse(token: str) -> None:
        raise OSError("no route")

    probe = SilenceProbe(refuse, after=10, timeout=5, clock=clock)
    clock.now = 10
    probe.check()
    clock.now = 30  # no probe is out, so no timeout
    probe.check()


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        PoolTimeout("couldn't get a connection after 5.00 sec"),
    ],
)
def test_an_outage_is_typed(error):
    assert isinstance(translate(error), DatabaseUnavailableError)


def test_a_cancelled_statement_or_deadlock_is_no_outage():
    assert translate(psycopg.errors.QueryCanceled("canceling statement")) is None
    assert translate(psycopg.errors.DeadlockDetected("deadlock detected")) is None


def test_connections_give_up_on_a_silent_link_unless_the_dsn_says_otherwise():
    """Without these, a cut link holds a worker's calls for the kernel's quarter
    of an hour (the fault suite's host cut off for long)."""
    from omnispindle._db.connecting import connect_options

    options = connect_options("host=db.example dbname=app")
    assert options["tcp_user_timeout"] == 15_000
    assert (options["keepalives_idle"], options["keepalives_interval"]) == (15, 5)
    assert options["keepalives_count"] == 3
    own = connect_options("host=db.example tcp_user_timeout=60000 keepalives_idle=120")
    assert "tcp_user_timeout" not in own and "keepalives_idle" not in own
    assert own["keepalives_count"] == 3

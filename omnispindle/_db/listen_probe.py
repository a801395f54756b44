"""Telling a silent LISTEN connection from a dead one.

A half-open connection (a peer gone without a reset, a frozen backend) raises
nothing: it only stops delivering. So once a listener has heard nothing for a
while, a probe is notified on its probe channel from another connection; if
that probe has not come back within a timeout, the listener is dead.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from omnispindle.errors import first_line

log = logging.getLogger("omnispindle.notifier")

PROBE_AFTER = 10.0  # seconds of silence before a probe is sent
PROBE_TIMEOUT = 5.0  # seconds a probe may take to come back


class ListenerSilent(Exception):
    """The listening connection did not hear its own probe: it is dead."""


class SilenceProbe:
    """The probe of one LISTEN connection.

    Args:
        send: notifies the probe channel with a token, from another connection.
        after: seconds of silence before a probe.
        timeout: seconds a probe may take to come back.
    """

    def __init__(
        self,
        send: Callable[[str], None],
        *,
        after: float = PROBE_AFTER,
        timeout: float = PROBE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = uuid.uuid4().hex
        self._send = send
        self._after = after
        self._timeout = timeout
        self._clock = clock
        self._last_heard = clock()
        self._sent_at: float | None = None

    def heard(self, payload: str | None = None) -> None:
        """Anything heard proves the connection alive; its own token answers the probe."""
        self._last_heard = self._clock()
        if payload == self.token:
            self._sent_at = None

    def check(self) -> None:
        """Send a probe after a silence; raise ListenerSilent when one went unanswered.

        Raises:
            ListenerSilent: the last probe has not come back within the timeout.
        """
        now = self._clock()
        if self._sent_at is not None:
            if now - self._sent_at > self._timeout:
                raise ListenerSilent(f"no notification came back within {self._timeout:g} s")
            return
        if now - self._last_heard < self._after:
            return
        try:
            self._send(self.token)
        except Exception as exc:  # noqa: BLE001 - an unreachable database is the listener's to find
            log.debug("could not send a LISTEN probe: %s", first_line(exc))
            self._last_heard = now  # try again after another silence
            return
        self._sent_at = now

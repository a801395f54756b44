"""Fresh databases made ahead: while one test runs, the next one's copy of the
template is being made and the last one's dropped, on threads of their own.

Copying the template takes about a tenth of a second, and most tests spend
much of their time waiting on workers, so the copies cost the suite almost
nothing when they are made while it waits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import psycopg

AHEAD = 2  # databases made before they are asked for
WAIT_S = 120


class DatabaseSupply:
    """Copies of ``template`` on ``server``, named by ``name()``; :meth:`take` one,
    :meth:`give_back` it when done, :meth:`close` at the end."""

    def __init__(
        self,
        server: str,
        template: str,
        name: Callable[[], str],
        create: Callable[[str, str, str], str],
        drop: Callable[[str, str], None],
    ) -> None:
        self._server, self._template, self._name = server, template, name
        self._create, self._drop = create, drop
        self._ready: queue.Queue[tuple[str, str] | BaseException] = queue.Queue(AHEAD)
        self._done: queue.Queue[str | None] = queue.Queue()
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._make, name="test-db-maker", daemon=True),
            threading.Thread(target=self._remove, name="test-db-dropper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def take(self) -> tuple[str, str]:
        """A fresh database: (name, dsn). Raises what making it raised."""
        made = self._ready.get(timeout=WAIT_S)
        if isinstance(made, BaseException):
            raise made
        return made

    def give_back(self, name: str) -> None:
        """Drop the database, soon."""
        self._done.put(name)

    def close(self) -> None:
        """Stop making, drop every database made, and wait for the drops."""
        self._closing.set()
        maker = self._threads[0]
        while maker.is_alive():  # it may wait to put one more: take it
            self._drop_made(timeout=0.1)
        while self._drop_made(timeout=0):
            pass
        self._done.put(None)
        self._threads[1].join(WAIT_S)

    def _drop_made(self, timeout: float) -> bool:
        """Send one database made ahead to be dropped; False if none came."""
        try:
            made = self._ready.get(timeout=timeout) if timeout else self._ready.get_nowait()
        except queue.Empty:
            return False
        if not isinstance(made, BaseException):
            self._done.put(made[0])
        return True

    def _make(self) -> None:
        while not self._closing.is_set():
            name = self._name()
            try:
                made: tuple[str, str] | BaseException = (
                    name,
                    self._create(self._server, name, self._template),
                )
            except psycopg.Error as exc:
                made = exc
            self._ready.put(made)

    def _remove(self) -> None:
        while (name := self._done.get()) is not None:
            try:
                self._drop(self._server, name)
            except psycopg.Error:
                pass  # dropped at the end of the session with the server, or left for a human

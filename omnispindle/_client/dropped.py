"""Closing an async client let go while open.

A finalizer cannot await: it warns, as asyncio does of a transport let go
open, and hands the closing to the event loop the client was opened on.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Awaitable, Callable, Sequence

Closer = Callable[[], Awaitable[None]]

# The closings under way, held so that none is collected before it ends.
_CLOSING: set[asyncio.Task[None]] = set()


def close_dropped(loop: asyncio.AbstractEventLoop, closers: Sequence[Closer]) -> None:
    """Warn, then run ``closers`` in turn on ``loop``, from whichever thread collected
    the client; a loop that has ended took the connections' tasks with it."""
    warnings.warn(
        "an AsyncTaskQueueClient was let go without `await client.close()`; "
        "its connections are closed on its event loop now",
        ResourceWarning,
        stacklevel=2,
    )
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        if not loop.is_closed():
            loop.call_soon_threadsafe(_start, loop, closers)


def _start(loop: asyncio.AbstractEventLoop, closers: Sequence[Closer]) -> None:
    task = loop.create_task(_close_in_turn(closers))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def _close_in_turn(closers: Sequence[Closer]) -> None:
    for close in closers:
        # Nobody awaits this closing: an error here has nobody to reach.
        with contextlib.suppress(Exception):
            await close()

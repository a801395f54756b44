"""Describing an exception without trusting it."""

from __future__ import annotations


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when its ``__str__`` raises or returns no string:
    an error raised by user code must still be recorded, even when its ``__str__``
    raises ``SystemExit`` or ``KeyboardInterrupt`` (a real one never reaches the
    executors' threads, which are not the main thread)."""
    try:
        text = str(exc)
    except BaseException as broken:  # noqa: BLE001 - whatever the exception's own code does
        return f"(str() of this {type(exc).__name__} raised {type(broken).__name__})"
    return text

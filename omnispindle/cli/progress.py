"""A one-line text progress bar, redrawn in place: ``[#######.....] 7/10 tasks``."""

from __future__ import annotations

from typing import TextIO

PROGRESS_MODES = ("auto", "always", "never")


def progress_wanted(mode: str, stream: TextIO) -> bool:
    """Whether to draw: ``always``, ``never``, or ``auto`` (only on a terminal)."""
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return mode == "always"


class ProgressBar:
    """Draws ``done/total`` on ``stream``; each update overwrites the line with ``\\r``.

    Args:
        total: the count that fills the bar.
        stream: where to draw (a terminal, usually stderr).
        width: characters between the brackets.
        unit: what is counted.
    """

    def __init__(self, total: int, stream: TextIO, *, width: int = 30, unit: str = "tasks") -> None:
        self.total = total
        self.stream = stream
        self.width = width
        self.unit = unit
        self._drawn = False

    def update(self, done: int, total: int | None = None) -> None:
        """Redraw with ``done`` finished (matches ``wait_for_batch``'s ``progress``)."""
        if total is not None:
            self.total = total
        self.stream.write("\r" + self.render(done))
        self.stream.flush()
        self._drawn = True

    def render(self, done: int) -> str:
        """The bar's text, without the carriage return."""
        filled = self.width if self.total <= 0 else self.width * min(done, self.total) // self.total
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {self.unit}"

    def close(self) -> None:
        """End the bar's line, so that later output starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

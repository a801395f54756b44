"""Error lines of the command line, each written whole."""

from __future__ import annotations

import sys


def complain(line: str) -> None:
    """Write ``line`` and its newline to stderr in one call.

    ``print`` writes the text and the newline apart, and with PYTHONUNBUFFERED
    (usual in containers) each is a write of its own: the children of a
    supervisor share its stderr, and two of them failing at once joined their
    lines into one.
    """
    sys.stderr.write(line + "\n")
    sys.stderr.flush()

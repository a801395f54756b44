"""The ``omnispindle`` command."""

from omnispindle.cli.main import main

__all__ = ["main"]

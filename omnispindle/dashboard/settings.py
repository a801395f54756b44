"""How one dashboard app behaves, fixed when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from omnispindle.dashboard.security import Auth

# Seconds between the live refreshes of a page's figures.
REFRESH_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Settings:
    """``read_only``: no action is offered, and every action is refused.
    ``show_payloads``: parameters, results, errors and partial results are shown.
    ``auth``: what a request must prove, or None for no check."""

    read_only: bool = False
    show_payloads: bool = False
    auth: Auth | None = None

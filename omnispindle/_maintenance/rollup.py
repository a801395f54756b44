"""The outcome rollup: finished tasks counted per minute and type, once each.

The dashboard's charts and its "finished in the last hour" figures read
``omnispindle.outcome_minutes`` up to a watermark, and count only the few
seconds after it live. Sweepers fill it: each pass counts the tasks finished
since the watermark (up to a settle lag ago) and moves the watermark, in one
transaction that holds the watermark's row, so no task is counted twice. No
trigger counts anything: claiming and finishing tasks stay as cheap as before.
"""

from __future__ import annotations

from omnispindle._core import defaults
from omnispindle._db import queries as q
from omnispindle._db.query import Atomic, Plan, Runner
from omnispindle._db.rows import RollupSpan


def roll_up(
    db: Runner, settle: float = defaults.ROLLUP_SETTLE, keep: float = defaults.ROLLUP_KEEP
) -> int | None:
    """Count the tasks finished since the last pass, up to ``settle`` seconds ago.

    Returns:
        How many tasks this pass counted; None when another pass held the
        watermark (it counts them instead).
    """
    return db.run(Atomic(_pass(settle, keep)))


def _pass(settle: float, keep: float) -> Plan[int | None]:
    """One pass's statements; a pass that finds the watermark taken does nothing."""
    span: RollupSpan | None = yield q.rollup.lock_rollup(settle)
    if span is None:
        return None
    counted = 0
    if span["until"] > span["since"]:
        counted = yield q.rollup.count_outcomes(span["since"], span["until"])
        yield q.rollup.advance_rollup(span["until"])
    yield q.rollup.trim_outcome_minutes(keep)
    return counted

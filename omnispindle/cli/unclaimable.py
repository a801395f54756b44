"""The warnings of ``omnispindle status`` on ready tasks that no live worker can run."""

from __future__ import annotations

from collections.abc import Iterable

from omnispindle._db.rows import UnclaimableTasks, WorkerSummaryRow

# A warning each for the task types with the most such tasks, one for the rest,
# and so many capabilities named in each: a typo in a fleet's submissions
# should not fill the screen.
MOST_TYPES = 3
MOST_CAPABILITIES = 5


def unclaimable_warnings(
    unclaimable: list[UnclaimableTasks], workers: list[WorkerSummaryRow]
) -> list[str]:
    """Per task type, the ready tasks that wait for capabilities no live worker of
    the type declares; the types past ``MOST_TYPES`` in one line."""
    by_type: dict[str, list[UnclaimableTasks]] = {}
    for row in unclaimable:
        by_type.setdefault(row["task_type"], []).append(row)
    ranked = sorted(by_type.items(), key=lambda item: (-_ready(item[1]), item[0]))
    declared = {c for w in workers if w["state"] == "active" for c in w["capabilities"]}
    warnings = [_warning(task_type, rows, declared) for task_type, rows in ranked[:MOST_TYPES]]
    rest = ranked[MOST_TYPES:]
    if rest:
        ready = sum(_ready(rows) for _, rows in rest)
        warnings.append(
            f"{ready} ready tasks of {len(rest)} more task types need capabilities "
            "that no live worker of their type declares"
        )
    return warnings


def _warning(task_type: str, rows: list[UnclaimableTasks], declared: set[str]) -> str:
    missing = sorted({c for row in rows for c in row["missing_capabilities"]})
    if missing:
        needs = f"{_names(missing, declared)}, which no live worker of the type declares"
    else:
        # Each is declared, but no one worker declares all that a task needs.
        needed = sorted({c for row in rows for c in row["required_capabilities"]})
        needs = f"{_names(needed, set())}, which no live worker of the type declares together"
    return f"{_ready(rows)} ready tasks of type {task_type} wait: they need {needs}"


def _names(capabilities: list[str], declared: set[str]) -> str:
    """The first ``MOST_CAPABILITIES``, each with a live worker's name for it that
    differs only in case ("GPU" where workers declare "gpu")."""
    shown = [_with_hint(c, declared) for c in capabilities[:MOST_CAPABILITIES]]
    more = len(capabilities) - MOST_CAPABILITIES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _with_hint(capability: str, declared: set[str]) -> str:
    near = sorted(d for d in declared if d != capability and d.casefold() == capability.casefold())
    return f"{capability} (a live worker declares {near[0]})" if near else capability


def _ready(rows: Iterable[UnclaimableTasks]) -> int:
    return sum(row["ready"] for row in rows)

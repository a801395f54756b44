"""One typed function per runtime statement, by subject, as ``sql/queries`` files are.

These are the only code that names a statement: everything else asks for a
:class:`~omnispindle._db.query.Query` by calling one of them.
"""

from omnispindle._db.queries import (
    dashboard,
    demand,
    history,
    inspection,
    metrics,
    pausing,
    periodic,
    retention,
    rollup,
    setup,
    tasks,
    type_limits,
    waiting,
    workers,
)

__all__ = [
    "dashboard",
    "demand",
    "history",
    "inspection",
    "metrics",
    "pausing",
    "periodic",
    "retention",
    "rollup",
    "setup",
    "tasks",
    "type_limits",
    "waiting",
    "workers",
]

"""The import paths users write keep working, whatever moves behind them."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import omnispindle
from mkdocs_hooks import PUBLIC_MODULES

# (module, names) as the seed's Quick Start, the README and the docs import them.
DOCUMENTED = [
    ("omnispindle.task_queue", ["TaskQueue"]),
    ("omnispindle.client", ["TaskQueueClient", "WorkerClient"]),
    ("omnispindle.async_client", ["AsyncTaskQueueClient"]),
    ("omnispindle.worker", ["WorkerClient"]),
    ("omnispindle.context", ["TaskContext", "current_task"]),
    ("omnispindle.states", ["TaskState", "WorkerState"]),
    ("omnispindle.schema", ["apply_migration", "migration_names", "migration_sql"]),
    ("omnispindle.migrate", ["upgrade", "downgrade", "stamp"]),
    ("omnispindle.registry", ["task", "declared_tasks", "DeclaredTask"]),
    ("omnispindle.prometheus", ["serve", "QueueCollector", "registry", "exposition"]),
    ("omnispindle.dashboard", ["app", "serve", "check_bind", "TokenAuth", "BasicAuth"]),
    (
        "omnispindle.errors",
        [
            "OmnispindleError",
            "ConfigurationError",
            "EmbeddedServerUnavailable",
            "SchemaMissingError",
            "ValidationError",
            "UnknownDependencyError",
            "DependencyCycleError",
            "DependencyStateError",
            "CronExpressionError",
            "IllegalTransitionError",
            "TaskNotFoundError",
            "WaitTimeoutError",
            "TaskCancelled",
            "FailForGood",
            "LeaseLostError",
            "TaskFailedError",
            "TaskStateError",
            "IdempotencyKeyConflictError",
            "FailedTransactionError",
            "ReadOnlyDatabaseError",
        ],
    ),
]


@pytest.mark.parametrize(("module", "names"), DOCUMENTED, ids=[m for m, _ in DOCUMENTED])
def test_documented_names_import_from_their_documented_module(module, names):
    found = importlib.import_module(module)
    for name in names:
        assert getattr(found, name) is not None, f"{module}.{name}"


def test_the_package_exports_its_main_names_and_they_are_the_same_objects():
    from omnispindle.client import TaskQueueClient, WorkerClient
    from omnispindle.task_queue import TaskQueue

    assert omnispindle.TaskQueue is TaskQueue
    assert omnispindle.TaskQueueClient is TaskQueueClient
    assert omnispindle.WorkerClient is WorkerClient
    for name in omnispindle.__all__:
        assert hasattr(omnispindle, name), name


def test_the_public_modules_are_the_only_ones_without_a_leading_underscore():
    """What is not public lives in a wing whose name starts with ``_`` (or in cli/ and bench/,
    which are commands, not library)."""
    package = omnispindle.__path__[0]
    public = {"__main__", "cli", "bench", *PUBLIC_MODULES}
    found = {info.name for info in pkgutil.iter_modules([package])}
    assert {name for name in found if not name.startswith("_")} <= public


def test_every_error_the_docs_name_imports_from_the_package():
    """Issue 20, finding 8: the errors lived only in ``omnispindle.errors``."""
    import re

    from tests.conftest import ROOT

    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    text = "\n".join(page.read_text() for page in pages)
    named = set(re.findall(r"\b([A-Z][A-Za-z]+(?:Error|Unavailable)|TaskCancelled)\b", text))
    ours = {name for name in named if hasattr(importlib.import_module("omnispindle.errors"), name)}
    assert len(ours) >= 10, ours
    for name in sorted(ours):
        assert name in omnispindle.__all__ and getattr(omnispindle, name), name

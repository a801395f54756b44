"""Running one executor call and turning what happened into an outcome to store."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from omnispindle._core import limits
from omnispindle._core.describe import exception_text
from omnispindle._core.unreadable import UnreadableJson
from omnispindle._core.validation import json_text
from omnispindle._db.queries.tasks import Results
from omnispindle._db.rows import Json, StepRow
from omnispindle._observe import tracing
from omnispindle.context import TaskContext, _current
from omnispindle.errors import FailForGood

Error = dict[str, Json]

# The most one jsonb value holds: the claim hands over a task's parents'
# results as one, or, past it, the bytes they would take.
JSONB_MAX_BYTES = 268_435_455


class Attempt(NamedTuple):
    """Which attempt of which task an outcome ends."""

    task_id: int
    lease_token: str
    attempt: int


def attempt_of(claimed: StepRow) -> Attempt:
    """The attempt a claimed row starts."""
    return Attempt(claimed["id"], claimed["lease_token"], claimed["attempts"])


class Outcome(NamedTuple):
    """The end of one attempt: a JSON result or an error description.

    A named tuple: one is made per task, and a frozen dataclass cost a short
    task over a microsecond more.
    """

    task_id: int
    lease_token: str  # as the claim returned it (text), handed back to fence the write
    attempt: int
    result_json: str | None = None
    error: Error | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the attempt returned a result."""
        return self.error is None


def results_of(outcomes: Sequence[Outcome]) -> Results:
    """The results of succeeded outcomes, as the statements that store them take them."""
    return Results(
        [o.task_id for o in outcomes],
        [o.lease_token for o in outcomes],
        [o.result_json or "null" for o in outcomes],
    )


class UnreadableTask(Exception):
    """A claimed row holds JSON Python cannot decode: its task fails, no other."""


def task_data(claimed: StepRow) -> dict[str, Any]:
    """The dict an executor receives, built from a claimed row.

    Raises:
        UnreadableTask: its parameters or a parent's outcome cannot be decoded.
    """
    # Any: a value the loader could not decode is an UnreadableJson, not what the row says.
    parameters: Any = claimed["parameters"]
    results: Any = claimed["dependency_results"]
    failures: Any = claimed["dependency_failures"]
    # Exact type checks: this runs for every task.
    if type(parameters) is UnreadableJson:
        raise UnreadableTask(f"the task's parameters cannot be read: {parameters}")
    if type(results) is UnreadableJson:
        raise UnreadableTask(f"the task's parents' results cannot be read: {results}")
    if type(failures) is UnreadableJson:
        raise UnreadableTask(f"the task's parents' errors cannot be read: {failures}")
    if type(results) is int:  # the claim's word for results too large to gather
        raise UnreadableTask(
            f"the task's parents' results come to more than one JSON value can hold: "
            f"{results:,} bytes, past jsonb's {JSONB_MAX_BYTES:,}"
        )
    return {
        "task_id": claimed["id"],
        "task_type": claimed["task_type"],
        "parameters": parameters,
        "attempt": claimed["attempts"],
        "max_attempts": claimed["max_attempts"],
        # NULL from the claim when there are none: most tasks have no parents.
        "dependency_results": {int(k): v for k, v in (results or {}).items()},
        "dependency_failures": {int(k): v for k, v in (failures or {}).items()},
    }


def run_executor(
    fn: Callable[[dict[str, Any]], Any], claimed: StepRow, context: TaskContext
) -> Outcome:
    """Call ``fn`` for a claimed task with ``context`` current.

    What ``fn`` raises is the attempt's outcome. What raises around the call
    (decoding the row, tracing) propagates: the worker's completion callback
    stores it as the attempt's failure (``around_failure``), for every runner.
    """
    reset_token = _current.set(context)
    try:
        data = task_data(claimed)
        with tracing.execution_span(claimed) as span:
            try:
                result = fn(data)
            except BaseException as exc:  # noqa: BLE001 - an executor's failure is data
                tracing.record_failure(span, exc)
                return failure(attempt_of(claimed), exc)
    finally:
        _current.reset(reset_token)
    return success(claimed, result)


async def run_async_executor(
    fn: Callable[[dict[str, Any]], Awaitable[Any]], claimed: StepRow, context: TaskContext
) -> Outcome:
    """Await the coroutine ``fn`` for a claimed task with ``context`` current; as
    ``run_executor``, only what raises around the call propagates.

    It runs as an asyncio task of its own, whose context is a copy, so setting
    ``context`` needs no reset. A ``CancelledError`` is an outcome like any
    other error: when the worker abandoned the attempt, that outcome is
    discarded anyway, and when the coroutine raised it itself, the attempt fails.
    """
    _current.set(context)
    data = task_data(claimed)
    with tracing.execution_span(claimed) as span:
        try:
            result = await fn(data)
        except BaseException as exc:  # noqa: BLE001 - an executor's failure is data
            tracing.record_failure(span, exc)
            return failure(attempt_of(claimed), exc)
    return success(claimed, result)


def around_failure(claimed: StepRow, exc: BaseException) -> Outcome:
    """The failure of an attempt whose call broke down around its executor: a row
    that cannot be read, or the worker's own code."""
    error_type = "UnreadableTask" if isinstance(exc, UnreadableTask) else "WorkerError"
    return failure(attempt_of(claimed), exc, error_type=error_type)


def success(claimed: StepRow, result: Any) -> Outcome:
    """The outcome of an attempt that returned ``result``; a failure if it cannot be stored.

    Built from the row at once: this runs for every task, and an ``Attempt`` on
    the way cost a short task a noticeable share of its overhead.
    """
    try:
        return Outcome(
            claimed["id"], claimed["lease_token"], claimed["attempts"], result_to_json(result)
        )
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError from a deep structure
        return failure(attempt_of(claimed), exc, error_type="ResultNotSerializable")


def result_to_json(result: Any) -> str:
    """Serialize an executor's return value for the ``result`` jsonb column.

    Raises:
        ValueError: it is not JSON, or holds what jsonb refuses (NaN, NUL).
    """
    return json_text(result, "the executor's result", limits.current().result_bytes)


MAX_MESSAGE_CHARS = 10_000
MAX_TRACEBACK_CHARS = 50_000


def failure(attempt: Attempt, exc: BaseException, error_type: str | None = None) -> Outcome:
    """An outcome recording ``exc`` as the error of an attempt; never raises, even
    for an exception whose ``__str__`` does."""
    error: Error = {
        "type": storable_text(error_type or _type_name(exc), MAX_MESSAGE_CHARS),
        "message": storable_text(exception_text(exc), MAX_MESSAGE_CHARS),
        "traceback": storable_text(_traceback_text(exc), MAX_TRACEBACK_CHARS),
        "attempt": attempt.attempt,
    }
    if fails_for_good(exc):
        # fail_attempts reads it: this attempt is the task's last.
        error["retry"] = False
    return Outcome(*attempt, error=error)


def fails_for_good(exc: BaseException) -> bool:
    """Whether ``exc`` is a FailForGood, or an exception group (a TaskGroup's, nested
    or not) with one among its leaves: the executor said that running the task
    again cannot help, and a retry would meet the same refusal after the others.

    Groups are known by their class's name, so that Python 3.10, which has none,
    still reads those of the ``exceptiongroup`` backport that anyio raises there.
    Walked without recursion, and never raises, whatever a group holds.
    """
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, FailForGood):
            return True
        if any(cls.__name__ == "BaseExceptionGroup" for cls in type(current).__mro__):
            try:
                leaves = tuple(getattr(current, "exceptions", ()))
            except Exception:  # noqa: BLE001 - a hostile group object
                leaves = ()
            pending.extend(leaf for leaf in leaves if isinstance(leaf, BaseException))
    return False


def _traceback_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException as broken:  # noqa: BLE001 - a hostile exception object, see exception_text
        return f"(the traceback could not be formatted: {type(broken).__name__})"


def storable_text(text: str, limit: int) -> str:
    """Text Postgres accepts: NUL and unpaired surrogates replaced, bounded in length.

    An error message is whatever the executor raised; storing it must not fail.
    """
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + " [truncated]"


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )

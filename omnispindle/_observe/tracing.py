"""OpenTelemetry spans for submitting and executing tasks, when the API is installed.

The submitting side starts a producer span and stores its W3C trace context
in the task (``trace_context``); the worker starts its consumer span as a
child of it, so a trace runs from the web request into the worker. Without
``opentelemetry-api``, or before a tracer provider is set, every function here
is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from omnispindle._core.describe import exception_text
from omnispindle._db.rows import StepRow

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    API = True
except ImportError:  # pragma: no cover - exercised where the API is absent
    API = False

TRACER_NAME = "omnispindle"

log = logging.getLogger("omnispindle.tracing")


def enabled() -> bool:
    """True when opentelemetry-api is importable."""
    return API


def recording() -> bool:
    """True when spans go somewhere: the API is importable and a tracer provider is set.

    Without a provider every span is a no-op, yet starting one still costs
    several microseconds, a large share of a short task's overhead.
    """
    return API and not isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


# What the span functions return while nothing records: entering a generator
# based context manager cost a short task a few microseconds.
_NO_SPAN = contextlib.nullcontext()


def submit_span(task_types: list[str]) -> AbstractContextManager[dict[str, str] | None]:
    """A producer span around a submission; yields the trace context to store, or None."""
    return _submit_span(task_types) if recording() else _NO_SPAN


def execution_span(claimed: StepRow) -> AbstractContextManager[Any]:
    """A consumer span around one attempt, a child of the submitting span if any;
    yields the span, or None."""
    return _execution_span(claimed) if recording() else _NO_SPAN


@contextlib.contextmanager
def _submit_span(task_types: list[str]) -> Iterator[dict[str, str] | None]:
    name = f"submit {task_types[0]}" if len(set(task_types)) == 1 else "submit batch"
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "omnispindle",
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(task_types),
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier or None


@contextlib.contextmanager
def _execution_span(claimed: StepRow) -> Iterator[Any]:
    parent = propagate.extract(_carrier(claimed.get("trace_context")))
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"execute {claimed['task_type']}",
        context=parent,
        kind=SpanKind.CONSUMER,
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            "messaging.system": "omnispindle",
            "messaging.operation.type": "process",
            "messaging.message.id": str(claimed["id"]),
            "omnispindle.task.type": claimed["task_type"],
            "omnispindle.task.attempt": claimed["attempts"],
        },
    ) as span:
        yield span


# The longest header value a W3C propagator reads (tracestate's and baggage's
# limit): OpenTelemetry's baggage propagator logs a longer one whole.
_MAX_HEADER = 8192


def _carrier(stored: Any) -> dict[str, str]:
    """The stored trace context if it is one, without values no propagator reads;
    a row written by SQL may hold anything."""
    if isinstance(stored, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in stored.items()
    ):
        return {k: v for k, v in stored.items() if len(v) <= _MAX_HEADER}
    return {}


def record_failure(span: Any, exc: BaseException) -> None:
    """Mark an execution span as failed by ``exc``."""
    if span is None:
        return
    try:
        span.record_exception(exc)
    except BaseException:  # an exception whose __str__ raises, see exception_text
        log.debug("could not record an exception on the execution span", exc_info=True)
    span.set_status(Status(StatusCode.ERROR, exception_text(exc)))

"""OpenTelemetry: the trace context travels inside the task from submitter to worker."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.acceptance.workers import poll

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans():
    """Finished spans of this test, from an in-memory exporter on the global provider."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def by_name(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_the_worker_span_is_a_child_of_the_submitting_span(client, start_worker, spans):
    tracer = trace.get_tracer("web-app")
    with tracer.start_as_current_span("POST /orders") as request:
        task_id = client.submit_task("email", {"to": "a@example.com"})
    start_worker({"email": lambda task: {"sent": True}})
    assert client.wait_for_task(task_id, timeout=30)["state"] == "succeeded"
    poll(lambda: by_name(spans, "execute email"), timeout=10)
    [submit] = by_name(spans, "submit email")
    [execute] = by_name(spans, "execute email")
    assert submit.kind is SpanKind.PRODUCER and execute.kind is SpanKind.CONSUMER
    assert submit.parent.span_id == request.get_span_context().span_id
    assert execute.parent.span_id == submit.context.span_id
    assert execute.context.trace_id == request.get_span_context().trace_id
    assert execute.attributes["messaging.message.id"] == str(task_id)
    assert execute.attributes["omnispindle.task.attempt"] == 1


def test_every_attempt_is_a_span_and_a_failure_is_recorded(client, start_worker, spans):
    task_id = client.submit_task("flaky", max_retries=1, retry_backoff=0)
    calls = []

    def flaky(task):
        calls.append(task["attempt"])
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return {}

    start_worker({"flaky": flaky})
    assert client.wait_for_task(task_id, timeout=30)["state"] == "succeeded"
    poll(lambda: len(by_name(spans, "execute flaky")) == 2, timeout=10)
    failed, succeeded = sorted(
        by_name(spans, "execute flaky"), key=lambda s: s.attributes["omnispindle.task.attempt"]
    )
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"
    assert succeeded.status.status_code is StatusCode.UNSET
    [submit] = by_name(spans, "submit flaky")
    assert failed.parent.span_id == succeeded.parent.span_id == submit.context.span_id


def test_a_batch_shares_one_submit_span_and_the_context_is_stored(client, conn, spans):
    ids = client.submit_batch([{"task_type": "a"}, {"task_type": "b"}])
    [submit] = by_name(spans, "submit batch")
    assert submit.attributes["messaging.batch.message_count"] == 2
    stored = conn.execute(
        "SELECT trace_context ->> 'traceparent' FROM omnispindle.tasks WHERE id = ANY (%s)", [ids]
    ).fetchall()
    trace_id = format(submit.context.trace_id, "032x")
    assert [row[0].split("-")[1] for row in stored] == [trace_id, trace_id]


WITHOUT_OPENTELEMETRY = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
from omnispindle import TaskQueue, TaskQueueClient
from omnispindle._observe import tracing
assert not tracing.enabled()
with TaskQueue() as queue:
    client = TaskQueueClient(local_queue=queue)
    print(client.submit_task("t"))
"""


def test_without_opentelemetry_nothing_is_traced_or_stored(dsn, conn, tmp_path):
    from tests.acceptance.test_quickstart import run_script

    done = run_script(WITHOUT_OPENTELEMETRY, tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    task_id = int(done.stdout.strip())
    stored = conn.execute(
        "SELECT trace_context FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]
    assert stored is None


WITHOUT_A_PROVIDER = """
from omnispindle import TaskQueue, TaskQueueClient
from omnispindle._observe import tracing
assert tracing.enabled() and not tracing.recording()
with TaskQueue() as queue:
    client = TaskQueueClient(local_queue=queue)
    with tracing.execution_span({"id": 1, "task_type": "t", "attempts": 1}) as span:
        assert span is None
    print(client.submit_task("t"))
"""


def test_with_the_api_but_no_tracer_provider_no_span_is_started(dsn, conn, tmp_path):
    from tests.acceptance.test_quickstart import run_script

    done = run_script(WITHOUT_A_PROVIDER, tmp_path, env_dsn=dsn)
    assert done.returncode == 0, done.stderr
    task_id = int(done.stdout.strip())
    stored = conn.execute(
        "SELECT trace_context FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]
    assert stored is None


@pytest.mark.parametrize("stored", ["[1, 2]", '"text"', '{"traceparent": 5}'])
def test_a_trace_context_that_is_no_carrier_is_ignored(client, conn, start_worker, spans, stored):
    """Issue 18, finding 2: with a provider set, such a row wedged its slot for ever."""
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, trace_context) VALUES ('t', %s::jsonb) "
        "RETURNING id",
        [stored],
    ).fetchone()[0]
    start_worker({"t": lambda task: {"ran": True}}, concurrency=1)
    assert client.wait_for_task(task_id, timeout=30)["result"] == {"ran": True}
    assert client.wait_for_task(client.submit_task("t"), timeout=30)["state"] == "succeeded"


def test_a_huge_stored_baggage_is_neither_read_nor_logged(
    client, conn, start_worker, spans, caplog
):
    """OpenTelemetry's baggage propagator logged a header past its 8,192 bytes whole:
    a 1 MB value written into a row made a 1 MB log line at every attempt."""
    stored = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "baggage": "k=" + "v" * 1_000_000}
    task_id = conn.execute(
        "INSERT INTO omnispindle.tasks (task_type, trace_context) VALUES ('t', %s::jsonb) "
        "RETURNING id",
        [json.dumps(stored)],
    ).fetchone()[0]
    start_worker({"t": lambda task: {"ran": True}})
    assert client.wait_for_task(task_id, timeout=30)["result"] == {"ran": True}
    [execute] = poll(lambda: by_name(spans, "execute t"), timeout=10)
    assert format(execute.context.trace_id, "032x") == "a" * 32
    assert max((len(r.getMessage()) for r in caplog.records), default=0) < 10_000


def test_a_failure_whose_str_raises_is_recorded_on_its_span(client, start_worker, spans):
    class Hostile(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    def hostile(task):
        raise Hostile

    start_worker({"hostile": hostile})
    failed = client.wait_for_task(client.submit_task("hostile", max_retries=0), timeout=30)
    assert failed["state"] == "failed"
    poll(lambda: by_name(spans, "execute hostile"), timeout=10)
    [execute] = by_name(spans, "execute hostile")
    assert execute.status.status_code is StatusCode.ERROR

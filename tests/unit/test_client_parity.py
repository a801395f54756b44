"""The blocking and the asyncio client offer the same methods with the same parameters."""

from __future__ import annotations

import inspect

import pytest

from omnispindle import AsyncTaskQueueClient, TaskQueueClient

# What only one of them has, and why: the asyncio client opens its pool in a
# coroutine, and each is a context manager of its own kind.
ONLY_BLOCKING = {"__enter__", "__exit__"}
ONLY_ASYNC = {"open", "__aenter__", "__aexit__"}


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member)
        and (not name.startswith("_") or name in ONLY_BLOCKING | ONLY_ASYNC | {"__init__"})
    }


def test_both_clients_offer_the_same_methods():
    blocking = set(public_methods(TaskQueueClient)) - ONLY_BLOCKING
    asynchronous = set(public_methods(AsyncTaskQueueClient)) - ONLY_ASYNC
    assert blocking == asynchronous
    assert ONLY_BLOCKING <= set(public_methods(TaskQueueClient))
    assert ONLY_ASYNC <= set(public_methods(AsyncTaskQueueClient))


@pytest.mark.parametrize("name", sorted(set(public_methods(TaskQueueClient)) - ONLY_BLOCKING))
def test_each_method_takes_the_same_parameters(name):
    blocking = inspect.signature(getattr(TaskQueueClient, name))
    asynchronous = inspect.signature(getattr(AsyncTaskQueueClient, name))
    shape = [(p.name, p.kind, p.default) for p in blocking.parameters.values()]
    assert shape == [(p.name, p.kind, p.default) for p in asynchronous.parameters.values()]


@pytest.mark.parametrize(
    "name",
    sorted(set(public_methods(TaskQueueClient)) - ONLY_BLOCKING - {"__init__", "stream_task"}),
)
def test_the_async_methods_are_coroutines(name):
    assert inspect.iscoroutinefunction(getattr(AsyncTaskQueueClient, name))
    assert not inspect.iscoroutinefunction(getattr(TaskQueueClient, name))


def test_streaming_is_an_iterator_in_both():
    """``stream_task`` checks its arguments at the call, then iterates (``async for``)."""
    assert not inspect.iscoroutinefunction(AsyncTaskQueueClient.stream_task)
    assert "AsyncIterator" in str(
        inspect.signature(AsyncTaskQueueClient.stream_task).return_annotation
    )
    assert "Iterator" in str(inspect.signature(TaskQueueClient.stream_task).return_annotation)

"""Batches whose entries depend on each other, by position or by a key of the caller's.

Example:
    >>> client.submit_batch([                                   # doctest: +SKIP
    ...     {"key": "fetch", "task_type": "fetch"},
    ...     {"key": "parse", "task_type": "parse", "dependencies": ["fetch"]},
    ...     {"task_type": "report", "dependencies": [entry(1), existing_task_id]},
    ... ])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from omnispindle._core.specs import BATCH_FIELDS, TaskSpec, options_of, task_spec
from omnispindle._core.validation import quoted
from omnispindle.errors import DependencyCycleError, ValidationError


class EntryRef(NamedTuple):
    """A dependency on another entry of the same batch, by its position."""

    position: int


def entry(index: int) -> EntryRef:
    """Refer to the batch entry at ``index`` (from 0) in a ``dependencies`` list."""
    return EntryRef(index)


# Entries per statement when a long batch without links between entries is
# sent in pieces (see plain_chunks).
CHUNK_SIZE = 2000


def batch_entries(tasks: Any) -> list[Any]:
    """The entries of a batch as a list.

    Raises:
        ValidationError: ``tasks`` is not a list (or other iterable) of entries.
    """
    if isinstance(tasks, (str, bytes, Mapping)) or not isinstance(tasks, Iterable):
        raise ValidationError("a batch must be a list of task dicts")
    return list(tasks)


def task_types(entries: list[Any]) -> list[str]:
    """The task types of a batch's entries, unchecked (for naming its tracing span)."""
    return [str(item.get("task_type")) for item in entries if isinstance(item, Mapping)]


def plain_chunks(entries: list[Any], size: int = CHUNK_SIZE) -> Iterator[list[TaskSpec]] | None:
    """A batch of more than ``size`` entries without keys, dependencies or
    idempotency keys, validated ``size`` entries at a time as they are asked
    for; None for any other batch, which ``batch_specs`` validates whole.

    The caller inserts one chunk while the next is validated. An invalid entry
    raises from the iterator (naming its index), and the caller rolls back.
    """
    if len(entries) <= size or not all(map(_plain, entries)):
        return None
    return (
        [
            _entry_spec(index, entries[index], {}, len(entries))
            for index in range(start, min(start + size, len(entries)))
        ]
        for start in range(0, len(entries), size)
    )


def _plain(item: Any) -> bool:
    """An entry that links to nothing: no key, dependencies or idempotency key."""
    if type(item) is not dict and not isinstance(item, Mapping):
        return False
    dependencies = item.get("dependencies")
    return (
        item.get("key") is None
        and item.get("idempotency_key") is None
        and (dependencies is None or (type(dependencies) in (list, tuple) and not dependencies))
    )


def batch_specs(tasks: Any) -> list[TaskSpec]:
    """Validate a batch and resolve its internal dependencies.

    Each entry's ``dependencies`` may hold existing task ids (ints), keys of
    other entries (strings, matching their ``key``) and ``entry(i)``.

    Raises:
        ValidationError: an entry is invalid or refers to no entry of the batch
            (its index is named); nothing is inserted.
        DependencyCycleError: entries depend on each other in a cycle.
    """
    entries = batch_entries(tasks)
    keys = _keys(entries)
    specs = [_entry_spec(index, item, keys, len(entries)) for index, item in enumerate(entries)]
    _reject_repeated_idempotency_keys(specs)
    _reject_cycles(specs)
    return specs


def _keys(entries: list[Any]) -> dict[str, int]:
    keys: dict[str, int] = {}
    for index, item in enumerate(entries):
        if type(item) is not dict and not isinstance(item, Mapping):  # the ABC check is slow
            raise ValidationError(f"batch entry {index}: must be a dict, got {type(item).__name__}")
        key = item.get("key")
        if key is None:
            continue
        if not isinstance(key, str) or not key:
            raise ValidationError(
                f"batch entry {index}: key must be a non-empty string, got {quoted(key)}"
            )
        if key in keys:
            raise ValidationError(
                f"batch entry {index}: key {quoted(key)} is already used by entry {keys[key]}"
            )
        keys[key] = index
    return keys


def _entry_spec(index: int, item: Mapping[str, Any], keys: dict[str, int], size: int) -> TaskSpec:
    unknown = set(item) - BATCH_FIELDS
    if unknown:
        raise ValidationError(f"batch entry {index}: unknown field(s) {sorted(map(str, unknown))}")
    if "task_type" not in item:
        raise ValidationError(f"batch entry {index}: task_type is required")
    try:
        ids, positions = _split_dependencies(item.get("dependencies"), keys, size)
        if index in positions:
            raise ValidationError("dependencies: an entry cannot depend on itself")
        options = options_of(item, dependencies=ids)
        spec = task_spec(item["task_type"], item.get("parameters"), options)
    except ValidationError as exc:
        raise type(exc)(f"batch entry {index}: {exc}") from None
    if not positions:
        return spec
    return spec._replace(entry_dependencies=tuple(dict.fromkeys(positions)))


def _split_dependencies(value: Any, keys: dict[str, int], size: int) -> tuple[list[Any], list[int]]:
    """Existing task ids, and positions of entries (from keys and ``entry(i)``)."""
    if value is None:
        return [], []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(f"dependencies must be a list, got {quoted(value)}")
    ids, positions = [], []
    for item in value:
        if isinstance(item, EntryRef):
            if (
                isinstance(item.position, bool)
                or not isinstance(item.position, int)
                or not 0 <= item.position < size
            ):
                raise ValidationError(
                    f"dependencies: entry({item.position!r}) is not a position "
                    f"in this batch of {size}"
                )
            positions.append(item.position)
        elif isinstance(item, str):
            if item not in keys:
                raise ValidationError(f"dependencies: {quoted(item)} is no key of this batch")
            positions.append(keys[item])
        else:
            ids.append(item)
    return ids, positions


def _reject_repeated_idempotency_keys(specs: list[TaskSpec]) -> None:
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        key = spec.idempotency_key
        if key is not None and key in seen:
            raise ValidationError(
                f"batch entry {index}: idempotency_key {quoted(key)} "
                f"is already used by entry {seen[key]}"
            )
        if key is not None:
            seen[key] = index


def _reject_cycles(specs: list[TaskSpec]) -> None:
    """Depth-first search over entry dependencies; a back edge is a cycle."""
    state = [0] * len(specs)  # 0 unvisited, 1 on the current path, 2 done
    for start in range(len(specs)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(specs[start].entry_dependencies))]
        path = [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state[child] == 1:
                cycle = path[path.index(child) :] + [child]
                raise DependencyCycleError(
                    "batch entries depend on each other in a cycle: " + " -> ".join(map(str, cycle))
                )
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(specs[child].entry_dependencies)))
                path.append(child)

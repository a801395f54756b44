"""Argument checks that run before anything reaches the database."""

from __future__ import annotations

import pytest

from omnispindle._core import batches, validation
from omnispindle._core.specs import TaskOptions, TaskSpec, task_spec
from omnispindle.errors import ValidationError

NAN = float("nan")
INF = float("inf")


def spec_of(task_type, parameters=None, **options) -> TaskSpec:
    """A task's spec from ``submit_task``'s arguments."""
    return task_spec(task_type, parameters, TaskOptions(**options))


BAD_TASK_TYPES = [None, 5, b"x", "", "   ", "\t\n", "x" * 201, "a\x00b", "t\ud800"]

# (keyword arguments of spec besides task_type, text the error must contain)
BAD_SPEC_ARGUMENTS = [
    ({"parameters": [1, 2]}, "parameters"),
    ({"parameters": "{}"}, "parameters"),
    ({"parameters": {"s": {1, 2}}}, "parameters"),
    ({"parameters": {"o": object()}}, "parameters"),
    ({"parameters": {"x": NAN}}, "parameters"),
    ({"parameters": {"x": INF}}, "parameters"),
    ({"parameters": {"s": "a\x00b"}}, "parameters"),
    ({"parameters": {"a\x00b": 1}}, "parameters"),
    ({"parameters": {"s": "\ud800"}}, "parameters"),
    ({"priority": "1"}, "priority"),
    ({"priority": 1.0}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": None}, "priority"),
    ({"priority": -1001}, "priority"),
    ({"priority": 1001}, "priority"),
    ({"max_retries": "3"}, "max_retries"),
    ({"max_retries": 3.0}, "max_retries"),
    ({"max_retries": False}, "max_retries"),
    ({"max_retries": None}, "max_retries"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 101}, "max_retries"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1.5}, "timeout"),
    ({"timeout": NAN}, "timeout"),
    ({"timeout": INF}, "timeout"),
    ({"timeout": "10"}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"retry_backoff": -0.1}, "retry_backoff"),
    ({"retry_backoff": 3600.5}, "retry_backoff"),
    ({"retry_backoff": NAN}, "retry_backoff"),
    ({"retry_backoff": INF}, "retry_backoff"),
    ({"retry_backoff": "1"}, "retry_backoff"),
    ({"retry_backoff": None}, "retry_backoff"),
    ({"retry_backoff": True}, "retry_backoff"),
    ({"dependencies": "12"}, "dependencies"),
    ({"dependencies": b"\x01"}, "dependencies"),
    ({"dependencies": {1: 2}}, "dependencies"),
    ({"dependencies": 7}, "dependencies"),
    ({"dependencies": ["1"]}, "dependencies"),
    ({"dependencies": [1.0]}, "dependencies"),
    ({"dependencies": [None]}, "dependencies"),
    ({"dependencies": [True]}, "dependencies"),
    ({"dependencies": [0]}, "dependencies"),
    ({"dependencies": [3, -2]}, "dependencies"),
    ({"required_capabilities": "gpu"}, "required_capabilities"),
    ({"required_capabilities": b"gpu"}, "required_capabilities"),
    ({"required_capabilities": 3}, "required_capabilities"),
    ({"required_capabilities": ["gpu", ""]}, "required_capabilities"),
    ({"required_capabilities": [1]}, "required_capabilities"),
    ({"required_capabilities": [None]}, "required_capabilities"),
    ({"required_capabilities": ["a\x00b"]}, "required_capabilities"),
    ({"required_capabilities": ["\udcff"]}, "required_capabilities"),
    ({"required_capabilities": {"gpu": False}}, "required_capabilities"),
]


@pytest.mark.parametrize("task_type", BAD_TASK_TYPES)
def test_bad_task_type_is_refused(task_type):
    with pytest.raises(ValidationError, match="task_type"):
        spec_of(task_type)


@pytest.mark.parametrize(
    ("arguments", "named"),
    BAD_SPEC_ARGUMENTS,
    ids=[repr(arguments) for arguments, _ in BAD_SPEC_ARGUMENTS],
)
def test_bad_argument_is_refused_by_name(arguments, named):
    with pytest.raises(ValidationError, match=named):
        spec_of("t", **arguments)


def test_defaults():
    spec = spec_of("t")
    assert spec == TaskSpec(
        task_type="t",
        parameters_json="{}",
        priority=0,
        max_attempts=4,
        retry_backoff=1.0,
        timeout=None,
        required_capabilities=(),
        dependencies=(),
    )


@pytest.mark.parametrize(("max_retries", "max_attempts"), [(0, 1), (3, 4), (100, 101)])
def test_max_attempts_is_one_more_than_max_retries(max_retries, max_attempts):
    assert spec_of("t", max_retries=max_retries).max_attempts == max_attempts


def test_parameters_become_json():
    spec = spec_of("t", {"a": [1, 2.5, None, True], "b": {"c": "ü"}})
    assert spec.parameters_json == '{"a": [1, 2.5, null, true], "b": {"c": "ü"}}'


def test_text_that_merely_looks_like_an_escaped_nul_is_accepted():
    # A backslash followed by "u0000" is ordinary text, not a NUL character.
    assert spec_of("t", {"path": "C:\\u0000"}).parameters_json


def test_dependencies_are_deduplicated_in_order():
    assert spec_of("t", dependencies=[5, 2, 5, 9, 2]).dependencies == (5, 2, 9)


def test_capabilities_are_deduplicated_in_order():
    caps = spec_of("t", required_capabilities=["gpu", "a", "gpu"])
    assert caps.required_capabilities == ("gpu", "a")


@pytest.mark.parametrize("priority", [-1000, 0, 1000])
def test_priority_bounds_are_accepted(priority):
    assert spec_of("t", priority=priority).priority == priority


@pytest.mark.parametrize(("timeout", "stored"), [(None, None), (1, 1.0), (0.25, 0.25), (1e9, 1e9)])
def test_timeout_accepts_ints_and_floats(timeout, stored):
    spec = spec_of("t", timeout=timeout)
    assert spec.timeout == stored and (stored is None or isinstance(spec.timeout, float))


@pytest.mark.parametrize(("backoff", "stored"), [(0, 0.0), (2, 2.0), (0.5, 0.5), (3600, 3600.0)])
def test_retry_backoff_accepts_ints_and_floats(backoff, stored):
    spec = spec_of("t", retry_backoff=backoff)
    assert spec.retry_backoff == stored and isinstance(spec.retry_backoff, float)


def test_longest_task_type_is_accepted():
    assert spec_of("x" * 200).task_type == "x" * 200


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("batch", [{"task_type": "t"}, "tasks", b"tasks", None, 3])
def test_batch_must_be_a_list(batch):
    with pytest.raises(ValidationError, match="batch"):
        batches.batch_specs(batch)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("t", "must be a dict"),
        (["t"], "must be a dict"),
        (None, "must be a dict"),
        ({"task_type": "t", "colour": "red"}, "colour"),
        ({"task_type": "t", "max_attempts": 2}, "max_attempts"),
        ({"parameters": {}}, "task_type"),
        ({"task_type": ""}, "task_type"),
        ({"task_type": "t", "priority": 5000}, "priority"),
        ({"task_type": "t", "dependencies": [0]}, "dependencies"),
    ],
)
def test_bad_batch_entry_names_its_index(entry, named):
    batch = [{"task_type": "ok"}, {"task_type": "ok"}, entry, {"task_type": "ok"}]
    with pytest.raises(ValidationError, match="batch entry 2") as raised:
        batches.batch_specs(batch)
    assert named in str(raised.value)


def test_batch_specs_keep_order_and_accept_any_iterable():
    specs = batches.batch_specs({"task_type": f"t{n}", "priority": n} for n in range(3))
    assert [(s.task_type, s.priority) for s in specs] == [("t0", 0), ("t1", 1), ("t2", 2)]


def test_batch_entry_takes_every_submit_argument():
    entry = {
        "task_type": "t",
        "parameters": {"a": 1},
        "priority": 2,
        "dependencies": [4],
        "max_retries": 0,
        "timeout": 3,
        "retry_backoff": 0,
        "required_capabilities": ["c"],
    }
    assert batches.batch_specs([entry]) == [spec_of(**entry)]


def test_empty_batch_is_empty():
    assert batches.batch_specs([]) == []


# ---------------------------------------------------------------- ids and numbers


@pytest.mark.parametrize("value", ["1", -1, 0, 2**63, True, 1.0, None, [1]])
def test_bad_task_id_is_refused(value):
    with pytest.raises(ValidationError, match="task id"):
        validation.task_id(value)


@pytest.mark.parametrize("value", [1, 2**40, 2**63 - 1])
def test_task_id_accepts_positive_ints(value):
    assert validation.task_id(value) == value


@pytest.mark.parametrize("value", [0, -1, -0.5, NAN, INF, -INF, "1", True, None, [1]])
def test_bad_positive_number_is_refused_by_name(value):
    with pytest.raises(ValidationError, match="poll_interval"):
        validation.positive_number("poll_interval", value)


@pytest.mark.parametrize(("value", "stored"), [(1, 1.0), (0.001, 0.001), (30, 30.0)])
def test_positive_number_returns_a_float(value, stored):
    result = validation.positive_number("interval", value)
    assert result == stored and isinstance(result, float)


def test_positive_number_may_allow_none():
    assert validation.optional_positive_number("timeout", None) is None


@pytest.mark.parametrize(
    "check",
    [
        lambda: validation.positive_number("interval", 10**400),
        lambda: validation.retry_backoff(10**400),
        lambda: validation.run_after(None, 10**400),
    ],
)
def test_an_int_too_large_for_a_float_is_a_validation_error(check):
    """It raised OverflowError from math.isfinite."""
    with pytest.raises(ValidationError):
        check()

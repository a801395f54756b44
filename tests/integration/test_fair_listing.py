"""A fair claim's list of groups, which a worker's steps take from the step
before when it is fresh instead of probing every group again."""

from __future__ import annotations

import collections
import uuid

import psycopg
import pytest

from .test_fair_share import fair_claim, group_of_id
from .test_type_limits import poll

STEP = (
    "SELECT c.id, t.group_key FROM omnispindle.complete_and_claim("
    "ARRAY[]::bigint[], ARRAY[]::uuid[], ARRAY[]::jsonb[], ARRAY['shared'], "
    "%s::text[], %s, %s, 30, NULL, NULL) c "
    "JOIN omnispindle.tasks t ON t.id = c.id WHERE NOT c.dropped"
)


def step(worker, limit, capabilities=()):
    """A worker's step that claims up to ``limit``: the groups of what it took."""
    rows = worker.execute(STEP, [list(capabilities), limit, uuid.uuid4()]).fetchall()
    return [group for _, group in rows]


def group_probes(worker):
    """Scans of tasks_group_ready_idx by the worker's session not yet flushed to
    the statistics (so only differences within a transaction count)."""
    return worker.execute(
        "SELECT pg_stat_get_xact_numscans('omnispindle.tasks_group_ready_idx'::regclass)"
    ).fetchone()[0]


def test_a_step_takes_the_groups_the_step_before_listed(client, dsn):
    """Each step probed every group to list them again (21 probes for 20 groups
    and the tasks without a key), then took each turn's candidates."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n:02}"} for n in range(20)] * 3)
    probes = []
    with psycopg.connect(dsn) as worker:
        for _ in range(5):  # the listing is taken when under 50 ms old
            assert len(step(worker, 4)) == 4
            worker.commit()
            before = group_probes(worker)
            assert len(step(worker, 4)) == 4
            probes.append(group_probes(worker) - before)
            worker.commit()
    assert min(probes) <= 4 + 2, probes  # each turn's candidates, and no listing


def test_a_step_for_other_capabilities_lists_the_groups_again(client, dsn):
    """Through a pooler, another worker's listing may be in the session: one made
    for other capabilities may have left out groups this worker could start."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n:02}"} for n in range(20)] * 3)
    with psycopg.connect(dsn) as worker:
        assert len(step(worker, 4, capabilities=["gpu"])) == 4
        worker.commit()
        before = group_probes(worker)
        assert len(step(worker, 4)) == 4
        assert group_probes(worker) - before > 20  # every group, and each turn's candidates


def test_steps_from_a_listing_share_turns_as_listing_claims_do(client, dsn):
    """The groups and the tasks without a group_key take turns alike whether a
    step lists them or takes the listing of the step before."""
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch(
        [{"task_type": "shared", "group_key": g} for g in ("a", "b", None) for _ in range(20)]
    )
    with psycopg.connect(dsn, autocommit=True) as worker:
        taken = [group for _ in range(6) for group in step(worker, 2)]
    # Two slots a step, three groups with none running: each group twice in 3 steps.
    assert collections.Counter(taken) == {"a": 4, "b": 4, None: 4}, taken


def test_a_group_that_appears_waits_for_the_next_listing_only(client, dsn):
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": "a"}] * 50)
    with psycopg.connect(dsn, autocommit=True) as worker:
        assert step(worker, 1) == ["a"]
        client.submit_task("shared", group_key="new")
        # Fewer running than "a": first in the claim once listed.
        poll(lambda: step(worker, 1) == ["new"])
    with psycopg.connect(dsn, autocommit=True) as other:
        assert step(other, 1) == ["a"]
        client.submit_task("shared", group_key="newer")
        # A claim made by itself, not in a step, lists the groups at once.
        [[taken]] = fair_claim(other, 1)
        assert group_of_id(other, taken) == "newer"


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "[1]",
        '{"shared": {"at": "soon", "groups": 5}}',
        # A time to come: always fresh, and nothing in it can start.
        '{"shared": {"at": 1e20, "groups": [["g0", "yes"], 7]}}',
    ],
)
def test_a_session_setting_the_listing_to_what_is_not_one_still_claims(client, dsn, value):
    client.set_task_type_strategy("shared", "fair")
    client.submit_batch([{"task_type": "shared", "group_key": f"g{n}"} for n in range(3)])
    with psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute("SELECT set_config('omnispindle_fair.groups', %s, false)", [value])
        assert [len(step(worker, 1)) for _ in range(3)] == [1, 1, 1]

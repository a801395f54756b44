"""Workflows as DAGs submitted in one batch: fan-out/fan-in, chains, failure
propagation, clean-up tasks, bad batches and progress reports."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from omnispindle import ValidationError, entry
from omnispindle._db import queries as q
from omnispindle.errors import DependencyCycleError, UnknownDependencyError

FAN_WIDTH = 5000
CHAIN_LENGTH = 500


def node(task_data):
    """No-op: echoes its number and names the parents whose results it saw."""
    return {"n": task_data["parameters"]["n"], "parents": sorted(task_data["dependency_results"])}


def boom(task_data):
    raise ZeroDivisionError("boom")


def task_count(queue) -> int:
    return sum(row["count"] for row in queue.db.run(q.tasks.count_tasks_by_state()))


@pytest.mark.slow
def test_fan_out_and_in_over_five_thousand_tasks(client, start_worker):
    def sink(task_data):
        results = task_data["dependency_results"]
        return {
            "count": len(results),
            "sum": sum(r["n"] for r in results.values()),
            "parents": sorted(results),
        }

    middle = range(1, FAN_WIDTH + 1)
    ids = client.submit_batch(
        [{"key": "root", "task_type": "node", "parameters": {"n": 0}}]
        + [{"task_type": "node", "parameters": {"n": n}, "dependencies": ["root"]} for n in middle]
        + [{"task_type": "sink", "dependencies": [entry(i) for i in middle]}]
    )
    start_worker({"node": node, "sink": sink}, concurrency=8)
    tasks = client.wait_for_batch(ids, timeout=120)
    root, middles, last = tasks[0], tasks[1:-1], tasks[-1]

    assert {t["state"] for t in tasks} == {"succeeded"}
    assert all(t["started_at"] >= root["finished_at"] for t in middles)
    assert all(
        t["result"] == {"n": t["parameters"]["n"], "parents": [root["task_id"]]} for t in middles
    )
    assert last["started_at"] >= max(t["finished_at"] for t in middles)
    assert last["result"] == {
        "count": FAN_WIDTH,
        "sum": sum(middle),
        "parents": sorted(t["task_id"] for t in middles),
    }


@pytest.mark.slow
def test_chain_of_five_hundred_passes_a_counter(client, start_worker):
    def link(task_data):
        parents = task_data["dependency_results"]
        return {"count": 1 + sum(r["count"] for r in parents.values()), "parents": sorted(parents)}

    # Odd links name their parent by key, even ones by position: both forms resolve.
    ids = client.submit_batch(
        [
            {
                "key": f"link-{i}",
                "task_type": "link",
                "dependencies": [] if i == 0 else [f"link-{i - 1}" if i % 2 else entry(i - 1)],
            }
            for i in range(CHAIN_LENGTH)
        ]
    )
    start_worker({"link": link}, concurrency=8)
    tasks = client.wait_for_batch(ids, timeout=60)

    assert {t["state"] for t in tasks} == {"succeeded"}
    for parent, child in itertools.pairwise(tasks):
        assert child["dependencies"] == [parent["task_id"]]
        assert child["started_at"] >= parent["finished_at"]
    assert tasks[-1]["result"] == {"count": CHAIN_LENGTH, "parents": [tasks[-2]["task_id"]]}


# A diamond (a -> b, c -> d) under a root, with side branches; b fails.
FAILING_DAG = {
    "root": [],
    "a": ["root"],
    "b": ["a"],
    "c": ["a"],
    "d": ["b", "c"],
    "e": ["b"],  # a side branch of the failing task
    "f": ["d", "h"],  # below the diamond, also fed by the unrelated branch
    "g": ["c"],  # a side branch of the failing task's sibling
    "h": ["root"],  # an unrelated branch
    "i": ["h"],
    "lone": [],  # not connected at all
}


def descendants(dag: dict[str, list[str]], of: str) -> set[str]:
    found: set[str] = set()
    frontier = {of}
    while frontier:
        frontier = {name for name, parents in dag.items() if frontier & set(parents)} - found
        found |= frontier
    return found


def test_a_failure_cancels_exactly_its_descendants(client, start_worker):
    names = list(FAILING_DAG)
    ids = client.submit_batch(
        [
            {
                "key": name,
                "task_type": "boom" if name == "b" else "node",
                "parameters": {"n": index},
                "dependencies": FAILING_DAG[name],
                "max_retries": 0,
            }
            for index, name in enumerate(names)
        ]
    )
    start_worker({"node": node, "boom": boom}, concurrency=4)
    tasks = dict(zip(names, client.wait_for_batch(ids, timeout=30)))

    doomed = descendants(FAILING_DAG, "b")
    assert doomed == {"d", "e", "f"}
    assert tasks["b"]["state"] == "failed"
    for name, task in tasks.items():
        if name in doomed:
            assert (task["state"], task["cancel_reason"]) == (
                "cancelled",
                f"dependency {tasks['b']['task_id']} failed",
            ), name
            assert task["started_at"] is None, name
        elif name != "b":
            assert (task["state"], task["cancel_reason"]) == ("succeeded", None), name


def test_a_clean_up_task_runs_after_its_parent_failed(client, start_worker):
    seen: dict[int, dict] = {}

    def record(task_data):
        seen[task_data["task_id"]] = task_data
        return node(task_data)

    ids = client.submit_batch(
        [
            {"key": "parent", "task_type": "boom", "max_retries": 0},
            {
                "key": "cleanup",
                "task_type": "node",
                "parameters": {"n": 1},
                "dependencies": ["parent"],
                "allow_failed_dependencies": True,
            },
            {
                "key": "after",
                "task_type": "node",
                "parameters": {"n": 2},
                "dependencies": ["cleanup"],
            },
            {
                "key": "sibling",
                "task_type": "node",
                "parameters": {"n": 3},
                "dependencies": ["parent"],
            },
            # Tolerates a cancelled parent too: the sibling is cancelled, not failed.
            {
                "key": "sweep",
                "task_type": "node",
                "parameters": {"n": 4},
                "dependencies": ["sibling"],
                "allow_failed_dependencies": True,
            },
        ]
    )
    start_worker({"node": record, "boom": boom})
    parent, cleanup, after, sibling, sweep = client.wait_for_batch(ids, timeout=30)

    assert [t["state"] for t in (parent, cleanup, after, sibling, sweep)] == [
        "failed",
        "succeeded",
        "succeeded",
        "cancelled",
        "succeeded",
    ]
    assert sibling["cancel_reason"] == f"dependency {parent['task_id']} failed"

    failures = seen[cleanup["task_id"]]["dependency_failures"]
    assert list(failures) == [parent["task_id"]]
    failure = failures[parent["task_id"]]
    assert (failure["state"], failure["cancel_reason"]) == ("failed", None)
    assert (failure["error"]["type"], failure["error"]["message"], failure["error"]["attempt"]) == (
        "ZeroDivisionError",
        "boom",
        1,
    )
    assert seen[cleanup["task_id"]]["dependency_results"] == {}

    assert seen[after["task_id"]]["dependency_failures"] == {}
    assert seen[after["task_id"]]["dependency_results"] == {cleanup["task_id"]: cleanup["result"]}

    assert seen[sweep["task_id"]]["dependency_failures"] == {
        sibling["task_id"]: {
            "state": "cancelled",
            "error": None,
            "cancel_reason": sibling["cancel_reason"],
        }
    }


def test_a_parent_retried_by_hand_is_not_counted_twice(client, conn, start_worker):
    release = threading.Event()
    ids = client.submit_batch(
        [
            {"key": "flaky", "task_type": "boom", "max_retries": 0},
            {"key": "slow", "task_type": "hold"},
            {
                "task_type": "node",
                "parameters": {"n": 0},
                "dependencies": ["flaky", "slow"],
                "allow_failed_dependencies": True,
            },
        ]
    )
    flaky, _slow, cleanup = ids
    start_worker(
        {"boom": boom, "hold": lambda task_data: {"released": release.wait(30)}, "node": node},
        concurrency=2,
    )
    try:
        client.wait_for_task(flaky, timeout=30)
        # The README's retry by hand.
        conn.execute(
            "UPDATE omnispindle.tasks SET state = 'pending', max_attempts = attempts + 1, "
            "finished_at = NULL, run_after = now() WHERE id = %s AND state = 'failed'",
            [flaky],
        )
        assert client.wait_for_task(flaky, timeout=30)["state"] == "failed"
        assert client.get_task(cleanup)["state"] == "blocked"  # slow is still running
    finally:
        release.set()


def test_a_dependent_brought_back_by_a_retry_is_waited_for_again(client, conn, start_worker):
    # sweep had counted sibling's cancel as done; once a retry brings sibling
    # back, sweep waits for it again, not only for slow.
    ids = client.submit_batch(
        [
            {"key": "flaky", "task_type": "boom", "max_retries": 0},
            {"key": "sibling", "task_type": "node", "dependencies": ["flaky"]},
            {"key": "slow", "task_type": "hold"},
            {
                "task_type": "node",
                "parameters": {"n": 0},
                "dependencies": ["sibling", "slow"],
                "allow_failed_dependencies": True,
            },
        ]
    )
    flaky, sibling, slow, sweep = ids
    worker = start_worker({"boom": boom})
    client.wait_for_task(flaky, timeout=30)
    worker.stop(timeout=30)  # so that the retried flaky stays pending
    assert client.get_task(sibling)["state"] == "cancelled"

    conn.execute("SELECT * FROM omnispindle.retry_task(%s, with_dependents => true)", [flaky])
    assert client.get_task(sibling)["state"] == "blocked"
    start_worker({"hold": lambda task_data: {"held": True}})
    assert client.wait_for_task(slow, timeout=30)["state"] == "succeeded"

    assert client.get_task(sweep)["state"] == "blocked"  # sibling has not run yet
    pending = conn.execute(
        "SELECT pending_dependencies FROM omnispindle.tasks WHERE id = %s", [sweep]
    ).fetchone()
    assert pending == (1,)


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(
            [
                {"key": "a", "task_type": "t", "dependencies": ["b"]},
                {"key": "b", "task_type": "t", "dependencies": ["a"]},
            ],
            id="two-by-key",
        ),
        pytest.param(
            [
                {"task_type": "t"},
                {"key": "b", "task_type": "t", "dependencies": [entry(3), entry(0)]},
                {"key": "c", "task_type": "t", "dependencies": ["b"]},
                {"key": "d", "task_type": "t", "dependencies": ["c"]},
            ],
            id="three-mixed",
        ),
        pytest.param(
            [{"task_type": "t", "dependencies": [entry((i + 1) % 50)]} for i in range(50)],
            id="fifty-by-position",
        ),
    ],
)
def test_a_cycle_in_a_batch_inserts_nothing(client, queue, batch):
    with pytest.raises(DependencyCycleError, match="cycle"):
        client.submit_batch(batch)
    assert task_count(queue) == 0


@pytest.mark.parametrize(
    "batch, message",
    [
        pytest.param(
            [{"key": "a", "task_type": "t", "dependencies": ["a"]}], "itself", id="self-by-key"
        ),
        pytest.param(
            [{"task_type": "t"}, {"task_type": "t", "dependencies": [entry(1)]}],
            "itself",
            id="self-by-position",
        ),
        pytest.param(
            [{"key": "a", "task_type": "t"}, {"task_type": "t", "dependencies": ["b"]}],
            "no key",
            id="unknown-key",
        ),
        pytest.param(
            [{"task_type": "t"}, {"task_type": "t", "dependencies": [entry(99)]}],
            "entry\\(99\\)",
            id="position-out-of-range",
        ),
        pytest.param(
            [{"task_type": "t"}, {"task_type": "t", "dependencies": [entry(-1)]}],
            "entry\\(-1\\)",
            id="negative-position",
        ),
        pytest.param(
            [{"key": "a", "task_type": "t"}, {"key": "a", "task_type": "t"}],
            "already used",
            id="duplicate-key",
        ),
    ],
)
def test_a_bad_reference_in_a_batch_inserts_nothing(client, queue, batch, message):
    with pytest.raises(ValidationError, match=message) as raised:
        client.submit_batch(batch)
    assert not isinstance(raised.value, DependencyCycleError)
    assert "batch entry" in str(raised.value)
    assert task_count(queue) == 0


def test_an_unknown_task_id_beside_entry_references_inserts_nothing(client, queue):
    with pytest.raises(UnknownDependencyError):
        client.submit_batch(
            [{"key": "a", "task_type": "t"}, {"task_type": "t", "dependencies": ["a", 10**12]}]
        )
    assert task_count(queue) == 0


def test_progress_counts_up_to_the_total(client, start_worker):
    first_report = threading.Event()

    def gated(task_data):
        # Held until the first report, so that later ones must follow it.
        first_report.wait(30)
        return {}

    early = client.submit_batch([{"task_type": "quick"}] * 10)
    late = client.submit_batch([{"task_type": "gated"}] * 10)
    start_worker({"quick": lambda task_data: {}, "gated": gated}, concurrency=4)
    client.wait_for_batch(early, timeout=30)
    reports: list[tuple[int, int]] = []

    def progress(finished, total):
        reports.append((finished, total))
        first_report.set()

    client.wait_for_batch(early + late, timeout=30, progress=progress)
    assert reports[0] == (10, 20)
    assert reports[-1] == (20, 20)
    assert {total for _, total in reports} == {20}
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(reports))


def edges_read(conn, statement: str, params) -> int:
    """Rows of task_dependencies that ``statement`` read, through an index or a
    scan, its triggers included: counted for the transaction, so it runs in one."""
    with conn.transaction():
        conn.execute(statement, params)
        return conn.execute("""
            SELECT idx_tup_fetch + seq_tup_read FROM pg_stat_xact_user_tables
            WHERE relid = 'omnispindle.task_dependencies'::regclass""").fetchone()[0]


def test_a_cancel_at_the_head_of_a_chain_reads_the_chains_edges_only(client, conn):
    # Other workflows' edges, which the cascade has no reason to read.
    client.submit_batch(fan_out_in_batch(2000))
    ids = client.submit_batch(
        [{"task_type": "node", "dependencies": [entry(i - 1)] if i else []} for i in range(100)]
    )
    fetched = edges_read(conn, "SELECT omnispindle.cancel_task(%s, 'test')", [ids[0]])
    assert {client.get_task(i)["state"] for i in ids} == {"cancelled"}
    # Each link's edge a few times over; a read of every edge at each link was 400,000.
    assert fetched < 10 * len(ids)


def test_a_retry_with_dependents_of_a_chain_reads_the_chains_edges_only(client, conn, start_worker):
    ids = client.submit_batch(
        [{"task_type": "boom", "max_retries": 0}]
        + [{"task_type": "node", "dependencies": [entry(i - 1)]} for i in range(1, 100)]
    )
    client.submit_batch(fan_out_in_batch(2000))  # other workflows' edges, left waiting
    worker = start_worker({"boom": boom}, concurrency=1)
    client.wait_for_task(ids[0], timeout=30)
    worker.stop(timeout=30)  # so that the retried head stays pending
    assert {client.get_task(i)["state"] for i in ids[1:]} == {"cancelled"}
    fetched = edges_read(conn, "SELECT omnispindle.retry_task(%s, true)", [ids[0]])
    assert client.get_task(ids[0])["state"] == "pending"
    assert {client.get_task(i)["state"] for i in ids[1:]} == {"blocked"}
    assert fetched < 10 * len(ids)


def test_a_retry_with_dependents_of_a_chain_compiles_no_plan_per_link(client, conn, start_worker):
    """A round's plan that costs past jit_above_cost (0 here, as a larger table's
    statistics make it) was compiled by JIT at each link: 30 ms a link."""
    ids = client.submit_batch(
        [{"task_type": "boom", "max_retries": 0}]
        + [{"task_type": "node", "dependencies": [entry(i - 1)]} for i in range(1, 300)]
    )
    worker = start_worker({"boom": boom}, concurrency=1)
    client.wait_for_task(ids[0], timeout=30)
    worker.stop(timeout=30)
    conn.execute("SET jit_above_cost = 0")
    start = time.perf_counter()
    conn.execute("SELECT omnispindle.retry_task(%s, true)", [ids[0]])
    elapsed = time.perf_counter() - start
    assert {client.get_task(i)["state"] for i in ids[1:]} == {"blocked"}
    assert elapsed < 3, elapsed


def fan_out_in_batch(width: int) -> list[dict]:
    return (
        [{"key": "root", "task_type": "node"}]
        + [{"task_type": "node", "dependencies": ["root"]} for _ in range(width)]
        + [{"task_type": "node", "dependencies": [entry(i) for i in range(1, width + 1)]}]
    )


def rows_read(conn, statement: str, params) -> int:
    """Rows of every table that ``statement`` read, through an index or a scan."""
    with conn.transaction():
        conn.execute(statement, params)
        return conn.execute(
            "SELECT sum(idx_tup_fetch + seq_tup_read) FROM pg_stat_xact_user_tables"
        ).fetchone()[0]


def test_a_workflows_graph_reads_its_own_tasks_only(client, conn):
    # Other work: tasks and other workflows' edges, not linked to this one.
    client.submit_batch([{"task_type": "other"}] * 20_000)
    client.submit_batch(fan_out_in_batch(2000))
    ids = client.submit_batch(
        [{"task_type": "node", "dependencies": [entry(i - 1)] if i else []} for i in range(100)]
    )
    conn.execute("ANALYZE omnispindle.tasks, omnispindle.task_dependencies")
    graph = q.dashboard.task_graph(ids[50], 200)
    fetched = rows_read(conn, graph.statement.text, graph.params)
    nodes = conn.execute(graph.statement.text, graph.params).fetchall()
    assert [node[0] for node in nodes] == ids
    # Each task and edge a few times over; a merge join read every task: 22,102 more.
    assert fetched < 20 * len(ids)

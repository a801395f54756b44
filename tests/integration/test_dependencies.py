"""Dependencies resolved by triggers: blocked until every parent succeeded."""

from __future__ import annotations

import random
import threading

import pytest

from omnispindle.errors import DependencyStateError


def math_executor(task_data):
    parameters = task_data["parameters"]
    values = list(parameters["values"]) + [
        r["result"] for r in task_data["dependency_results"].values()
    ]
    if parameters["operation"] == "sum":
        return {"result": sum(values)}
    product = 1
    for value in values:
        product *= value
    return {"result": product}


def state_of(conn, task_id):
    return conn.execute(
        "SELECT state::text FROM omnispindle.tasks WHERE id = %s", [task_id]
    ).fetchone()[0]


@pytest.mark.smoke
def test_seed_two_step_workflow(client, start_worker):
    step1_id = client.submit_task(
        task_type="math", parameters={"operation": "sum", "values": [1, 2, 3]}
    )
    step2_id = client.submit_task(
        task_type="math",
        parameters={"operation": "multiply", "values": [10]},
        dependencies=[step1_id],
    )
    assert client.get_task(step2_id)["state"] == "blocked"
    assert client.get_task(step2_id)["dependencies"] == [step1_id]
    start_worker({"math": math_executor})
    step1, step2 = client.wait_for_batch([step1_id, step2_id], timeout=30)
    assert step1["result"] == {"result": 6}
    assert step2["result"] == {"result": 60}  # 10 times the result of step 1
    assert step2["started_at"] >= step1["finished_at"]


def test_child_waits_for_every_parent(client, conn, start_worker):
    parents = [client.submit_task("gate", {"n": n}) for n in range(3)]
    child = client.submit_task("math", {"operation": "sum", "values": []}, dependencies=parents)
    start_worker({"gate": lambda task: {"result": task["parameters"]["n"]}}, capabilities=["gate"])
    client.wait_for_batch(parents, timeout=30)
    assert state_of(conn, child) == "pending"  # the trigger, not Python, made it ready
    start_worker({"math": math_executor}, capabilities=["math"])
    assert client.wait_for_task(child, timeout=30)["result"] == {"result": 0 + 1 + 2}


def test_dependency_already_succeeded_makes_a_ready_task(client, start_worker):
    start_worker({"math": math_executor})
    parent = client.submit_task("math", {"operation": "sum", "values": [4]})
    client.wait_for_task(parent, timeout=30)
    child = client.submit_task("math", {"operation": "sum", "values": [1]}, dependencies=[parent])
    assert client.wait_for_task(child, timeout=30)["result"] == {"result": 5}


def test_failure_cancels_exactly_the_descendants(client, conn, start_worker):
    root = client.submit_task("boom", max_retries=0)
    child = client.submit_task("math", {"operation": "sum", "values": [1]}, dependencies=[root])
    grandchild = client.submit_task(
        "math", {"operation": "sum", "values": [1]}, dependencies=[child]
    )
    bystander = client.submit_task("math", {"operation": "sum", "values": [1]})
    start_worker({"boom": lambda task: 1 / 0, "math": math_executor})
    tasks = client.wait_for_batch([root, child, grandchild, bystander], timeout=30)
    assert [t["state"] for t in tasks] == ["failed", "cancelled", "cancelled", "succeeded"]
    assert tasks[1]["cancel_reason"] == f"dependency {root} failed"
    assert tasks[2]["cancel_reason"] == f"dependency {root} failed"
    with pytest.raises(DependencyStateError):
        client.submit_task("math", {"operation": "sum", "values": []}, dependencies=[grandchild])


def test_children_submitted_while_parents_finish_are_never_stranded(client, start_worker):
    """Parents lock FOR SHARE at submit, so no child misses its parent's completion."""
    start_worker({"math": math_executor}, concurrency=4)
    parents = client.submit_batch(
        [{"task_type": "math", "parameters": {"operation": "sum", "values": [1]}}] * 60
    )
    children: list[int] = []

    def submit_children():
        rng = random.Random(7)
        for _ in range(120):
            picked = rng.sample(parents, 2)
            children.append(
                client.submit_task("math", {"operation": "sum", "values": []}, dependencies=picked)
            )

    submitter = threading.Thread(target=submit_children)
    submitter.start()
    submitter.join(timeout=60)
    tasks = client.wait_for_batch(parents + children, timeout=60)
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert all(t["result"] == {"result": 2} for t in tasks[len(parents) :])

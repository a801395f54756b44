"""Ready tasks that no live worker can run for want of a capability, while live
workers run their type: ``omnispindle status`` warns of them and a gauge counts
them. They waited with nothing but a pending count and an aging oldest task."""

from __future__ import annotations

import json

from omnispindle.cli.main import main
from omnispindle.prometheus import exposition

from ..acceptance.workers import poll

DEADLINE = 30
GAUGE = "omnispindle_tasks_unclaimable"


def ok(task):
    return {}


def status(capsys, dsn: str, *args: str) -> str:
    capsys.readouterr()
    assert main(["status", *args, "--dsn", dsn]) == 0
    return capsys.readouterr().out


def warnings(capsys, dsn: str) -> list[str]:
    return [line for line in status(capsys, dsn).splitlines() if line.startswith("warning:")]


def gauge(queue) -> dict[str, float]:
    samples = [line for line in exposition(queue.reads).splitlines() if line.startswith(GAUGE)]
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in samples}


def live_workers(conn, count: int) -> None:
    """Wait until ``count`` workers have registered and are active."""
    query = "SELECT count(*) FROM omnispindle.workers WHERE state = 'active'"
    poll(lambda: conn.execute(query).fetchone()[0] == count, DEADLINE)


def test_a_capability_no_live_worker_declares_is_named_and_counted(
    capsys, dsn, client, queue, start_worker, conn
):
    start_worker({"resize": ok}, capabilities=["resize", "gpu"], name="gpu-1")
    live_workers(conn, 1)
    # Paused, the type's tasks stay pending, those a worker could run included.
    client.pause_task_type("resize")
    client.submit_task("resize", required_capabilities=["GPU"])
    client.submit_task("resize", required_capabilities=["GPU"])
    client.submit_task("resize", required_capabilities=["gpu"])
    client.submit_task("resize")
    # No live worker runs this type: it waits for a worker, not a capability.
    client.submit_task("transcode", required_capabilities=["gpu"])
    assert warnings(capsys, dsn) == [
        (
            "warning: 2 ready tasks of type resize wait: they need GPU (a live worker declares "
            "gpu), which no live worker of the type declares"
        )
    ]
    report = json.loads(status(capsys, dsn, "--json"))
    assert report["unclaimable"] == [
        {
            "task_type": "resize",
            "required_capabilities": ["GPU"],
            "ready": 2,
            "missing_capabilities": ["GPU"],
        }
    ]
    assert gauge(queue) == {"resize": 2.0, "transcode": 0.0}
    assert queue.get_metrics()["totals"]["unclaimable"] == 2


def test_a_stopped_workers_capabilities_do_not_count(
    capsys, dsn, client, queue, start_worker, conn
):
    start_worker({"render": ok}, capabilities=["render"], name="plain")
    special = start_worker({"render": ok}, capabilities=["render", "tpu", "fast"], name="tpu-1")
    live_workers(conn, 2)
    client.pause_task_type("render")
    client.submit_task("render", required_capabilities=["tpu", "fast"])
    assert warnings(capsys, dsn) == []
    assert gauge(queue) == {"render": 0.0}
    special.stop(timeout=DEADLINE)
    live_workers(conn, 1)
    assert warnings(capsys, dsn) == [
        (
            "warning: 1 ready tasks of type render wait: they need fast, tpu, which no live "
            "worker of the type declares"
        )
    ]
    assert gauge(queue) == {"render": 1.0}


def test_capabilities_each_declared_but_by_different_workers(
    capsys, dsn, client, start_worker, conn
):
    start_worker({"mix": ok}, capabilities=["mix", "gpu"], name="gpu-1")
    start_worker({"mix": ok}, capabilities=["mix", "ssd"], name="ssd-1")
    live_workers(conn, 2)
    client.pause_task_type("mix")
    client.submit_task("mix", required_capabilities=["gpu", "ssd"])
    assert warnings(capsys, dsn) == [
        (
            "warning: 1 ready tasks of type mix wait: they need gpu, ssd, which no live worker "
            "of the type declares together"
        )
    ]


def test_the_warnings_name_three_task_types_and_count_the_rest(
    capsys, dsn, client, start_worker, conn
):
    types = [f"kind{n}" for n in range(5)]
    start_worker(dict.fromkeys(types, ok), capabilities=types)
    live_workers(conn, 1)
    for n, task_type in enumerate(types):
        client.pause_task_type(task_type)
        client.submit_batch([{"task_type": task_type, "required_capabilities": ["x"]}] * (n + 1))
    shown = warnings(capsys, dsn)
    assert [line.split(" wait:")[0] for line in shown[:3]] == [
        "warning: 5 ready tasks of type kind4",
        "warning: 4 ready tasks of type kind3",
        "warning: 3 ready tasks of type kind2",
    ]
    assert shown[3:] == [
        (
            "warning: 3 ready tasks of 2 more task types need capabilities that no live worker "
            "of their type declares"
        )
    ]

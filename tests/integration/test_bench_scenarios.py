"""``omnispindle bench``: each speed scenario runs small and reports sane figures."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from omnispindle.bench import autoscale as bench_autoscale
from omnispindle.bench import fairness as bench_fairness
from omnispindle.bench import feeding
from omnispindle.bench import queries as bq
from omnispindle.bench import scheduling as bench_scheduling
from omnispindle.bench import soak as bench_soak
from omnispindle.bench import steady as bench_steady
from omnispindle.bench import throughput as bench_throughput
from omnispindle.bench.runner import ratios
from omnispindle.bench.workflows import BenchmarkError
from omnispindle.client import TaskQueueClient

from .test_retention import finished_tasks

pytest.importorskip("psutil")


SCHEDULING_MODES = ("strict", "aging", "fair", "limits", "aging_limits", "fair_limits", "fair_all")


def bench_rows(conn, task_type, state=None):
    return conn.execute(
        "SELECT count(*) FROM omnispindle.tasks WHERE task_type = %s"
        " AND (%s::text IS NULL OR state::text = %s)",
        [task_type, state, state],
    ).fetchone()[0]


def noop_rows(conn, state=None):
    return bench_rows(conn, "bench_noop", state)


def nap_rows(conn, state=None):
    return bench_rows(conn, "bench_nap", state)


def test_drain_runs_every_task_and_reports_rate_and_cpu(queue, conn):
    figures = bench_throughput.drain(queue, tasks=400, workers_count=1, concurrency=8, runs=1)
    assert figures["tasks_per_s"] > 0 and figures["worker_cpu_s_per_1k"] > 0
    assert figures["pg_cpu_s_per_1k"] is None or figures["pg_cpu_s_per_1k"] > 0
    assert noop_rows(conn) == noop_rows(conn, "succeeded") == 400


def test_scheduling_drains_in_every_mode_and_leaves_the_type_strict(queue, conn, client):
    figures = bench_scheduling.scheduling(queue, tasks=300, workers_count=1, concurrency=8, runs=1)
    for mode in SCHEDULING_MODES:
        assert figures[f"{mode}_tasks_per_s"] > 0, mode
    slowest = min(figures["aging_limits_tasks_per_s"], figures["fair_all_tasks_per_s"])
    assert figures["share_of_strict"] == pytest.approx(slowest / figures["strict_tasks_per_s"])
    assert noop_rows(conn) == noop_rows(conn, "succeeded") == len(SCHEDULING_MODES) * 300
    assert client.task_type_limits() == [] and client.task_type_strategies() == []


def test_scheduling_drains_behind_tasks_due_later_and_deletes_them_after(queue, conn):
    figures = bench_scheduling.scheduling(
        queue, tasks=100, workers_count=1, concurrency=8, runs=1, delayed=250
    )
    assert figures["delayed"] == 250
    for mode in SCHEDULING_MODES:
        assert figures[f"{mode}_tasks_per_s"] > 0, mode
    # Each drain's tasks ran; the ones due the next day never started and are gone.
    assert noop_rows(conn) == noop_rows(conn, "succeeded") == len(SCHEDULING_MODES) * 100


def test_autoscale_times_the_pool_growing_and_shrinking_back(queue, conn):
    figures = bench_autoscale.autoscale(queue, tasks=200, concurrency=3, runs=1)
    # From 1 to 3 takes two growth steps, at most one a second.
    assert figures["grow_s"] >= 1.0
    assert figures["shrink_s"] >= bench_autoscale.SCALE_DOWN_AFTER_S - bench_autoscale.NAP_S
    assert nap_rows(conn) == 0


def test_fairness_counts_each_groups_starts_within_its_window(queue, conn, client):
    figures = bench_fairness.fairness(
        queue, workers_count=2, concurrency=4, window_s=3.0, warm_up_s=1.0
    )
    assert figures["big_starts"] > 0 and figures["small_starts"] > 0
    assert 0.3 <= figures["small_share"] <= 0.7
    assert 0.5 * bench_fairness.RATE <= figures["starts_per_s"] <= 1.5 * bench_fairness.RATE
    assert conn.execute(
        "SELECT count(*) FROM omnispindle.tasks WHERE task_type = 'bench_noop'"
    ).fetchone() == (0,)
    assert client.task_type_limits() == [] and client.task_type_strategies() == []


def test_enqueue_reports_bulk_and_single_rates_and_clears_its_tasks(queue, conn):
    figures = bench_throughput.enqueue(queue, tasks=1000, runs=1)
    assert (
        min(figures["bulk_per_s"], figures["single_per_s"], figures["single_8_threads_per_s"]) > 0
    )
    assert noop_rows(conn) == 0


def test_latency_reports_ordered_percentiles(queue):
    figures = bench_throughput.latency(queue, samples=20, runs=1)
    assert 0 <= figures["p50_ms"] <= figures["p99_ms"]


def test_soak_bounds_and_reports_sizes_memory_and_claim_times(queue, conn):
    figures = bench_soak.soak(
        queue, tasks=bench_soak.BATCH, workers_count=1, concurrency=8, retention=1.0
    )
    assert noop_rows(conn, "pending") == noop_rows(conn, "running") == 0
    assert figures["tasks_per_s"] > 0 and figures["rss_mb_max"] > 0
    assert figures["table_mb_max"] >= figures["table_mb_warm"] > 0
    assert figures["claim_p99_ms_start"] is not None


def test_a_soak_with_an_archive_horizon_moves_tasks_and_reports_the_history(queue, conn):
    # Tasks finished 10 minutes ago (within the retention, so not pruned): the
    # workers' first sweep moves them, seconds before the soak's own are through.
    old = finished_tasks(conn, 100, age="10 minutes")
    figures = bench_soak.soak(
        queue,
        tasks=3 * bench_soak.BATCH,
        workers_count=1,
        concurrency=8,
        retention=3600.0,
        archive_after=0.5,
    )
    moved = conn.execute(
        "SELECT count(*) FROM omnispindle.task_history WHERE id = ANY (%s)", [old]
    ).fetchone()[0]
    assert moved == len(old)
    assert figures["archive_after_s"] == 0.5
    assert figures["history_mb_max"] > 0
    assert len(figures["tasks_mb_over_time"]) == len(figures["history_mb_over_time"])


def test_steady_feeds_at_its_rate_and_reports_delays_and_sizes(queue, conn):
    figures = bench_steady.steady(queue, rate=200, seconds=1.5, workers_count=1, concurrency=8)
    assert nap_rows(conn, "succeeded") == nap_rows(conn) == figures["tasks"]
    assert 200 <= figures["tasks"] <= 1.5 * 200  # what 1.5 s at 200 a second submits
    assert figures["offered_per_s"] == pytest.approx(200, rel=0.2)
    assert 0 < figures["completed_per_s"] <= figures["offered_per_s"]
    assert 0 <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["table_mb_max"] >= figures["table_mb_start"] > 0
    assert figures["wal_mb"] > 0


def test_a_steady_run_to_a_depth_runs_every_task_it_fed(queue, conn):
    figures = bench_steady.steady(queue, depth=40, seconds=1.5, workers_count=1, concurrency=8)
    assert nap_rows(conn, "succeeded") == nap_rows(conn) == figures["tasks"]
    assert figures["depth"] == 40
    assert figures["tasks"] > 40  # the first top-up, then more as the worker ran them
    assert 0 < figures["completed_per_s"] <= figures["offered_per_s"]


def test_a_steady_run_at_a_share_of_the_drain_offers_that_share_of_it(queue, conn):
    figures = bench_steady.steady(
        queue, share=0.5, tasks=2_000, seconds=1.5, workers_count=1, concurrency=8
    )
    assert figures["share"] == 0.5 and figures["drain_per_s"] > 0
    assert figures["offered_per_s"] == pytest.approx(0.5 * figures["drain_per_s"], rel=0.2)
    # The drain's naps were deleted.
    assert nap_rows(conn, "succeeded") == nap_rows(conn) == figures["tasks"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"share": 0}, "share above 0"),
        ({"share": 0.5, "seconds": -1}, "rate and seconds"),
        ({"share": 0.5, "tasks": 0}, "at least one task"),
        ({"share": 0.5, "depth": 10}, "not both"),
    ],
)
def test_a_steady_run_at_a_share_is_refused_before_anything_is_measured(
    queue, conn, options, message
):
    with pytest.raises(BenchmarkError, match=message):
        bench_steady.steady(queue, **{"seconds": 1, **options})
    assert noop_rows(conn) == nap_rows(conn) == 0


def test_a_feed_to_a_depth_submits_only_what_brings_the_waiting_tasks_up_to_it(queue, conn):
    # No worker runs: the first top-up fills the queue to the depth, and no later one adds.
    submitter = bench_steady.Submitter(TaskQueueClient(local_queue=queue))

    def waiting() -> int:
        return queue.db.run(bq.waiting(bench_steady.NAP_TYPE))

    fed = feeding.feed(submitter.submit, feeding.to_depth(25, waiting), 0.3, lambda: 0, lambda: 0)
    assert fed.submitted == 25
    assert waiting() == 25


def test_a_steady_run_without_a_rate_is_refused(queue):
    with pytest.raises(BenchmarkError, match="rate and seconds"):
        bench_steady.steady(queue, rate=0, seconds=1)


def test_a_steady_run_to_no_depth_is_refused(queue):
    with pytest.raises(BenchmarkError, match="depth of at least 1"):
        bench_steady.steady(queue, depth=0, seconds=1)


def test_soak_rates_are_left_out_once_the_tasks_ran_out():
    samples = bench_soak.Samples(at=[0.0, 10.0, 20.0, 30.0], done=[0, 100, 150, 150])
    rate = bench_soak.backlog_rate(samples, tasks=150)
    assert rate(0.0, 10.0) == 10.0 and rate(10.0, 20.0) == 5.0
    assert rate(20.0, 30.0) is None and rate(10.0, 30.0) is None


def test_a_soak_smaller_than_one_batch_is_refused(queue):
    with pytest.raises(BenchmarkError, match="at least"):
        bench_soak.soak(queue, tasks=10)


def test_ratios_say_how_many_times_better_ours_is():
    ours = {"tasks_per_s": 300.0, "p50_ms": 2.0, "worker_cpu_s_per_1k": None}
    theirs = {"tasks_per_s": 100.0, "p50_ms": 4.0, "worker_cpu_s_per_1k": 0.2}
    assert ratios(ours, theirs) == {
        "x_tasks_per_s": 3.0,
        "x_p50_ms": 2.0,
        "x_worker_cpu_s_per_1k": None,
    }


def test_cli_prints_json_and_refuses_unknown_peers(dsn):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "omnispindle",
            "bench",
            "enqueue",
            "--dsn",
            dsn,
            "--tasks",
            "1000",
            "--runs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scenario"] == "enqueue"
    refused = subprocess.run(
        [sys.executable, "-m", "omnispindle", "bench", "dag", "--dsn", dsn, "--peers", "celery"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "unknown peer" in refused.stderr


def test_the_soak_submitter_counts_finished_tasks_by_key_lookups(queue, conn):
    submitter = bench_soak.Submitter(queue, total=30)
    client = submitter.client
    for size in (10, 20):
        ids = client.submit_batch([{"task_type": bench_throughput.NOOP_TYPE}] * size)
        submitter.batches.append((ids[0], ids[-1]))
        submitter.submitted += size
    first = submitter.batches[0][0]
    assert submitter.done() == 0
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() WHERE id < %s",
        [first + 13],
    )
    conn.execute("DELETE FROM omnispindle.tasks WHERE id < %s", [first + 5])  # pruned
    assert submitter.done() == 13
    assert not submitter.all_done()
    conn.execute(
        "UPDATE omnispindle.tasks SET state = 'cancelled', finished_at = now() "
        "WHERE state = 'pending'"
    )
    assert submitter.done() == 30 and submitter.all_done()


def test_cpu_measures_each_process_count_and_their_ratio(queue, conn):
    from omnispindle.bench import cpu as bench_cpu

    figures = bench_cpu.cpu(queue, tasks=40, processes=(1, 2), runs=1)
    assert figures["tasks_per_s_1p"] > 0 and figures["tasks_per_s_2p"] > 0
    assert figures["x_2p"] == figures["tasks_per_s_2p"] / figures["tasks_per_s_1p"]
    assert isinstance(figures["met"], bool)
    left = conn.execute("SELECT count(*) FROM omnispindle.tasks WHERE task_type = 'bench_cpu'")
    assert left.fetchone()[0] == 0


def test_fleet_counts_one_connection_a_process_and_one_to_listen(queue, dsn):
    """No connection of the test's own is open while the fleet is counted."""
    from omnispindle.bench import fleet as bench_fleet

    figures = bench_fleet.fleet(queue, processes=(2,), runs=1, seconds=0.5)
    assert figures["connections_2p"] == 1 + 2  # the supervisor's LISTEN, a pool each
    assert figures["idle_cpu_2p"] is None or figures["idle_cpu_2p"] >= 0
    assert 0 < figures["p50_ms_2p"] <= figures["p99_ms_2p"]
    # The killed holder's lease lasts 5 s from its last renewal; its restarted
    # child takes the duty when it lapses (the other child runs --no-sweep).
    assert 0 < figures["handover_s_2p"] < 15
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM omnispindle.tasks WHERE task_type = 'bench_stamp'"
        )
        assert left.fetchone()[0] == 0


def test_cli_refuses_a_process_count_out_of_range():
    command = [sys.executable, "-m", "omnispindle", "bench", "cpu", "--processes", "1,0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid process count '0': a whole number from 1 to 128" in done.stderr


def test_cli_refuses_a_negative_count_of_tasks_due_later():
    command = [sys.executable, "-m", "omnispindle", "bench", "scheduling", "--delayed", "-1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid count of tasks due later '-1'" in done.stderr


def test_cli_refuses_a_steady_run_both_at_a_rate_and_to_a_depth():
    command = [sys.executable, "-m", "omnispindle", "bench", "steady", "--rate", "10"]
    done = subprocess.run([*command, "--depth", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --depth: not allowed with argument --rate" in done.stderr

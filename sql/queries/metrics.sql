-- Statements behind TaskQueue.get_metrics() and the Prometheus exporter. They
-- run in one read-only transaction, so every figure of a snapshot shares one
-- now() and one view of the tables.

-- name: begin_metrics_snapshot
-- The first statement of the snapshot's transaction.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: task_type_metrics
-- The task_metrics view, plus failed and cancelled in the last minute (the view
-- only splits off the succeeded ones), so that every window splits by outcome.
SELECT m.task_type, m.blocked, m.pending, m.running, m.succeeded, m.failed, m.cancelled,
       m.finished_last_minute, m.succeeded_last_minute,
       coalesce(o.failed, 0) AS failed_last_minute,
       coalesce(o.cancelled, 0) AS cancelled_last_minute,
       m.finished_last_hour, m.succeeded_last_hour, m.failed_last_hour,
       m.cancelled_last_hour, m.retried_last_hour,
       m.failure_rate_last_hour, m.retry_rate_last_hour,
       m.wait_p50_seconds, m.wait_p95_seconds, m.wait_p99_seconds,
       m.run_p50_seconds, m.run_p95_seconds, m.run_p99_seconds,
       m.oldest_ready_seconds
FROM omnispindle.task_metrics m
LEFT JOIN omnispindle.outcomes_last_minute o ON o.task_type = m.task_type
ORDER BY m.task_type;

-- name: worker_metrics
SELECT id::text AS id, name, host, pid, state::text AS state, concurrency, running_tasks,
       utilisation, finished_last_minute, finished_last_hour, failed_last_hour,
       heartbeat_age_seconds
FROM omnispindle.worker_metrics
ORDER BY state, name, id;

-- name: worker_counts_by_state
-- Every state, including those no worker is in.
SELECT s.state::text AS state, count(w.id) AS workers
FROM unnest(enum_range(NULL::omnispindle.worker_state)) AS s (state)
LEFT JOIN omnispindle.worker_summary w ON w.state = s.state
GROUP BY s.state
ORDER BY s.state;

-- name: metrics_clock
-- The snapshot's time: now() is fixed for the transaction, so the windows of
-- every figure ("last minute", "last hour") end here.
SELECT now() AS collected_at;

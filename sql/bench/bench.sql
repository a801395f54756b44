-- Statements of `omnispindle bench`: it watches and clears only its own tasks.

-- name: bench_unfinished
-- Read through the partial indexes, which hold only unfinished tasks (and dead
-- entries not yet vacuumed): a filter on finished_at read every finished row
-- of the range, and polled 20 times a second that cost Postgres a sixth of
-- the CPU of the drain it measured.
SELECT count(*) AS count
FROM omnispindle.tasks
WHERE id BETWEEN %(first)s AND %(last)s
  AND (state = 'pending' OR state = 'running' OR state = 'blocked');

-- name: bench_finished
SELECT finished_at IS NOT NULL AS finished FROM omnispindle.tasks WHERE id = %(id)s;

-- name: bench_span
-- The drain as the database saw it: first start to last finish.
SELECT extract(epoch FROM max(finished_at) - min(started_at))::double precision AS seconds
FROM omnispindle.tasks
WHERE id BETWEEN %(first)s AND %(last)s;

-- name: bench_delete_type
DELETE FROM omnispindle.tasks WHERE task_type = %(task_type)s;

-- name: bench_delete_pending
-- A type's tasks not started: after a drain, those due later that stood before it.
DELETE FROM omnispindle.tasks WHERE task_type = %(task_type)s AND state = 'pending';

-- name: bench_table_bytes
-- The tasks table with its indexes and TOAST: what retention keeps bounded.
SELECT pg_total_relation_size('omnispindle.tasks') AS bytes;

-- name: bench_waiting
-- A type's tasks not started yet: what a steady run to a depth tops up.
SELECT count(*) AS count FROM omnispindle.tasks
WHERE state = 'pending' AND task_type = %(task_type)s;

-- name: bench_wal_position
-- Where the server's WAL ends, in bytes: two readings give the WAL written between.
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS bytes;

-- name: bench_take_snapshot
-- Run first in a REPEATABLE READ transaction, it fixes the snapshot held.
SELECT count(*) AS count FROM omnispindle.workers;

-- name: vacuum_tasks
-- Benchmarks start every sample from a vacuumed, analysed table: their own
-- earlier samples leave dead rows, and autovacuum may lag behind or be off.
VACUUM (ANALYZE) omnispindle.tasks, omnispindle.task_dependencies;

-- name: count_running_on_worker
-- Of the given tasks, how many run on the named worker (benchmarks watch this).
SELECT count(*) AS running
FROM omnispindle.tasks t
JOIN omnispindle.workers w ON w.id = t.worker_id
WHERE t.state = 'running' AND w.name = %(name)s AND w.state = 'active'
  AND t.id = ANY (%(ids)s::bigint[]);

-- name: bench_fill_dashboard
-- The dashboard benchmark's history in one statement: eight task types, every
-- hundredth task failed, one in fifty still pending, the rest succeeded,
-- finished over the last two hours (so the charts' hour holds half of them).
INSERT INTO omnispindle.tasks (task_type, parameters, priority, state, attempts, result,
                               errors, created_at, run_after, started_at, finished_at)
SELECT 'bench_dash_' || (i %% 8),
       jsonb_build_object('n', i, 'customer', 'customer-' || (i %% 1000)),
       i %% 5 - 2,
       s.state,
       CASE WHEN s.state = 'pending' THEN 0 WHEN i %% 7 = 0 THEN 2 ELSE 1 END,
       CASE WHEN s.state = 'succeeded' THEN jsonb_build_object('ok', true) END,
       CASE WHEN s.state = 'failed'
            THEN jsonb_build_array(jsonb_build_object('type', 'RuntimeError',
                                                      'message', 'bench failure'))
            ELSE '[]'::jsonb END,
       s.finished - interval '2 seconds',
       s.finished - interval '2 seconds',
       CASE WHEN s.state <> 'pending' THEN s.finished - interval '1 second' END,
       CASE WHEN s.state <> 'pending' THEN s.finished END
FROM generate_series(1, %(tasks)s::bigint) AS i
CROSS JOIN LATERAL (
    SELECT CASE WHEN i %% 100 = 0 THEN 'failed'
                WHEN i %% 50 = 1 THEN 'pending'
                ELSE 'succeeded' END::omnispindle.task_state AS state,
           now() - make_interval(secs => (i %% 7200)::double precision) AS finished
) AS s;

-- name: bench_delete_dashboard
DELETE FROM omnispindle.tasks WHERE starts_with(task_type, 'bench_dash_');

-- name: bench_delete_dashboard_outcomes
-- Its tasks' minutes in the outcome rollup, which pruning or deleting tasks
-- leaves in place.
DELETE FROM omnispindle.outcome_minutes WHERE starts_with(task_type, 'bench_dash_');

-- name: bench_clock
-- The server's clock, for windows compared with its timestamps.
SELECT extract(epoch FROM clock_timestamp())::double precision AS now;

-- name: bench_group_starts
-- Starts of a type's tasks per group within a window of the server's clock.
SELECT coalesce(group_key, '') AS group_key, count(*) AS starts
FROM omnispindle.tasks
WHERE task_type = %(task_type)s
  AND started_at >= to_timestamp(%(start)s) AND started_at < to_timestamp(%(end)s)
GROUP BY group_key;

-- name: bench_steady
-- A steady run's tasks as the database saw them: how many finished by the end
-- of the feed and a grace, over how long the feed lasted, and the delay from
-- each one's submission to its start.
WITH run AS (
    SELECT created_at, started_at, finished_at,
           extract(epoch FROM started_at - created_at) AS delay
    FROM omnispindle.tasks
    WHERE id BETWEEN %(first)s AND %(last)s
), fed AS (
    SELECT min(created_at) AS fed_from, max(created_at) AS fed_until FROM run
)
SELECT count(*) AS tasks,
       count(*) FILTER (WHERE r.finished_at <= f.fed_until + make_interval(secs => %(grace)s))
           AS finished_in_time,
       extract(epoch FROM f.fed_until - f.fed_from)::double precision AS fed_seconds,
       (percentile_cont(0.5) WITHIN GROUP (ORDER BY r.delay) * 1000)::double precision AS p50_ms,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY r.delay) * 1000)::double precision AS p99_ms,
       (max(r.delay) * 1000)::double precision AS max_ms
FROM run r CROSS JOIN fed f
GROUP BY f.fed_from, f.fed_until;

-- name: database_connections
-- The client connections the server holds to this database, a pooler's among
-- them, but the backends given (the benchmark's own).
SELECT count(*) AS count
FROM pg_stat_activity
WHERE datname = current_database()
  AND backend_type = 'client backend'
  AND NOT pid = ANY (%(excluded)s::int[]);

-- name: backend_pid
SELECT pg_backend_pid() AS pid;

-- name: sweep_holder
-- The process holding the sweeper's lease, while its lease lasts; none otherwise.
SELECT pid
FROM omnispindle.maintenance_leases
WHERE duty = 'sweep' AND expires_at > now();

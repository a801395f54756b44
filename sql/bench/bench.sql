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

-- name: bench_table_bytes
-- The tasks table with its indexes and TOAST: what retention keeps bounded.
SELECT pg_total_relation_size('omnispindle.tasks') AS bytes;

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

-- Statements of `omnispindle bench`: it watches and clears only its own tasks.

-- name: bench_unfinished
SELECT count(*) AS count
FROM omnispindle.tasks
WHERE id BETWEEN %(first)s AND %(last)s AND finished_at IS NULL;

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

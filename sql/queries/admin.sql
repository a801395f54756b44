-- Statements for set-up, migrations, notifications and inspection.

-- name: lock_migrations
-- Serialises concurrent migrators for the rest of their transaction.
SELECT pg_advisory_xact_lock(hashtext('omnispindle.migrate'));

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS omnispindle;

-- name: schema_installed
SELECT to_regclass('omnispindle.tasks') IS NOT NULL AS installed;

-- name: listen_ready
LISTEN omnispindle_ready;

-- name: listen_finished
LISTEN omnispindle_finished;

-- name: listen_cancel
LISTEN omnispindle_cancel;

-- name: listen_stream
LISTEN omnispindle_stream;

-- name: queue_summary
SELECT task_type, blocked, pending, running, succeeded, failed, cancelled,
       extract(epoch FROM oldest_ready_age)::double precision AS oldest_ready_seconds
FROM omnispindle.queue_summary
ORDER BY task_type;

-- name: worker_summary
SELECT name, host, pid, state::text AS state, capabilities, concurrency, running_tasks,
       extract(epoch FROM heartbeat_age)::double precision AS heartbeat_age_seconds
FROM omnispindle.worker_summary
ORDER BY state, name;

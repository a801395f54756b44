-- Runtime statements on workers.

-- name: register_worker
INSERT INTO omnispindle.workers (name, host, pid, capabilities, task_types, concurrency, version)
VALUES (%(name)s, %(host)s, %(pid)s, %(capabilities)s::text[], %(task_types)s::text[],
        %(concurrency)s, %(version)s)
RETURNING id;

-- name: heartbeat
-- One statement per beat: the worker's own row and every lease it holds.
WITH beat AS (
    UPDATE omnispindle.workers
    SET last_heartbeat_at = now()
    WHERE id = %(worker_id)s AND state = 'active'
)
UPDATE omnispindle.tasks
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE worker_id = %(worker_id)s
  AND state = 'running'
  AND lease_token = ANY (%(tokens)s::uuid[])
RETURNING id;

-- name: stop_worker
UPDATE omnispindle.workers
SET state = 'stopped', stopped_at = now()
WHERE id = %(worker_id)s AND state = 'active';

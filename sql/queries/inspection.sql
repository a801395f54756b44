-- Statements for people: the queue and its workers at a glance, listing and
-- showing tasks, retrying failed ones. Each block after `-- name:` is one statement.

-- name: list_tasks
-- Every filter is optional (NULL matches all). Newest first by id: ids follow
-- insertion order, and the primary key serves that order without a sort.
SELECT t.id AS task_id, t.task_type, t.state::text AS state, t.priority,
       t.attempts, t.max_attempts, t.created_at,
       extract(epoch FROM now() - t.created_at)::double precision AS age_seconds,
       w.name AS worker_name,
       t.errors -> -1 ->> 'type' AS error_type,
       t.errors -> -1 ->> 'message' AS error_message,
       t.cancel_reason
FROM omnispindle.tasks t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id
WHERE (%(task_types)s::text[] IS NULL OR t.task_type = ANY (%(task_types)s::text[]))
  AND (%(states)s::omnispindle.task_state[] IS NULL
       OR t.state = ANY (%(states)s::omnispindle.task_state[]))
  AND (%(older_than)s::double precision IS NULL
       OR t.created_at < now() - make_interval(secs => %(older_than)s::double precision))
ORDER BY t.id DESC
LIMIT %(limit)s::bigint;

-- name: show_task
-- One task with everything a person asks about it: the whole error history,
-- the worker's name, and the state of each task on either side of it.
SELECT t.id AS task_id, t.task_type, t.state::text AS state, t.priority,
       t.attempts, t.max_attempts, t.retry_backoff, t.timeout_seconds,
       t.required_capabilities, t.allow_failed_dependencies, t.pending_dependencies,
       t.parameters, t.result, t.errors, t.cancel_reason, t.cancel_requested_at,
       t.worker_id, w.name AS worker_name,
       t.created_at, t.started_at, t.finished_at, t.run_after, t.lease_expires_at,
       extract(epoch FROM now() - t.created_at)::double precision AS age_seconds,
       coalesce((SELECT jsonb_agg(jsonb_build_object('task_id', p.id, 'task_type', p.task_type,
                                                     'state', p.state) ORDER BY p.id)
                 FROM omnispindle.task_dependencies d
                 JOIN omnispindle.tasks p ON p.id = d.depends_on
                 WHERE d.task_id = t.id), '[]'::jsonb) AS dependencies,
       coalesce((SELECT jsonb_agg(jsonb_build_object('task_id', c.id, 'task_type', c.task_type,
                                                     'state', c.state) ORDER BY c.id)
                 FROM omnispindle.task_dependencies d
                 JOIN omnispindle.tasks c ON c.id = d.task_id
                 WHERE d.depends_on = t.id), '[]'::jsonb) AS dependents
FROM omnispindle.tasks t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id
WHERE t.id = %(id)s::bigint;

-- name: task_states
SELECT id AS task_id, state::text AS state
FROM omnispindle.tasks
WHERE id = ANY (%(ids)s::bigint[]);

-- name: retry_tasks
-- All or nothing: omnispindle.retry_tasks locks and checks every task first.
SELECT task_id, state, attempts, max_attempts, dependents
FROM omnispindle.retry_tasks(%(ids)s::bigint[], %(with_dependents)s);

-- name: queue_summary
SELECT task_type, blocked, pending, running, succeeded, failed, cancelled,
       extract(epoch FROM oldest_ready_age)::double precision AS oldest_ready_seconds,
       expired_leases,
       extract(epoch FROM oldest_expired_lease_age)::double precision
           AS oldest_expired_lease_seconds
FROM omnispindle.queue_summary
ORDER BY task_type;

-- name: worker_summary
-- An active worker past its lease without a heartbeat shows as lost.
SELECT name, host, pid, CASE WHEN lost THEN 'lost' ELSE state::text END AS state,
       capabilities, concurrency, running_tasks,
       extract(epoch FROM heartbeat_age)::double precision AS heartbeat_age_seconds
FROM omnispindle.worker_summary
ORDER BY state, name;

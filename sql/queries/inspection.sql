-- Statements for people: the queue and its workers at a glance, listing and
-- showing tasks, retrying failed ones. Each block after `-- name:` is one statement.

-- name: list_tasks
-- Every filter is optional (NULL matches all). Newest first by id: ids follow
-- insertion order, and the primary key serves that order without a sort. It
-- reads the task_details view, so that a role allowed only the views can run it.
SELECT t.task_id, t.task_type, t.state::text AS state, t.priority,
       t.attempts, t.max_attempts, t.created_at,
       extract(epoch FROM now() - t.created_at)::double precision AS age_seconds,
       t.worker_name,
       t.errors -> -1 ->> 'type' AS error_type,
       t.errors -> -1 ->> 'message' AS error_message,
       t.cancel_reason
FROM omnispindle.task_details t
WHERE (%(task_types)s::text[] IS NULL OR t.task_type = ANY (%(task_types)s::text[]))
  AND (%(states)s::omnispindle.task_state[] IS NULL
       OR t.state = ANY (%(states)s::omnispindle.task_state[]))
  AND (%(older_than)s::double precision IS NULL
       OR t.created_at < now() - make_interval(secs => %(older_than)s::double precision))
ORDER BY t.task_id DESC
LIMIT %(limit)s::bigint;

-- name: show_task
-- One task with everything a person asks about it: the whole error history,
-- the worker's name, and the state of each task on either side of it.
SELECT t.task_id, t.task_type, t.state::text AS state, t.priority,
       t.attempts, t.max_attempts, t.retry_backoff, t.timeout_seconds,
       t.required_capabilities, t.allow_failed_dependencies, t.pending_dependencies,
       t.parameters, t.result, t.errors, t.cancel_reason, t.cancel_requested_at,
       t.worker_id, t.worker_name,
       t.created_at, t.started_at, t.finished_at, t.run_after, t.lease_expires_at,
       extract(epoch FROM now() - t.created_at)::double precision AS age_seconds,
       t.dependencies, t.dependents, t.idempotency_key, t.group_key
FROM omnispindle.task_details t
WHERE t.task_id = %(id)s::bigint;

-- name: task_states
-- Each id is in one of the two tables.
SELECT id AS task_id, state::text AS state
FROM omnispindle.tasks
WHERE id = ANY (%(ids)s::bigint[])
UNION ALL
SELECT id, state::text
FROM omnispindle.task_history
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

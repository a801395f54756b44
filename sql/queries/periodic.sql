-- Periodic tasks: schedules, and the ticks workers enqueue from them.

-- name: upsert_periodic_task
-- Saving a changed schedule replaces it and moves updated_at on, so ticks of
-- the old schedule that were missed are not run under the new one; saving it
-- unchanged (as apps do at every start) changes nothing.
INSERT INTO omnispindle.periodic_tasks AS p (name, cron, task_type, parameters, priority,
                                             max_attempts, retry_backoff, timeout_seconds,
                                             required_capabilities, enabled, timezone)
VALUES (%(name)s, %(cron)s, %(task_type)s, %(parameters)s::jsonb, %(priority)s,
        %(max_attempts)s, %(retry_backoff)s, %(timeout)s, %(required_capabilities)s::text[],
        %(enabled)s, %(timezone)s)
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, task_type = excluded.task_type, parameters = excluded.parameters,
    priority = excluded.priority, max_attempts = excluded.max_attempts,
    retry_backoff = excluded.retry_backoff, timeout_seconds = excluded.timeout_seconds,
    required_capabilities = excluded.required_capabilities, enabled = excluded.enabled,
    timezone = excluded.timezone,
    updated_at = CASE WHEN (p.cron, p.task_type, p.parameters, p.priority, p.max_attempts,
                            p.retry_backoff, p.timeout_seconds, p.required_capabilities,
                            p.enabled, p.timezone)
                           IS DISTINCT FROM
                           (excluded.cron, excluded.task_type, excluded.parameters,
                            excluded.priority, excluded.max_attempts, excluded.retry_backoff,
                            excluded.timeout_seconds, excluded.required_capabilities,
                            excluded.enabled, excluded.timezone)
                      THEN now() ELSE p.updated_at END
RETURNING name, cron, timezone, task_type, enabled, created_at, updated_at;

-- name: delete_periodic_task
DELETE FROM omnispindle.periodic_tasks WHERE name = %(name)s RETURNING name;

-- name: list_periodic_tasks
SELECT name, cron, timezone, task_type, enabled, last_tick_at, last_task_id, created_at,
       updated_at
FROM omnispindle.periodic_summary
ORDER BY name;

-- name: enabled_schedules
-- The database's clock decides which ticks are due, so hosts whose clocks
-- disagree still agree on the ticks.
SELECT p.name, p.cron, p.timezone, p.updated_at, now() AS now,
       (SELECT max(k.tick_at) FROM omnispindle.periodic_ticks k
        WHERE k.periodic_name = p.name) AS last_tick_at
FROM omnispindle.periodic_tasks p
WHERE p.enabled;

-- name: enqueue_periodic_ticks
SELECT periodic_name, tick_at, task_id
FROM omnispindle.enqueue_periodic_ticks(%(names)s::text[], %(ticks)s::timestamptz[]);

-- name: prune_periodic_ticks
-- Old ticks only guard against enqueuing them twice; each schedule's latest
-- is kept so that a restart never re-runs it.
DELETE FROM omnispindle.periodic_ticks k
WHERE k.tick_at < now() - interval '1 day'
  AND k.tick_at < (SELECT max(l.tick_at) FROM omnispindle.periodic_ticks l
                   WHERE l.periodic_name = k.periodic_name);

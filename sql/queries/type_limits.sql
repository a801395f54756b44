-- Limits on task types: running tasks at once and starts per second, global
-- across the workers. The functions (sql/schema.sql) check their arguments
-- and wake the workers; claim_tasks enforces the limits.

-- name: set_task_type_limit
SELECT omnispindle.set_task_type_limit(%(task_type)s, %(max_running)s::integer,
                                       %(starts_per_second)s::double precision,
                                       %(burst)s::integer);

-- name: clear_task_type_limit
SELECT omnispindle.clear_task_type_limit(%(task_type)s) AS changed;

-- name: task_type_limits
SELECT task_type, max_running, running, starts_per_second, burst, tokens, ready, held_back
FROM omnispindle.task_type_limit_summary
ORDER BY task_type;

-- The limits of a worker's task types, which pace its claims while they hold tasks back.
-- name: limits_of_types
SELECT task_type, max_running, starts_per_second
FROM omnispindle.task_type_limits
WHERE task_type = ANY (%(task_types)s::text[])
ORDER BY task_type;

-- Limits on task types: running tasks at once and starts per second, of the
-- type and of each of its groups, global across the workers. The functions (sql/schema.sql) check their arguments
-- and wake the workers; claim_tasks enforces the limits.

-- name: set_task_type_limit
SELECT omnispindle.set_task_type_limit(%(task_type)s, %(max_running)s::integer,
                                       %(starts_per_second)s::double precision,
                                       %(burst)s::integer,
                                       %(max_running_per_group)s::integer,
                                       %(starts_per_second_per_group)s::double precision);

-- name: clear_task_type_limit
SELECT omnispindle.clear_task_type_limit(%(task_type)s) AS changed;

-- name: task_type_limits
SELECT task_type, max_running, running, starts_per_second, burst, tokens, ready, held_back,
       max_running_per_group, starts_per_second_per_group
FROM omnispindle.task_type_limit_summary
ORDER BY task_type;

-- A worker's task types that claims take apart (those with limits or a strategy),
-- with their limits, which pace its claims while they hold tasks back.
-- name: limits_of_types
SELECT s.task_type, l.max_running, l.starts_per_second, l.max_running_per_group,
       l.starts_per_second_per_group
FROM (SELECT task_type FROM omnispindle.task_type_limits
      UNION
      SELECT task_type FROM omnispindle.task_type_strategies) s
LEFT JOIN omnispindle.task_type_limits l ON l.task_type = s.task_type
WHERE s.task_type = ANY (%(task_types)s::text[])
ORDER BY s.task_type;

-- name: set_task_type_strategy
SELECT omnispindle.set_task_type_strategy(%(task_type)s, %(strategy)s,
                                          %(aging_seconds)s::double precision);

-- name: task_type_strategies
SELECT task_type, strategy, aging_seconds, set_at
FROM omnispindle.task_type_strategies
ORDER BY task_type;

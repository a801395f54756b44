-- What the tasks ask of the workers now, and the processes a deployment should
-- run for it (the functions and views are in sql/schema.sql).

-- name: workers_needed
SELECT omnispindle.workers_needed(%(concurrency)s::integer, %(min_workers)s::integer,
                                  %(max_workers)s::integer, %(task_types)s::text[]) AS workers;

-- name: worker_demand
SELECT task_type, running, ready, paused, max_running, demand
FROM omnispindle.worker_demand
ORDER BY task_type;

-- name: unclaimable_tasks
SELECT task_type, required_capabilities, ready, missing_capabilities
FROM omnispindle.unclaimable_tasks
ORDER BY ready DESC, task_type, required_capabilities;

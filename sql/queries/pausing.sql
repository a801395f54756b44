-- Paused task types: their pending tasks wait until they are resumed. The
-- functions (sql/schema.sql) check their arguments and wake workers on resume.

-- name: pause_task_type
SELECT omnispindle.pause_task_type(%(task_type)s, %(reason)s) AS changed;

-- name: resume_task_type
SELECT omnispindle.resume_task_type(%(task_type)s) AS changed;

-- name: paused_task_types
SELECT task_type, paused_at, reason
FROM omnispindle.paused_task_types
ORDER BY task_type;

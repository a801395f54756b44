-- Statements of the web dashboard. Each reads the views an observer role may
-- read (grant_access), so a dashboard can run with no right to change a task.

-- name: dashboard_task_page
-- One page of tasks, newest first, below the cursor `before` (keyset
-- pagination: each page starts where the last ended, so a page deep in
-- millions of rows costs what the first does). Every filter is optional (NULL
-- matches all). Ids follow insertion order and the primary key serves the
-- order without a sort; the filters are checked row by row along it.
SELECT t.task_id, t.task_type, t.state::text AS state, t.priority,
       t.attempts, t.max_attempts, t.created_at,
       extract(epoch FROM now() - t.created_at)::double precision AS age_seconds,
       t.worker_name,
       t.errors -> -1 ->> 'type' AS error_type,
       t.errors -> -1 ->> 'message' AS error_message,
       t.cancel_reason
FROM omnispindle.task_details t
WHERE (%(before)s::bigint IS NULL OR t.task_id < %(before)s::bigint)
  AND (%(task_type)s::text IS NULL OR t.task_type = %(task_type)s::text)
  AND (%(state)s::omnispindle.task_state IS NULL
       OR t.state = %(state)s::omnispindle.task_state)
  AND (%(priority)s::integer IS NULL OR t.priority = %(priority)s::integer)
  AND (%(older_than)s::double precision IS NULL
       OR t.created_at < now() - make_interval(secs => %(older_than)s::double precision))
  AND (%(newer_than)s::double precision IS NULL
       OR t.created_at >= now() - make_interval(secs => %(newer_than)s::double precision))
  AND (%(worker)s::text IS NULL OR t.worker_name = %(worker)s::text)
  AND (%(floor)s::bigint IS NULL OR t.task_id >= %(floor)s::bigint)
  -- A plain substring search: strpos, unlike LIKE, has no wildcard characters.
  AND (%(text)s::text IS NULL
       OR strpos(lower(t.parameters::text), lower(%(text)s::text)) > 0)
ORDER BY t.task_id DESC
LIMIT %(limit)s::bigint;

-- name: dashboard_scan_floor
-- How far down one page of a filtered list may read: the lowest id among the
-- `examine` newest tasks below the cursor, and how many those are. A filter
-- that matches rarely (a word in the parameters) then costs a bounded walk
-- of the primary key per page, not the whole table; the page says how far it
-- looked, and the next one goes on from there.
SELECT min(w.task_id) AS floor, count(*) AS examined
FROM (SELECT d.task_id
      FROM omnispindle.task_details d
      WHERE %(before)s::bigint IS NULL OR d.task_id < %(before)s::bigint
      ORDER BY d.task_id DESC
      LIMIT %(examine)s::bigint) AS w;

-- name: outcome_series
-- The last sixty minutes, oldest first, each with its counts over all task
-- types (zero for a minute in which nothing finished); the last minute is
-- still running.
SELECT extract(epoch FROM m.minute)::bigint AS minute,
       coalesce(sum(o.succeeded), 0)::bigint AS succeeded,
       coalesce(sum(o.failed), 0)::bigint AS failed,
       coalesce(sum(o.cancelled), 0)::bigint AS cancelled,
       coalesce(sum(o.retried), 0)::bigint AS retried
FROM generate_series(date_trunc('minute', now()) - interval '59 minutes',
                     date_trunc('minute', now()), interval '1 minute') AS m (minute)
LEFT JOIN omnispindle.outcomes_per_minute o ON o.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute;

-- name: dashboard_overview
-- Per task type: its unfinished tasks now (unfinished_summary, from the
-- partial indexes) and the tasks it finished in the last hour
-- (outcomes_per_minute, from the rollup): neither reads the whole table.
-- A type with neither is left out.
SELECT coalesce(u.task_type, f.task_type) AS task_type,
       coalesce(u.blocked, 0) AS blocked,
       coalesce(u.pending, 0) AS pending,
       coalesce(u.running, 0) AS running,
       coalesce(f.succeeded, 0) AS succeeded,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled,
       extract(epoch FROM u.oldest_ready_age)::double precision AS oldest_ready_seconds,
       coalesce(u.expired_leases, 0) AS expired_leases
FROM omnispindle.unfinished_summary u
FULL JOIN (SELECT task_type, sum(succeeded)::bigint AS succeeded,
                  sum(failed)::bigint AS failed, sum(cancelled)::bigint AS cancelled
           FROM omnispindle.outcomes_per_minute
           GROUP BY task_type) AS f ON f.task_type = u.task_type
ORDER BY 1;

-- name: dashboard_workers
-- Active workers first; a lost one (active, silent past its lease) shows as lost.
SELECT s.name, s.host, s.pid, CASE WHEN s.lost THEN 'lost' ELSE s.state::text END AS state,
       s.capabilities, s.concurrency, s.running_tasks,
       extract(epoch FROM s.heartbeat_age)::double precision AS heartbeat_age_seconds,
       m.finished_last_hour, m.failed_last_hour, s.started_at
FROM omnispindle.worker_summary s
JOIN omnispindle.worker_metrics m ON m.id = s.id
ORDER BY s.state <> 'active', s.name
LIMIT %(limit)s::bigint;

-- name: task_graph
-- The workflow a task belongs to: every task linked to it by dependency edges
-- in either direction, at most `limit` of them (the recursion stops as soon as
-- the outer LIMIT has its rows). UNION, not UNION ALL: a task reached twice
-- (a diamond) is walked once. Each task is looked up by key (LATERAL, OFFSET 0
-- keeps the planner from flattening it): the join of the few tasks found with
-- task_details was planned as a merge join that read every task and every
-- archived one, at each view of the page.
WITH RECURSIVE linked (task_id) AS (
    SELECT %(id)s::bigint
    UNION
    SELECT (r.relative ->> 'task_id')::bigint
    FROM linked l
    CROSS JOIN LATERAL (SELECT d.dependencies, d.dependents FROM omnispindle.task_details d
                        WHERE d.task_id = l.task_id OFFSET 0) AS d
    CROSS JOIN LATERAL jsonb_array_elements(d.dependencies || d.dependents) AS r (relative)
)
SELECT d.task_id, d.task_type, d.state::text AS state,
       ARRAY(SELECT (p.parent ->> 'task_id')::bigint
             FROM jsonb_array_elements(d.dependencies) AS p (parent)) AS depends_on
FROM (SELECT task_id FROM linked LIMIT %(limit)s::bigint) AS n
CROSS JOIN LATERAL (SELECT d.task_id, d.task_type, d.state, d.dependencies
                    FROM omnispindle.task_details d
                    WHERE d.task_id = n.task_id OFFSET 0) AS d
ORDER BY d.task_id;

-- name: dashboard_partials_readable
-- Whether this role may read partial results, which observer access does not
-- grant: a read refused would leave an error in the server's log at every
-- refresh of the task's page.
SELECT has_table_privilege(to_regclass('omnispindle.task_stream'), 'SELECT') AS readable;

-- name: dashboard_partials
-- A task's newest `limit` partial results, oldest of them first. A task may
-- stream 100,000, and its page reads them again every few seconds: a person
-- follows the newest. Sequence numbers count from 1 without a gap
-- (emit_partial takes the highest plus one, and rows go only with their
-- task), so the newest one's is how many the task streamed.
SELECT s.seq, s.attempt, s.payload, s.created_at
FROM (SELECT seq, attempt, payload, created_at
      FROM omnispindle.task_stream
      WHERE task_id = %(id)s::bigint
      ORDER BY seq DESC
      LIMIT %(limit)s::bigint) AS s
ORDER BY s.seq;

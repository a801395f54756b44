-- Migration 0011_history: finished tasks leave the hot table for a history
-- partitioned by when they finished (see archive_finished in
-- sql/queries/history.sql); retention drops its partitions whole. The views
-- that show finished tasks read both tables.

-- Finished tasks' history: the tasks the sweeper moved out of the hot table
-- once finished (see archive_finished in sql/queries/history.sql), with the
-- same columns, in partitions by when they finished. Retention drops a whole
-- partition once its newest task is past the horizon, instead of deleting row
-- by row, so neither table nor its indexes grow with the rate. A finished task
-- is in exactly one of tasks and task_history; get_task, waits, the CLI and
-- the views read both. Its dependency edges and stream rows are gone.
CREATE TABLE omnispindle.task_history (LIKE omnispindle.tasks)
    PARTITION BY RANGE (finished_at);
ALTER TABLE omnispindle.task_history ALTER COLUMN finished_at SET NOT NULL;
CREATE INDEX task_history_id_idx ON omnispindle.task_history (id);
CREATE INDEX task_history_finished_idx ON omnispindle.task_history (finished_at);

-- task_history's partitions, one row each: [from_at, to_at) of finished_at.
-- They are contiguous: a task finished in [min(from_at), max(to_at)) has a
-- partition. Only the functions below write here.
CREATE TABLE omnispindle.history_partitions (
    name    text PRIMARY KEY,
    from_at timestamptz NOT NULL UNIQUE,
    to_at   timestamptz NOT NULL,
    CONSTRAINT history_partitions_range CHECK (from_at < to_at)
);

-- Creates the partition of task_history for [p_from, p_to) and records it.
-- Called with history_partitions locked (cover_history).
CREATE FUNCTION omnispindle.add_history_partition(p_from timestamptz, p_to timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    part text := 'task_history_' || to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
BEGIN
    EXECUTE format('CREATE TABLE omnispindle.%I PARTITION OF omnispindle.task_history '
                   'FOR VALUES FROM (%L) TO (%L)', part, p_from, p_to);
    INSERT INTO omnispindle.history_partitions (name, from_at, to_at)
    VALUES (part, p_from, p_to);
END
$$;

-- Makes task_history's partitions reach from p_oldest (when not NULL, and
-- not further back than p_keep_seconds, the retention: drop_history would
-- drop such a partition at once) to one width past now(); returns how many it
-- made. A new partition is p_width_seconds wide and starts on a multiple of
-- the width (from 2000-01-01 UTC), except the two that fill a span in one:
-- the time since the newest partition ended (maintenance stopped for a while)
-- and the time before the oldest began. Creating a partition waits for
-- readers of task_history: the lock timeout keeps a long one from stalling
-- every reader queued behind.
CREATE FUNCTION omnispindle.cover_history(p_oldest timestamptz, p_width_seconds double precision,
                                          p_keep_seconds double precision)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    origin CONSTANT timestamptz := '2000-01-01 00:00:00+00';
    width interval;
    now_bin timestamptz;
    lo timestamptz;
    hi timestamptz;
    made integer := 0;
BEGIN
    IF p_width_seconds IS NULL OR NOT p_width_seconds BETWEEN 1 AND 31622400 THEN
        RAISE EXCEPTION 'a history partition is 1 s to 366 days wide, not % s', p_width_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    width := make_interval(secs => p_width_seconds);
    now_bin := origin + make_interval(secs => floor(extract(epoch FROM now() - origin)
                                                    / p_width_seconds) * p_width_seconds);
    IF p_oldest IS NOT NULL AND p_keep_seconds IS NOT NULL THEN
        p_oldest := greatest(p_oldest, now() - make_interval(secs => p_keep_seconds));
    END IF;
    LOCK TABLE omnispindle.history_partitions IN EXCLUSIVE MODE;
    SELECT min(from_at), max(to_at) INTO lo, hi FROM omnispindle.history_partitions;
    IF hi IS NULL THEN
        lo := now_bin;
        hi := now_bin;
    ELSIF hi < now_bin THEN
        PERFORM omnispindle.add_history_partition(hi, now_bin);
        made := made + 1;
        hi := now_bin;
    END IF;
    WHILE hi < now() + width LOOP
        PERFORM omnispindle.add_history_partition(hi, hi + width);
        made := made + 1;
        hi := hi + width;
    END LOOP;
    IF p_oldest < lo THEN
        PERFORM omnispindle.add_history_partition(
            origin + make_interval(secs => floor(extract(epoch FROM p_oldest - origin)
                                                 / p_width_seconds) * p_width_seconds),
            lo);
        made := made + 1;
    END IF;
    RETURN made;
END
$$;

-- Drops the partitions of task_history whose every task finished more than
-- p_keep_seconds ago; returns how many. Dropping waits for readers of
-- task_history as creating does, with the same bound.
CREATE FUNCTION omnispindle.drop_history(p_keep_seconds double precision)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    part text;
    dropped integer := 0;
BEGIN
    IF p_keep_seconds IS NULL OR NOT p_keep_seconds > 0 THEN
        RAISE EXCEPTION 'a retention is a positive number of seconds, not %', p_keep_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE omnispindle.history_partitions IN EXCLUSIVE MODE;
    FOR part IN SELECT p.name FROM omnispindle.history_partitions p
                WHERE p.to_at <= now() - make_interval(secs => p_keep_seconds)
                ORDER BY p.from_at
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS omnispindle.%I', part);
        DELETE FROM omnispindle.history_partitions WHERE name = part;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

REVOKE EXECUTE ON FUNCTION omnispindle.add_history_partition(timestamptz, timestamptz),
    omnispindle.cover_history(timestamptz, double precision, double precision),
    omnispindle.drop_history(double precision)
    FROM PUBLIC;

-- The views that show finished tasks read them in both tables.
CREATE OR REPLACE VIEW omnispindle.failed_tasks AS
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type'    AS error_type,
       errors -> -1 ->> 'message' AS error_message,
       finished_at
FROM omnispindle.tasks
WHERE state = 'failed'
UNION ALL
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type', errors -> -1 ->> 'message', finished_at
FROM omnispindle.task_history
WHERE state = 'failed';

-- Per task type: tasks in each state, throughput over the last minute and
-- hour, queue wait and run time percentiles and failure and retry rates over
-- the last hour, and how long the oldest ready task has waited. Times are in
-- seconds; rates are fractions of the tasks that finished in the last hour.
CREATE OR REPLACE VIEW omnispindle.task_metrics AS
WITH states AS (
    SELECT task_type,
           count(*) FILTER (WHERE state = 'blocked')   AS blocked,
           count(*) FILTER (WHERE state = 'pending')   AS pending,
           count(*) FILTER (WHERE state = 'running')   AS running,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed')    AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           extract(epoch FROM now() - min(run_after)
                   FILTER (WHERE state = 'pending' AND run_after <= now()))::double precision
               AS oldest_ready_seconds
    FROM omnispindle.tasks
    GROUP BY task_type
), finished AS (
    SELECT task_type, state, attempts, run_after, started_at, finished_at
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour'
    UNION ALL
    SELECT task_type, state, attempts, run_after, started_at, finished_at
    FROM omnispindle.task_history
    WHERE finished_at > now() - interval '1 hour'
), recent AS (
    SELECT task_type,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute'
                            AND state = 'succeeded') AS succeeded_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled_last_hour,
           count(*) FILTER (WHERE attempts > 1) AS retried_last_hour,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - run_after))
               FILTER (WHERE started_at IS NOT NULL) AS wait_quantiles,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM finished_at - started_at))
               FILTER (WHERE started_at IS NOT NULL AND state IN ('succeeded', 'failed'))
               AS run_quantiles
    FROM finished
    GROUP BY task_type
)
SELECT coalesce(s.task_type, r.task_type) AS task_type,
       coalesce(s.blocked, 0) AS blocked, coalesce(s.pending, 0) AS pending,
       coalesce(s.running, 0) AS running, coalesce(s.succeeded, 0) AS succeeded,
       coalesce(s.failed, 0) AS failed, coalesce(s.cancelled, 0) AS cancelled,
       coalesce(r.finished_last_minute, 0) AS finished_last_minute,
       coalesce(r.succeeded_last_minute, 0) AS succeeded_last_minute,
       coalesce(r.finished_last_hour, 0) AS finished_last_hour,
       coalesce(r.succeeded_last_hour, 0) AS succeeded_last_hour,
       coalesce(r.failed_last_hour, 0) AS failed_last_hour,
       coalesce(r.cancelled_last_hour, 0) AS cancelled_last_hour,
       coalesce(r.retried_last_hour, 0) AS retried_last_hour,
       r.failed_last_hour::double precision
           / nullif(r.succeeded_last_hour + r.failed_last_hour, 0) AS failure_rate_last_hour,
       r.retried_last_hour::double precision / nullif(r.finished_last_hour, 0)
           AS retry_rate_last_hour,
       r.wait_quantiles[1] AS wait_p50_seconds,
       r.wait_quantiles[2] AS wait_p95_seconds,
       r.wait_quantiles[3] AS wait_p99_seconds,
       r.run_quantiles[1] AS run_p50_seconds,
       r.run_quantiles[2] AS run_p95_seconds,
       r.run_quantiles[3] AS run_p99_seconds,
       s.oldest_ready_seconds
-- A type whose every task of the last hour is in the history has a row too.
FROM states s
FULL JOIN recent r ON r.task_type = s.task_type;

-- Per worker: how full it is now, and what it finished lately.
CREATE OR REPLACE VIEW omnispindle.worker_metrics AS
WITH running AS (
    SELECT worker_id, count(*) AS running_tasks
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY worker_id
), finished AS (
    SELECT worker_id, state, finished_at
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
    UNION ALL
    SELECT worker_id, state, finished_at
    FROM omnispindle.task_history
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
), recent AS (
    SELECT worker_id,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour
    FROM finished
    GROUP BY worker_id
)
SELECT w.id, w.name, w.host, w.pid, w.state, w.concurrency,
       coalesce(r.running_tasks, 0) AS running_tasks,
       coalesce(r.running_tasks, 0)::double precision / w.concurrency AS utilisation,
       coalesce(f.finished_last_minute, 0) AS finished_last_minute,
       coalesce(f.finished_last_hour, 0) AS finished_last_hour,
       coalesce(f.failed_last_hour, 0) AS failed_last_hour,
       extract(epoch FROM now() - w.last_heartbeat_at)::double precision
           AS heartbeat_age_seconds
FROM omnispindle.workers w
LEFT JOIN running r ON r.worker_id = w.id
LEFT JOIN recent f ON f.worker_id = w.id;

-- Failed and cancelled in the last minute, by task type (task_metrics splits
-- off only the succeeded ones).
CREATE OR REPLACE VIEW omnispindle.outcomes_last_minute AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM (SELECT task_type, state FROM omnispindle.tasks
      WHERE finished_at > now() - interval '1 minute'
      UNION ALL
      SELECT task_type, state FROM omnispindle.task_history
      WHERE finished_at > now() - interval '1 minute') AS finished
GROUP BY task_type;

-- What read-only commands read, as views: a role that may only look needs
-- SELECT on the views and nothing on the tables. An archived task's
-- dependency edges went with it: its lists are empty, and no list names it.
CREATE OR REPLACE VIEW omnispindle.task_details AS
SELECT t.id AS task_id, t.task_type, t.state, t.priority, t.attempts, t.max_attempts,
       t.retry_backoff, t.timeout_seconds, t.required_capabilities,
       t.allow_failed_dependencies, t.pending_dependencies, t.parameters, t.result, t.errors,
       t.cancel_reason, t.cancel_requested_at, t.worker_id, w.name AS worker_name,
       t.created_at, t.started_at, t.finished_at, t.run_after, t.lease_expires_at,
       t.idempotency_key,
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
FROM (SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key
      FROM omnispindle.tasks
      UNION ALL
      SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key
      FROM omnispindle.task_history) t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id;

-- grant_access() as 0010 made it, with the history: readers of tasks read it too, workers
-- write it and keep its partitions.
CREATE OR REPLACE FUNCTION omnispindle.grant_access(p_role regrole, p_access text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    fn regprocedure;
BEGIN
    IF p_access IS NULL OR p_access NOT IN ('observer', 'producer', 'worker') THEN
        RAISE EXCEPTION '%', format('unknown access %L: give observer, producer or worker',
                                    p_access)
            USING ERRCODE = 'OS005';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA omnispindle TO %s', p_role);
    EXECUTE format('GRANT SELECT ON omnispindle.alembic_version, omnispindle.queue_summary, '
                   'omnispindle.worker_summary, omnispindle.failed_tasks, '
                   'omnispindle.task_metrics, omnispindle.worker_metrics, '
                   'omnispindle.periodic_summary, omnispindle.task_details, '
                   'omnispindle.outcomes_last_minute, omnispindle.outcomes_per_minute, '
                   'omnispindle.unfinished_summary, omnispindle.outcome_minutes, '
                   'omnispindle.outcome_rollup, omnispindle.paused_task_types, '
                   'omnispindle.task_type_limits, omnispindle.task_type_limit_summary, '
                   'omnispindle.worker_demand, omnispindle.task_type_strategies, '
                   'omnispindle.history_partitions TO %s', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.workers_needed(integer, integer, '
                   'integer, text[]) TO %s', p_role);
    IF p_access = 'observer' THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT SELECT ON omnispindle.tasks, omnispindle.task_dependencies, '
                   'omnispindle.task_stream, omnispindle.workers, omnispindle.periodic_tasks, '
                   'omnispindle.periodic_ticks, omnispindle.task_history TO %s', p_role);
    -- A row a producer inserts can only be a pending task: the CHECKs refuse
    -- any other state without the columns it leaves out.
    EXECUTE format('GRANT INSERT (task_type, parameters, priority, max_attempts, retry_backoff, '
                   'timeout_seconds, required_capabilities, state, run_after, trace_context, '
                   'group_key) '
                   'ON omnispindle.tasks TO %s', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON omnispindle.submissions TO %s', p_role);
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'omnispindle'::regnamespace
                AND p.proname = ANY (CASE p_access
                    WHEN 'producer' THEN ARRAY['submit_tasks', 'enqueue', 'cancel_task',
                                               'retry_tasks', 'retry_task', 'pause_task_type',
                                               'resume_task_type', 'set_task_type_limit',
                                               'clear_task_type_limit', 'set_task_type_strategy']
                    ELSE ARRAY['claim_tasks', 'complete_and_claim', 'complete_attempts',
                               'fail_attempts', 'lock_prunable_tasks', 'retry_delay',
                               'enqueue_periodic_ticks', 'left_to_a_narrower_worker',
                               'group_tokens_at', 'cover_history', 'drop_history']
                END)
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', fn, p_role);
    END LOOP;
    IF p_access = 'producer' THEN
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.periodic_tasks TO %s',
                       p_role);
        RETURN;
    END IF;
    EXECUTE format('GRANT UPDATE (state, attempts, run_after, result, errors, worker_id, '
                   'lease_token, lease_expires_at, started_at, finished_at, cancel_reason, '
                   'cancel_requested_at, pending_dependencies), DELETE '
                   'ON omnispindle.tasks TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE ON omnispindle.workers TO %s', p_role);
    EXECUTE format('GRANT INSERT ON omnispindle.task_stream, omnispindle.task_history TO %s',
                   p_role);
    EXECUTE format('GRANT SELECT, UPDATE ON omnispindle.maintenance_locks TO %s', p_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON omnispindle.maintenance_leases TO %s',
                   p_role);
    EXECUTE format('GRANT UPDATE ON omnispindle.outcome_rollup TO %s', p_role);
    EXECUTE format('GRANT UPDATE (tokens, refilled_at, group_tokens) ON '
                   'omnispindle.task_type_limits TO %s',
                   p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.outcome_minutes TO %s', p_role);
    EXECUTE format('GRANT DELETE ON omnispindle.submissions TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.periodic_ticks TO %s', p_role);
END
$$;

-- Roles granted access before this migration get what grant_access now
-- gives them: readers of the views see the partitions, readers of tasks read
-- their history, and workers move tasks into it and keep its partitions.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'omnispindle.queue_summary'::regclass
                     AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT ON omnispindle.history_partitions TO %s', grantee);
    END LOOP;
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'omnispindle.tasks'::regclass
                     AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT ON omnispindle.task_history TO %s', grantee);
    END LOOP;
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'omnispindle.task_stream'::regclass
                     AND a.privilege_type = 'INSERT' AND a.grantee <> c.relowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT INSERT ON omnispindle.task_history TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.cover_history(timestamptz, '
                       'double precision, double precision), '
                       'omnispindle.drop_history(double precision) TO %s', grantee);
    END LOOP;
END
$$;

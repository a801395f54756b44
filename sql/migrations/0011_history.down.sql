-- Undo 0011_history. Archived tasks go back into tasks, which they left
-- unchanged (without their dependency edges and stream rows).

-- grant_access() as 0010 made it.
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
                   'omnispindle.worker_demand, omnispindle.task_type_strategies TO %s', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.workers_needed(integer, integer, '
                   'integer, text[]) TO %s', p_role);
    IF p_access = 'observer' THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT SELECT ON omnispindle.tasks, omnispindle.task_dependencies, '
                   'omnispindle.task_stream, omnispindle.workers, omnispindle.periodic_tasks, '
                   'omnispindle.periodic_ticks TO %s', p_role);
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
                               'group_tokens_at']
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
    EXECUTE format('GRANT INSERT ON omnispindle.task_stream TO %s', p_role);
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

-- The views as 0010 left them.
CREATE OR REPLACE VIEW omnispindle.failed_tasks AS
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type'    AS error_type,
       errors -> -1 ->> 'message' AS error_message,
       finished_at
FROM omnispindle.tasks
WHERE state = 'failed';

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
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour'
    GROUP BY task_type
)
SELECT s.task_type, s.blocked, s.pending, s.running, s.succeeded, s.failed, s.cancelled,
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
FROM states s
LEFT JOIN recent r ON r.task_type = s.task_type;

CREATE OR REPLACE VIEW omnispindle.worker_metrics AS
WITH running AS (
    SELECT worker_id, count(*) AS running_tasks
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY worker_id
), recent AS (
    SELECT worker_id,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
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
FROM omnispindle.tasks t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id;

CREATE OR REPLACE VIEW omnispindle.outcomes_last_minute AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM omnispindle.tasks
WHERE finished_at > now() - interval '1 minute'
GROUP BY task_type;

INSERT INTO omnispindle.tasks OVERRIDING SYSTEM VALUE
SELECT * FROM omnispindle.task_history;

DROP FUNCTION omnispindle.drop_history(double precision);
DROP FUNCTION omnispindle.cover_history(timestamptz, double precision, double precision);
DROP FUNCTION omnispindle.add_history_partition(timestamptz, timestamptz);
DROP TABLE omnispindle.task_history;
DROP TABLE omnispindle.history_partitions;

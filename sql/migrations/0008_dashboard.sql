-- Migration 0008_dashboard: what the web dashboard reads beyond the views of
-- 0007: finished tasks per minute over the last hour, kept by a rollup the
-- sweepers fill, unfinished tasks per type from the partial indexes, and the
-- roles' rights to read (observer) and fill (worker) them.

-- Finished tasks per minute and task type, counted once by a maintenance
-- pass (omnispindle._maintenance.rollup, run by every sweeper) rather than by
-- a trigger: the claim and complete statements stay free of any shared
-- counter. A pass takes the one row of outcome_rollup FOR UPDATE SKIP LOCKED
-- (so two passes never count the same task), counts the tasks that finished
-- in [counted_until, now() - a settle lag) through tasks_finished_idx, adds
-- them here and moves counted_until to the end of that span, all in one
-- transaction. Pruning tasks leaves these rows as they are.
--
-- Known imprecision: finished_at is the start time of the transaction that
-- finished the task. A pass misses a task whose finishing transaction started
-- before the pass's span ends (now() - the settle lag, 5 s by default) but had
-- not committed when the pass read the tasks: only a finishing transaction
-- that stays open longer than the settle lag (a cancel_task inside a long
-- transaction of a caller's, say) can be missed, and it is then never counted.
CREATE TABLE omnispindle.outcome_minutes (
    minute    timestamptz NOT NULL,
    task_type text NOT NULL,
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    retried   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, task_type)
);

-- The watermark: every task that finished before counted_until is counted in
-- outcome_minutes (but see above), none after it. One row, always.
CREATE TABLE omnispindle.outcome_rollup (
    single        boolean PRIMARY KEY DEFAULT true CHECK (single),
    counted_until timestamptz NOT NULL
);
-- Nothing counted yet: the first pass starts at the hour the views show.
INSERT INTO omnispindle.outcome_rollup (counted_until) VALUES ('-infinity');

-- Finished tasks per minute and task type, by outcome, from the start of the
-- minute 59 minutes ago; a minute without any has no row. retried: finished
-- after more than one attempt, as task_metrics counts them. Minutes before the
-- watermark come from outcome_minutes; the tail after it (the last few
-- seconds, while sweepers run) is counted live from tasks_finished_idx.
--
-- The tail's lower bound is only known when the query runs, so Postgres
-- estimates it as a third of the table and would scan it all. Bounded above as
-- well (by a time no task has finished at yet), the range estimate is small
-- and the index is used: the tail is short whenever the passes keep up.
CREATE VIEW omnispindle.outcomes_per_minute AS
WITH bounds AS (
    SELECT date_trunc('minute', now()) - interval '59 minutes' AS first_minute,
           greatest(r.counted_until, date_trunc('minute', now()) - interval '59 minutes')
               AS counted_until
    FROM omnispindle.outcome_rollup r
), counted AS (
    SELECT o.minute, o.task_type, o.succeeded, o.failed, o.cancelled, o.retried
    FROM omnispindle.outcome_minutes o
    WHERE o.minute >= (SELECT first_minute FROM bounds)
    UNION ALL
    SELECT date_trunc('minute', t.finished_at), t.task_type,
           count(*) FILTER (WHERE t.state = 'succeeded'),
           count(*) FILTER (WHERE t.state = 'failed'),
           count(*) FILTER (WHERE t.state = 'cancelled'),
           count(*) FILTER (WHERE t.attempts > 1)
    FROM omnispindle.tasks t
    WHERE t.finished_at >= (SELECT counted_until FROM bounds)
      AND t.finished_at < now() + interval '1 day'
    GROUP BY 1, 2
)
SELECT minute, task_type,
       sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
       sum(cancelled)::bigint AS cancelled, sum(retried)::bigint AS retried
FROM counted
GROUP BY minute, task_type;

-- The ready index carries each pending task's type and run_after: the
-- dashboard's count of pending tasks per type is then an index-only scan,
-- where reading each task's row cost 60 to 90 ms for 20,000 pending tasks
-- spread over a million. The claim reads it as before.
DROP INDEX omnispindle.tasks_ready_idx;
CREATE INDEX tasks_ready_idx ON omnispindle.tasks (priority DESC, id)
    INCLUDE (task_type, run_after)
    WHERE state = 'pending';

-- Unfinished tasks per task type, each state read through its own partial
-- index: unlike queue_summary it never reads a finished row, so its cost
-- follows the backlog, not the table. Columns as in queue_summary. Running
-- tasks are read from the table (their number is bounded by the workers'
-- slots): their lease expiry changes with every heartbeat, and an index
-- holding it would make heartbeats costlier.
CREATE VIEW omnispindle.unfinished_summary AS
SELECT task_type,
       sum(blocked)::bigint AS blocked,
       sum(pending)::bigint AS pending,
       sum(running)::bigint AS running,
       now() - min(oldest_ready) AS oldest_ready_age,
       sum(expired_leases)::bigint AS expired_leases,
       now() - min(oldest_expired_lease) AS oldest_expired_lease_age
FROM (
    SELECT task_type, count(*) AS blocked, 0 AS pending, 0 AS running,
           NULL::timestamptz AS oldest_ready, 0 AS expired_leases,
           NULL::timestamptz AS oldest_expired_lease
    FROM omnispindle.tasks
    WHERE state = 'blocked'
    GROUP BY task_type
    UNION ALL
    SELECT task_type, 0, count(*), 0, min(run_after) FILTER (WHERE run_after <= now()), 0, NULL
    FROM omnispindle.tasks
    WHERE state = 'pending'
    GROUP BY task_type
    UNION ALL
    SELECT task_type, 0, 0, count(*), NULL,
           count(*) FILTER (WHERE lease_expires_at < now()),
           min(lease_expires_at) FILTER (WHERE lease_expires_at < now())
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY task_type
) AS by_state
GROUP BY task_type;

-- grant_access() as 0007 made it, with the views and the rollup above for
-- observers, and the rollup's tables for the workers' passes that fill them.
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
                   'omnispindle.outcome_rollup TO %s', p_role);
    IF p_access = 'observer' THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT SELECT ON omnispindle.tasks, omnispindle.task_dependencies, '
                   'omnispindle.task_stream, omnispindle.workers, omnispindle.periodic_tasks, '
                   'omnispindle.periodic_ticks TO %s', p_role);
    -- A row a producer inserts can only be a pending task: the CHECKs refuse
    -- any other state without the columns it leaves out.
    EXECUTE format('GRANT INSERT (task_type, parameters, priority, max_attempts, retry_backoff, '
                   'timeout_seconds, required_capabilities, state, run_after, trace_context) '
                   'ON omnispindle.tasks TO %s', p_role);
    EXECUTE format('GRANT SELECT, INSERT ON omnispindle.submissions TO %s', p_role);
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'omnispindle'::regnamespace
                AND p.proname = ANY (CASE p_access
                    WHEN 'producer' THEN ARRAY['submit_tasks', 'enqueue', 'cancel_task',
                                               'retry_tasks', 'retry_task']
                    ELSE ARRAY['claim_tasks', 'complete_and_claim', 'complete_attempts',
                               'fail_attempts', 'lock_prunable_tasks', 'retry_delay',
                               'enqueue_periodic_ticks']
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
    EXECUTE format('GRANT UPDATE ON omnispindle.outcome_rollup TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.outcome_minutes TO %s', p_role);
    EXECUTE format('GRANT DELETE ON omnispindle.submissions TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.periodic_ticks TO %s', p_role);
END
$$;


-- Undo 0010_scheduling.

-- grant_access() as 0009 made it.
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
                   'omnispindle.outcome_rollup, omnispindle.paused_task_types TO %s', p_role);
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
                                               'retry_tasks', 'retry_task', 'pause_task_type',
                                               'resume_task_type']
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

-- claim_tasks as 0009 made it.
CREATE OR REPLACE FUNCTION omnispindle.claim_tasks(p_task_types text[], p_capabilities text[],
                                        p_limit integer, p_worker_id uuid,
                                        p_lease_seconds double precision,
                                        p_after_priority integer DEFAULT NULL,
                                        p_after_id bigint DEFAULT NULL)
RETURNS TABLE (id bigint, task_type text, parameters jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, lease_token uuid,
               dependency_results jsonb, dependency_failures jsonb, trace_context jsonb,
               priority integer)
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
    claimed integer := 0;
    found_now integer;
    -- Bytes of parameters the rest of the claim may take: a claim carries at
    -- most 64 MiB of them (or one task, whatever its size), so a worker never
    -- takes a concurrency's worth of the largest rows in one statement.
    budget bigint := 67108864;
    chosen bigint[];
    taken bigint;
    -- Walks of the index, in order: (lowest priority, highest priority, after id).
    -- -1000 and 1000 bound priorities (tasks_priority_range).
    walks integer[] := CASE WHEN p_after_id IS NULL THEN ARRAY[-1000, 1000, 0]
                            ELSE ARRAY[p_after_priority + 1, 1000, 0,
                                       p_after_priority, p_after_priority, p_after_id,
                                       -1000, p_after_priority - 1, 0] END;
    walk integer;
BEGIN
    FOR walk IN 0 .. cardinality(walks) / 3 - 1 LOOP
        -- The walk's ready tasks, locked, as many as the budget holds. A ROWS
        -- frame without ORDER BY sums in the order the locked rows come, the
        -- index's; the first always fits. pg_column_size reads a value's
        -- header, never its TOASTed body.
        WITH ready AS (
            SELECT r.id, pg_column_size(r.parameters) AS size
            FROM omnispindle.tasks r
            WHERE r.state = 'pending'
              AND r.priority BETWEEN walks[walk * 3 + 1] AND walks[walk * 3 + 2]
              AND r.id > walks[walk * 3 + 3]
              AND r.run_after <= now()
              AND r.task_type = ANY (p_task_types)
              AND r.required_capabilities <@ p_capabilities
              AND r.attempts < r.max_attempts
              -- A paused type's tasks wait. The paused types are read once per
              -- walk (an InitPlan), with this statement's snapshot: no claim that
              -- starts after a pause commits takes them. A NOT EXISTS probe per
              -- candidate made each walk over a paused backlog three times slower.
              AND r.task_type <> ALL (ARRAY(SELECT p.task_type
                                            FROM omnispindle.paused_task_types p))
            ORDER BY r.priority DESC, r.id
            LIMIT p_limit - claimed
            FOR NO KEY UPDATE SKIP LOCKED
        ), summed AS (
            SELECT id, size, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto FROM ready
        )
        SELECT array_agg(id), max(upto) INTO chosen, taken
        FROM summed WHERE upto - size < budget;
        CONTINUE WHEN chosen IS NULL;

        RETURN QUERY
        UPDATE omnispindle.tasks t
        SET state = 'running',
            attempts = t.attempts + 1,
            worker_id = p_worker_id,
            lease_token = gen_random_uuid(),
            -- A lease never reaches past the task's timeout (LEAST ignores NULL).
            lease_expires_at = now() + make_interval(secs => LEAST(p_lease_seconds, t.timeout_seconds)),
            started_at = now()
        WHERE t.id = ANY (chosen)
        RETURNING t.id, t.task_type, t.parameters, t.attempts, t.max_attempts,
                  t.timeout_seconds, t.lease_token,
                  -- LATERAL primary-key lookups (OFFSET 0 keeps the planner from
                  -- flattening them into a scan of all tasks): linear whatever
                  -- the statistics say. NULL when there are none, which spares
                  -- the worker decoding an empty object per task.
                  (SELECT jsonb_object_agg(d.depends_on::text, p.result)
                   FROM omnispindle.task_dependencies d,
                        LATERAL (SELECT q.result FROM omnispindle.tasks q
                                 WHERE q.id = d.depends_on AND q.state = 'succeeded' OFFSET 0) p
                   WHERE d.task_id = t.id),
                  -- Only children that allow failed dependencies ever see these,
                  -- so no other claim looks them up.
                  CASE WHEN t.allow_failed_dependencies THEN
                  (SELECT jsonb_object_agg(d.depends_on::text, p.failure)
                   FROM omnispindle.task_dependencies d,
                        LATERAL (SELECT jsonb_build_object('state', q.state, 'error', q.errors -> -1,
                                                           'cancel_reason', q.cancel_reason) AS failure
                                 FROM omnispindle.tasks q
                                 WHERE q.id = d.depends_on AND q.state IN ('failed', 'cancelled')
                                 OFFSET 0) p
                   WHERE d.task_id = t.id) END,
                  t.trace_context, t.priority;
        GET DIAGNOSTICS found_now = ROW_COUNT;
        claimed := claimed + found_now;
        budget := budget - taken;
        EXIT WHEN claimed >= p_limit OR budget <= 0;
    END LOOP;
END
$$;

DROP FUNCTION omnispindle.workers_needed(integer, integer, integer, text[]);
DROP VIEW omnispindle.worker_demand;
DROP VIEW omnispindle.task_type_limit_summary;
DROP FUNCTION omnispindle.clear_task_type_limit(text);
DROP FUNCTION omnispindle.set_task_type_limit(text, integer, double precision, integer);
DROP FUNCTION omnispindle.set_task_type_strategy(text, text, double precision);
DROP TABLE omnispindle.task_type_strategies;
DROP INDEX omnispindle.tasks_running_type_idx;
DROP TABLE omnispindle.task_type_limits;

-- Undo 0012_chain_steps: custom plans again, and every ready notice at once.

ALTER FUNCTION omnispindle.complete_attempts(bigint[], uuid[], jsonb[])
    RESET plan_cache_mode;
ALTER FUNCTION omnispindle.fail_attempts(bigint[], uuid[], jsonb[])
    RESET plan_cache_mode;

-- As 0005 made it.
CREATE OR REPLACE FUNCTION omnispindle.complete_and_claim(p_ids bigint[], p_tokens uuid[], p_results jsonb[],
                                               p_task_types text[], p_capabilities text[],
                                               p_limit integer, p_worker_id uuid,
                                               p_lease_seconds double precision,
                                               p_after_priority integer, p_after_id bigint)
RETURNS TABLE (id bigint, task_type text, parameters jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, lease_token uuid,
               dependency_results jsonb, dependency_failures jsonb, trace_context jsonb,
               priority integer, dropped boolean)
LANGUAGE plpgsql
AS $$
BEGIN
    IF cardinality(p_ids) = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    ELSE
        RETURN QUERY
            SELECT d.id, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
                   NULL::double precision, NULL::uuid, NULL::jsonb, NULL::jsonb, NULL::jsonb,
                   NULL::integer, true
            FROM (SELECT unnest(p_ids) AS id
                  EXCEPT ALL
                  SELECT c.id FROM omnispindle.complete_attempts(p_ids, p_tokens, p_results) c) d;
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY
            SELECT c.*, false
            FROM omnispindle.claim_tasks(p_task_types, p_capabilities, p_limit, p_worker_id,
                                         p_lease_seconds, p_after_priority, p_after_id) c;
    END IF;
END
$$;

-- As 0005 made it.
CREATE OR REPLACE FUNCTION omnispindle.after_tasks_update()
RETURNS trigger
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    succeeded bigint[];
    broken bigint[];
    became_pending bigint[];
    retried bigint[];
BEGIN
    -- Claims leave every row running, which asks for nothing here.
    IF NOT EXISTS (SELECT FROM new_rows WHERE state <> 'running') THEN
        RETURN NULL;
    END IF;

    -- Transition tables carry no statistics: every query here is written so
    -- that its plan stays linear (set operations, arrays, primary-key
    -- lookups) whatever the planner guesses, also for statements that change
    -- thousands of rows. EXCEPT keeps the rows whose state changed.
    SELECT array_agg(c.id) FILTER (WHERE c.state = 'succeeded'),
           array_agg(c.id) FILTER (WHERE c.state IN ('failed', 'cancelled')),
           array_agg(c.id) FILTER (WHERE c.state = 'pending')
    INTO succeeded, broken, became_pending
    FROM (SELECT id, state FROM new_rows EXCEPT SELECT id, state FROM old_rows) AS c;

    IF became_pending IS NOT NULL THEN
        SELECT array_agg(id) INTO retried
        FROM (SELECT id FROM old_rows WHERE state = 'failed'
              INTERSECT SELECT id FROM new_rows WHERE state = 'pending') AS r;
    END IF;

    IF retried IS NOT NULL THEN
        -- A failed parent retried by hand is unfinished again for the
        -- children that had counted its failure as done.
        UPDATE omnispindle.tasks t
        SET pending_dependencies = t.pending_dependencies + r.parents
        FROM (SELECT d.task_id, count(*)::integer AS parents
              FROM omnispindle.task_dependencies d
              WHERE d.depends_on = ANY (retried)
              GROUP BY d.task_id) r
        WHERE t.id = r.task_id AND t.state = 'blocked' AND t.allow_failed_dependencies;
    END IF;

    IF succeeded IS NOT NULL OR broken IS NOT NULL THEN
        -- A parent that succeeded, or one that failed or was cancelled for a
        -- child that allows it, counts as done for that child; the last one
        -- makes it ready. Statement triggers fire even for zero rows, so each
        -- nested UPDATE runs only when there is work: that ends the recursion.
        WITH finished_parents AS (
            SELECT d.task_id,
                   count(*) FILTER (WHERE d.depends_on = ANY (succeeded))::integer AS ok,
                   count(*)::integer AS finished
            FROM omnispindle.task_dependencies d
            WHERE d.depends_on = ANY (coalesce(succeeded, '{}') || coalesce(broken, '{}'))
            GROUP BY d.task_id
        ), counted AS (
            SELECT f.task_id,
                   CASE WHEN c.allow_failed_dependencies THEN f.finished ELSE f.ok END AS done
            FROM finished_parents f,
                 LATERAL (SELECT t.allow_failed_dependencies FROM omnispindle.tasks t
                          WHERE t.id = f.task_id AND t.state = 'blocked' OFFSET 0) c
        )
        UPDATE omnispindle.tasks t
        SET pending_dependencies = t.pending_dependencies - c.done,
            state = CASE WHEN t.pending_dependencies = c.done
                         THEN 'pending' ELSE 'blocked' END::omnispindle.task_state,
            run_after = greatest(t.run_after, now())
        FROM counted c
        WHERE t.id = c.task_id AND c.done > 0;
    END IF;

    IF broken IS NOT NULL THEN
        -- Everything downstream of a failure or cancellation is cancelled, up
        -- to (not including) the children that allow failed dependencies.
        WITH RECURSIVE doomed (id, ancestor) AS (
            SELECT d.task_id, d.depends_on
            FROM omnispindle.task_dependencies d
            WHERE d.depends_on = ANY (broken)
              AND NOT (SELECT c.allow_failed_dependencies FROM omnispindle.tasks c
                       WHERE c.id = d.task_id)
            UNION
            SELECT d.task_id, x.ancestor
            FROM doomed x
            JOIN omnispindle.task_dependencies d ON d.depends_on = x.id
            WHERE NOT (SELECT c.allow_failed_dependencies FROM omnispindle.tasks c
                       WHERE c.id = d.task_id)
        ), first_cause AS (
            SELECT DISTINCT ON (x.id) x.id, x.ancestor,
                   (SELECT a.state FROM omnispindle.tasks a WHERE a.id = x.ancestor) AS ancestor_state
            FROM doomed x
            ORDER BY x.id, x.ancestor
        )
        UPDATE omnispindle.tasks t
        SET state = 'cancelled',
            finished_at = now(),
            cancel_reason = format('dependency %s %s', c.ancestor, c.ancestor_state)
        FROM first_cause c
        WHERE t.id = c.id AND t.state IN ('blocked', 'pending');
    END IF;

    IF became_pending IS NOT NULL
       AND EXISTS (SELECT 1 FROM new_rows WHERE state = 'pending' AND run_after <= now()) THEN
        PERFORM pg_notify('omnispindle_ready', '');
    END IF;

    IF succeeded IS NOT NULL OR broken IS NOT NULL THEN
        PERFORM pg_notify('omnispindle_finished', '');
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION omnispindle.insert_linked_tasks(jsonb, jsonb, integer, integer, double precision,
                                              uuid, integer);

-- grant_access() as 0011 made it.
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

-- The rules as CHECK constraints again, as 0001, 0007 and 0010 made them.
DROP TRIGGER tasks_check_request ON omnispindle.tasks;
DROP TRIGGER tasks_check_outcome ON omnispindle.tasks;
DROP FUNCTION omnispindle.refuse_broken_rule();
ALTER TABLE omnispindle.tasks
    ADD CONSTRAINT tasks_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    ADD CONSTRAINT tasks_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    ADD CONSTRAINT tasks_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 101),
    ADD CONSTRAINT tasks_retry_backoff_range CHECK (retry_backoff >= 0),
    ADD CONSTRAINT tasks_timeout_positive CHECK (timeout_seconds > 0),
    ADD CONSTRAINT tasks_errors_is_array CHECK (jsonb_typeof(errors) = 'array'),
    ADD CONSTRAINT tasks_idempotency_key_valid
        CHECK (idempotency_key <> '' AND length(idempotency_key) <= 200),
    ADD CONSTRAINT tasks_timeout_bounded CHECK (timeout_seconds <= 1e9) NOT VALID,
    ADD CONSTRAINT tasks_retry_backoff_bounded CHECK (retry_backoff <= 3600) NOT VALID,
    ADD CONSTRAINT tasks_cancel_reason_bounded CHECK (length(cancel_reason) <= 1000) NOT VALID,
    ADD CONSTRAINT tasks_parameters_size CHECK (pg_column_size(parameters) <= 67108864) NOT VALID,
    ADD CONSTRAINT tasks_result_size CHECK (pg_column_size(result) <= 67108864) NOT VALID,
    ADD CONSTRAINT tasks_required_capabilities_size
        CHECK (cardinality(required_capabilities) <= 1000
               AND octet_length(array_to_string(required_capabilities, '')) <= 800000) NOT VALID,
    ADD CONSTRAINT tasks_group_key_valid
        CHECK (group_key <> '' AND length(group_key) <= 200) NOT VALID;

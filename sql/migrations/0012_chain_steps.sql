-- Migration 0012_chain_steps: a chain's link costs Postgres less. The
-- completions' functions and the update trigger keep generic plans for the
-- connection's life (the plan cache made custom ones at every call, their
-- arrays' sizes being known), and a worker's step that claims after storing
-- its results announces only the children it made ready and left pending, so
-- that the next link of a chain, which the step claims itself, wakes nobody.

ALTER FUNCTION omnispindle.complete_attempts(bigint[], uuid[], jsonb[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION omnispindle.fail_attempts(bigint[], uuid[], jsonb[])
    SET plan_cache_mode = force_generic_plan;

-- As in sql/schema.sql.
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    unannounced bigint[];
BEGIN
    IF cardinality(p_ids) = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    ELSE
        IF p_limit > 0 THEN
            PERFORM set_config('omnispindle_step.ready_unannounced', '{}', true);
        END IF;
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
    IF cardinality(p_ids) > 0 AND p_limit > 0 THEN
        unannounced := current_setting('omnispindle_step.ready_unannounced')::bigint[];
        PERFORM set_config('omnispindle_step.ready_unannounced', '', true);
        -- By key: a condition on the state would let the plan walk the ready index.
        IF cardinality(unannounced) > 0
           AND (SELECT bool_or(t.state = 'pending') FROM omnispindle.tasks t
                WHERE t.id = ANY (unannounced)) THEN
            PERFORM pg_notify('omnispindle_ready', '');
        END IF;
    END IF;
END
$$;

-- As in sql/schema.sql.
CREATE OR REPLACE FUNCTION omnispindle.after_tasks_update()
RETURNS trigger
LANGUAGE plpgsql
SET jit = off
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
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
        IF coalesce(current_setting('omnispindle_step.ready_unannounced', true), '') = '' THEN
            PERFORM pg_notify('omnispindle_ready', '');
        ELSE
            -- A worker's step that claims next (complete_and_claim) announces
            -- only those it leaves pending.
            PERFORM set_config('omnispindle_step.ready_unannounced',
                               (current_setting('omnispindle_step.ready_unannounced')::bigint[]
                                || became_pending)::text, true);
        END IF;
    END IF;

    IF succeeded IS NOT NULL OR broken IS NOT NULL THEN
        PERFORM pg_notify('omnispindle_finished', '');
    END IF;
    RETURN NULL;
END
$$;

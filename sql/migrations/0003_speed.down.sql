-- Reverts 0003_speed: back to the 0002 claim, without the combined step or
-- the table settings.

ALTER TABLE omnispindle.task_dependencies RESET (autovacuum_vacuum_scale_factor,
                                                 autovacuum_analyze_scale_factor);
ALTER TABLE omnispindle.task_stream RESET (autovacuum_vacuum_scale_factor,
                                           autovacuum_analyze_scale_factor);
ALTER TABLE omnispindle.workers RESET (fillfactor);
ALTER FUNCTION omnispindle.after_tasks_update() RESET jit;
ALTER FUNCTION omnispindle.insert_tasks(text[], jsonb[], integer[], integer[], double precision[],
                                        double precision[], jsonb[], jsonb[], jsonb[], boolean[],
                                        timestamptz[], text[], jsonb[], bigint[]) RESET jit;
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
                                        double precision[], jsonb[], jsonb[], jsonb[], boolean[],
                                        timestamptz[], text[], jsonb[]) RESET jit;

DROP FUNCTION omnispindle.complete_and_claim(bigint[], uuid[], jsonb[], text[], text[], integer,
                                             uuid, double precision);
DROP FUNCTION omnispindle.complete_attempts(bigint[], uuid[], jsonb[]);

-- Claims up to p_limit ready tasks for a worker in one statement. SKIP LOCKED
-- lets any number of workers claim at once without waiting on each other; NO
-- KEY UPDATE does not conflict with the KEY SHARE locks that submitting
-- dependents take. Bitmap scans are off so that, even with stale statistics
-- (right after a bulk submit), the plan walks tasks_ready_idx in order and
-- stops after p_limit rows instead of sorting every ready task.
CREATE OR REPLACE FUNCTION omnispindle.claim_tasks(p_task_types text[], p_capabilities text[],
                                        p_limit integer, p_worker_id uuid,
                                        p_lease_seconds double precision)
RETURNS TABLE (id bigint, task_type text, parameters jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, lease_token uuid,
               dependency_results jsonb, dependency_failures jsonb, trace_context jsonb)
LANGUAGE sql
SET enable_bitmapscan = off
AS $$
    WITH ready AS (
        SELECT r.id
        FROM omnispindle.tasks r
        WHERE r.state = 'pending'
          AND r.run_after <= now()
          AND r.task_type = ANY (p_task_types)
          AND r.required_capabilities <@ p_capabilities
          AND r.attempts < r.max_attempts
        ORDER BY r.priority DESC, r.id
        LIMIT p_limit
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE omnispindle.tasks t
    SET state = 'running',
        attempts = t.attempts + 1,
        worker_id = p_worker_id,
        lease_token = gen_random_uuid(),
        -- A lease never reaches past the task's timeout (LEAST ignores NULL).
        lease_expires_at = now() + make_interval(secs => LEAST(p_lease_seconds, t.timeout_seconds)),
        started_at = now()
    FROM ready
    WHERE t.id = ready.id
    RETURNING t.id, t.task_type, t.parameters, t.attempts, t.max_attempts,
              t.timeout_seconds, t.lease_token,
              -- LATERAL primary-key lookups (OFFSET 0 keeps the planner from
              -- flattening them into a scan of all tasks): linear whatever
              -- the statistics say.
              (SELECT coalesce(jsonb_object_agg(d.depends_on::text, p.result), '{}')
               FROM omnispindle.task_dependencies d,
                    LATERAL (SELECT q.result FROM omnispindle.tasks q
                             WHERE q.id = d.depends_on AND q.state = 'succeeded' OFFSET 0) p
               WHERE d.task_id = t.id),
              -- Only children that allow failed dependencies ever see these.
              (SELECT coalesce(jsonb_object_agg(d.depends_on::text, p.failure), '{}')
               FROM omnispindle.task_dependencies d,
                    LATERAL (SELECT jsonb_build_object('state', q.state, 'error', q.errors -> -1,
                                                       'cancel_reason', q.cancel_reason) AS failure
                             FROM omnispindle.tasks q
                             WHERE q.id = d.depends_on AND q.state IN ('failed', 'cancelled')
                             OFFSET 0) p
               WHERE d.task_id = t.id),
              t.trace_context
$$;

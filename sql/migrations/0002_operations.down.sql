-- Undo 0002_operations: back to the 0001_initial schema, with the functions
-- as 0001 defined them.
DROP VIEW IF EXISTS omnispindle.periodic_summary, omnispindle.worker_metrics,
    omnispindle.task_metrics;
DROP FUNCTION IF EXISTS omnispindle.enqueue_periodic_ticks(text[], timestamptz[]);
DROP TABLE IF EXISTS omnispindle.periodic_ticks, omnispindle.periodic_tasks;
DROP FUNCTION IF EXISTS omnispindle.submit_tasks(text[], jsonb[], integer[], integer[],
    double precision[], double precision[], jsonb[], jsonb[], jsonb[], boolean[],
    timestamptz[], text[], jsonb[]);
DROP FUNCTION IF EXISTS omnispindle.insert_tasks(text[], jsonb[], integer[], integer[],
    double precision[], double precision[], jsonb[], jsonb[], jsonb[], boolean[],
    timestamptz[], text[], jsonb[], bigint[]);
DROP FUNCTION IF EXISTS omnispindle.claim_tasks(text[], text[], integer, uuid, double precision);
DROP INDEX IF EXISTS omnispindle.tasks_finished_idx, omnispindle.tasks_idempotency_key_idx;
ALTER TABLE omnispindle.tasks
    DROP COLUMN IF EXISTS trace_context,
    DROP COLUMN IF EXISTS idempotency_key;

CREATE FUNCTION omnispindle.claim_tasks(p_task_types text[], p_capabilities text[],
                                        p_limit integer, p_worker_id uuid,
                                        p_lease_seconds double precision)
RETURNS TABLE (id bigint, task_type text, parameters jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, lease_token uuid,
               dependency_results jsonb, dependency_failures jsonb)
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
               WHERE d.task_id = t.id)
$$;

CREATE OR REPLACE FUNCTION omnispindle.notify_inserted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'pending') THEN
        PERFORM pg_notify('omnispindle_ready', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION omnispindle.submit_tasks(
    p_task_types text[],
    p_parameters jsonb[],
    p_priorities integer[],
    p_max_attempts integer[],
    p_retry_backoffs double precision[],
    p_timeouts double precision[],
    p_required_capabilities jsonb[],
    p_dependencies jsonb[],
    p_entry_dependencies jsonb[],
    p_allow_failed boolean[]
)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
DECLARE
    wanted bigint[];
    missing bigint;
    broken record;
BEGIN
    SELECT coalesce(array_agg(DISTINCT d.value::bigint), '{}') INTO wanted
    FROM unnest(p_dependencies) AS deps(list),
         jsonb_array_elements_text(deps.list) AS d(value);

    -- KEY SHARE keeps the parents from being deleted without blocking their
    -- state changes: an app transaction left open must never stall a worker.
    -- A parent that finishes before this transaction commits cannot see the
    -- new dependency rows; the sweeper's reconcile_blocked pass repairs that.
    PERFORM 1 FROM omnispindle.tasks WHERE id = ANY (wanted) ORDER BY id FOR KEY SHARE;

    SELECT w INTO missing FROM unnest(wanted) AS w
    WHERE NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = w) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown dependency: task % does not exist', missing
            USING ERRCODE = 'OS001';
    END IF;

    SELECT t.id, t.state INTO broken
    FROM unnest(p_dependencies, p_allow_failed) AS s(deps, tolerant),
         jsonb_array_elements_text(s.deps) AS d(value)
    JOIN omnispindle.tasks t ON t.id = d.value::bigint
    WHERE NOT s.tolerant AND t.state IN ('failed', 'cancelled')
    ORDER BY t.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dependency task % is %: its dependents could never run',
            broken.id, broken.state
            USING ERRCODE = 'OS003';
    END IF;

    RETURN QUERY
    WITH spec AS (
        SELECT s.*, (
            SELECT count(DISTINCT t.id)::integer
            FROM jsonb_array_elements_text(s.deps) AS d(value)
            JOIN omnispindle.tasks t ON t.id = d.value::bigint
            WHERE t.state <> 'succeeded'
              AND NOT (s.tolerant AND t.state IN ('failed', 'cancelled'))
        ) + jsonb_array_length(s.entry_deps) AS unfinished
        FROM unnest(p_task_types, p_parameters, p_priorities, p_max_attempts,
                    p_retry_backoffs, p_timeouts, p_required_capabilities, p_dependencies,
                    p_entry_dependencies, p_allow_failed)
             WITH ORDINALITY AS s(task_type, parameters, priority, max_attempts,
                                  retry_backoff, timeout_seconds, caps, deps, entry_deps,
                                  tolerant, ord)
    ), inserted AS (
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, allow_failed_dependencies,
                                       state, pending_dependencies)
        SELECT task_type, parameters, priority, max_attempts, retry_backoff,
               timeout_seconds,
               ARRAY(SELECT jsonb_array_elements_text(caps)),
               tolerant,
               CASE WHEN unfinished > 0 THEN 'blocked' ELSE 'pending' END::omnispindle.task_state,
               unfinished
        FROM spec ORDER BY ord
        RETURNING id
    ), numbered AS (
        SELECT id, row_number() OVER (ORDER BY id) AS ord FROM inserted
    ), edges AS (
        INSERT INTO omnispindle.task_dependencies (task_id, depends_on)
        SELECT n.id, d.value::bigint
        FROM numbered n JOIN spec s ON s.ord = n.ord,
             jsonb_array_elements_text(s.deps) AS d(value)
        UNION
        SELECT n.id, parent.id
        FROM numbered n JOIN spec s ON s.ord = n.ord,
             jsonb_array_elements_text(s.entry_deps) AS e(value)
        JOIN numbered parent ON parent.ord = e.value::bigint
    )
    SELECT id FROM numbered ORDER BY ord;
END
$$;

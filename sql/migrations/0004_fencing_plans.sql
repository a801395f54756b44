-- Migration 0004_fencing_plans: frozen once released. Completions and failures
-- look tasks up by primary key whatever the statistics say, and claims can
-- start from a claim cursor instead of the head of the ready index.

-- Ends one attempt of each given task with an error: back to pending after a
-- backoff while attempts are left, else failed; cancelled when a cancel was
-- requested. Only rows whose lease token still matches change (fencing).
-- Shared by workers and lease recovery.
CREATE OR REPLACE FUNCTION omnispindle.fail_attempts(ids bigint[], tokens uuid[], failures jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state, retry_in double precision)
LANGUAGE sql
AS $$
    WITH attempt AS (
        SELECT f.id, f.token, f.error,
               t.cancel_requested_at IS NOT NULL AS cancelling,
               t.attempts < t.max_attempts AND t.cancel_requested_at IS NULL AS will_retry,
               omnispindle.retry_delay(t.attempts, t.retry_backoff) AS delay
        FROM unnest(ids, tokens, failures) AS f(id, token, error)
        JOIN omnispindle.tasks t ON t.id = f.id
    )
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN a.cancelling THEN 'cancelled'
                     WHEN a.will_retry THEN 'pending'
                     ELSE 'failed' END::omnispindle.task_state,
        run_after = CASE WHEN a.will_retry THEN now() + a.delay ELSE t.run_after END,
        finished_at = CASE WHEN a.will_retry THEN NULL ELSE now() END,
        errors = t.errors || jsonb_build_array(a.error),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM attempt a
    -- The token alone fences (a lease exists exactly while the task runs, see
    -- tasks_lease_matches_state). Saying state = 'running' too let the planner
    -- scan all of tasks_running_idx, dead entries included, instead of the
    -- primary key: completions slowed as a held snapshot kept those entries.
    WHERE t.id = a.id AND t.lease_token = a.token
    RETURNING t.id, t.state,
              CASE WHEN a.will_retry THEN extract(epoch FROM a.delay)::double precision END
$$;

-- Ends attempts that returned: succeeded with their result, or cancelled
-- when a cancel was requested meanwhile. Fencing: a row changes only while
-- the caller still holds its lease, so a worker whose lease was taken over
-- gets no row back and its result is dropped.
CREATE OR REPLACE FUNCTION omnispindle.complete_attempts(ids bigint[], tokens uuid[], results jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state)
LANGUAGE sql
AS $$
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN t.cancel_requested_at IS NULL
                     THEN 'succeeded' ELSE 'cancelled' END::omnispindle.task_state,
        result = CASE WHEN t.cancel_requested_at IS NULL THEN c.result END,
        finished_at = now(),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM unnest(ids, tokens, results) AS c(id, token, result)
    -- Fenced by the token alone, as in fail_attempts (and for the same reason).
    WHERE t.id = c.id AND t.lease_token = c.token
    RETURNING t.id, t.state
$$;

-- The claim functions gain the cursor's arguments and return each task's priority.
DROP FUNCTION omnispindle.complete_and_claim(bigint[], uuid[], jsonb[], text[], text[], integer, uuid,
                                       double precision);
DROP FUNCTION omnispindle.claim_tasks(text[], text[], integer, uuid, double precision);

-- Claims up to p_limit ready tasks for a worker in one statement. SKIP LOCKED
-- lets any number of workers claim at once without waiting on each other; NO
-- KEY UPDATE does not conflict with the KEY SHARE locks that submitting
-- dependents take. Bitmap scans are off so that, even with stale statistics
-- (right after a bulk submit), the plan walks tasks_ready_idx in order and
-- stops after p_limit rows instead of sorting every ready task. PL/pgSQL keeps
-- the plan for the connection's life, since a worker claims many times a
-- second; with sequential scans and sorts off too, that generic plan is the
-- same index walk whatever the statistics said when it was made.
--
-- A claim cursor (p_after_priority, p_after_id: the last task the caller
-- claimed, in claim order) starts the walk where the caller left off. Without
-- it every claim walks from the head of the index over the entries of tasks
-- already claimed; vacuum removes those, but not while any session holds a
-- snapshot older than them, and then each claim slows as that snapshot ages.
-- With a cursor the walk takes, in order: higher priorities than the
-- cursor's, then the cursor's priority past its id, then (if still short)
-- everything from the head. Tasks that became ready behind the cursor (a
-- retry, a delayed task come due) wait for a claim from the head: the worker
-- drops its cursor whenever a claim comes up short, and once a second.
CREATE FUNCTION omnispindle.claim_tasks(p_task_types text[], p_capabilities text[],
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
    -- Walks of the index, in order: (lowest priority, highest priority, after id).
    -- -1000 and 1000 bound priorities (tasks_priority_range).
    walks integer[] := CASE WHEN p_after_id IS NULL THEN ARRAY[-1000, 1000, 0]
                            ELSE ARRAY[p_after_priority + 1, 1000, 0,
                                       p_after_priority, p_after_priority, p_after_id,
                                       -1000, 1000, 0] END;
    walk integer;
BEGIN
    FOR walk IN 0 .. cardinality(walks) / 3 - 1 LOOP
        RETURN QUERY
        WITH ready AS (
            SELECT r.id
            FROM omnispindle.tasks r
            WHERE r.state = 'pending'
              AND r.priority BETWEEN walks[walk * 3 + 1] AND walks[walk * 3 + 2]
              AND r.id > walks[walk * 3 + 3]
              AND r.run_after <= now()
              AND r.task_type = ANY (p_task_types)
              AND r.required_capabilities <@ p_capabilities
              AND r.attempts < r.max_attempts
            ORDER BY r.priority DESC, r.id
            LIMIT p_limit - claimed
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
                  -- the statistics say. NULL when there are none, which spares
                  -- the worker decoding an empty object per task.
                  (SELECT jsonb_object_agg(d.depends_on::text, p.result)
                   FROM omnispindle.task_dependencies d,
                        LATERAL (SELECT q.result FROM omnispindle.tasks q
                                 WHERE q.id = d.depends_on AND q.state = 'succeeded' OFFSET 0) p
                   WHERE d.task_id = t.id),
                  -- Only children that allow failed dependencies ever see these.
                  (SELECT jsonb_object_agg(d.depends_on::text, p.failure)
                   FROM omnispindle.task_dependencies d,
                        LATERAL (SELECT jsonb_build_object('state', q.state, 'error', q.errors -> -1,
                                                           'cancel_reason', q.cancel_reason) AS failure
                                 FROM omnispindle.tasks q
                                 WHERE q.id = d.depends_on AND q.state IN ('failed', 'cancelled')
                                 OFFSET 0) p
                   WHERE d.task_id = t.id),
                  t.trace_context, t.priority;
        GET DIAGNOSTICS found_now = ROW_COUNT;
        claimed := claimed + found_now;
        EXIT WHEN claimed >= p_limit;
    END LOOP;
END
$$;

-- A worker's step in one statement and one commit: store the results of the
-- attempts that returned, then claim up to p_limit more (from the worker's
-- claim cursor, if it passes one: see claim_tasks). Rows with completed
-- true are the stored results (id only); the others are claims. Children the
-- completions made ready can be claimed by the same call. A step that only
-- claims commits without waiting for the WAL flush: a claim lost in a crash
-- leaves its task pending, as if the worker had died right after claiming,
-- and it never delays the start of a task. Completions stay durable.
CREATE FUNCTION omnispindle.complete_and_claim(p_ids bigint[], p_tokens uuid[], p_results jsonb[],
                                               p_task_types text[], p_capabilities text[],
                                               p_limit integer, p_worker_id uuid,
                                               p_lease_seconds double precision,
                                               p_after_priority integer, p_after_id bigint)
RETURNS TABLE (id bigint, task_type text, parameters jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, lease_token uuid,
               dependency_results jsonb, dependency_failures jsonb, trace_context jsonb,
               priority integer, completed boolean)
LANGUAGE plpgsql
AS $$
BEGIN
    IF cardinality(p_ids) = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    ELSE
        RETURN QUERY
            SELECT c.id, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
                   NULL::double precision, NULL::uuid, NULL::jsonb, NULL::jsonb, NULL::jsonb,
                   NULL::integer, true
            FROM omnispindle.complete_attempts(p_ids, p_tokens, p_results) c;
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY
            SELECT c.*, false
            FROM omnispindle.claim_tasks(p_task_types, p_capabilities, p_limit, p_worker_id,
                                         p_lease_seconds, p_after_priority, p_after_id) c;
    END IF;
END
$$;

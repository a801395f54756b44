-- Undo 0010_scheduling.

-- submit_tasks and insert_tasks as 0007 made them, without group keys, with
-- the rights granted on them.
CREATE TEMPORARY TABLE submit_tasks_grantees AS
SELECT DISTINCT a.grantee::regrole AS grantee
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.oid = 'omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
                  double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[],
                  jsonb[], text[])'::regprocedure
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;

DROP FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
    text[]);
DROP FUNCTION omnispindle.insert_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
    bigint[], text[]);

-- The insert behind submit_tasks (which validates first); parallel arrays as
-- there. existing[i], when not NULL, is the unfinished task holding entry i's
-- idempotency key: that entry is not inserted, its id is that task's, and
-- entries depending on it depend on that task. Returns the ids in order.
CREATE FUNCTION omnispindle.insert_tasks(
    p_task_types text[],
    p_parameters jsonb[],
    p_priorities integer[],
    p_max_attempts integer[],
    p_retry_backoffs double precision[],
    p_timeouts double precision[],
    p_required_capabilities jsonb[],
    p_dependencies jsonb[],
    p_entry_dependencies jsonb[],
    p_allow_failed boolean[],
    p_run_after timestamptz[],
    p_idempotency_keys text[],
    p_trace_contexts jsonb[],
    p_existing bigint[]
)
RETURNS bigint[]
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH spec AS (
        SELECT s.*, p_existing[s.ord] AS existing_id,
               -- The position among the entries that are inserted.
               CASE WHEN p_existing[s.ord] IS NULL
                    THEN count(*) FILTER (WHERE p_existing[s.ord] IS NULL) OVER (ORDER BY s.ord)
               END AS fresh_ord,
               (SELECT count(DISTINCT t.id)::integer
                FROM jsonb_array_elements_text(s.deps) AS d(value)
                JOIN omnispindle.tasks t ON t.id = d.value::bigint
                WHERE t.state <> 'succeeded'
                  AND NOT (s.tolerant AND t.state IN ('failed', 'cancelled'))
               ) + (SELECT count(*)::integer
                    FROM jsonb_array_elements_text(s.entry_deps) AS e(value)
                    -- A reused entry's task may also be listed by id: count it once.
                    WHERE p_existing[e.value::integer] IS NULL
                       OR NOT s.deps @> to_jsonb(p_existing[e.value::integer])
               ) AS unfinished
        -- unnest pads shorter arrays with NULLs: the optional ones may be NULL.
        FROM unnest(p_task_types, p_parameters, p_priorities, p_max_attempts,
                    p_retry_backoffs, p_timeouts, p_required_capabilities, p_dependencies,
                    p_entry_dependencies, p_allow_failed, p_run_after, p_idempotency_keys,
                    p_trace_contexts)
             WITH ORDINALITY AS s(task_type, parameters, priority, max_attempts,
                                  retry_backoff, timeout_seconds, caps, deps, entry_deps,
                                  tolerant, run_after, idempotency_key, trace_context, ord)
    ), inserted AS (
        -- Identities are drawn in this ORDER BY, so the n-th smallest new id
        -- belongs to the n-th inserted entry.
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, allow_failed_dependencies,
                                       state, pending_dependencies, run_after,
                                       idempotency_key, trace_context)
        SELECT task_type, parameters, priority, max_attempts, retry_backoff,
               timeout_seconds,
               ARRAY(SELECT jsonb_array_elements_text(caps)),
               tolerant,
               CASE WHEN unfinished > 0 THEN 'blocked' ELSE 'pending' END::omnispindle.task_state,
               unfinished, coalesce(run_after, now()), idempotency_key, trace_context
        FROM spec WHERE existing_id IS NULL ORDER BY ord
        RETURNING id
    ), numbered AS (
        SELECT id, row_number() OVER (ORDER BY id) AS fresh_ord FROM inserted
    ), resolved AS (
        SELECT s.ord, coalesce(s.existing_id, n.id) AS id, s.existing_id IS NULL AS is_new,
               s.deps, s.entry_deps
        FROM spec s LEFT JOIN numbered n ON n.fresh_ord = s.fresh_ord
    ), edges AS (
        INSERT INTO omnispindle.task_dependencies (task_id, depends_on)
        SELECT r.id, d.value::bigint
        FROM resolved r, jsonb_array_elements_text(r.deps) AS d(value)
        WHERE r.is_new
        UNION
        SELECT r.id, parent.id
        FROM resolved r, jsonb_array_elements_text(r.entry_deps) AS e(value)
        JOIN resolved parent ON parent.ord = e.value::bigint
        WHERE r.is_new
    )
    SELECT array_agg(r.id ORDER BY r.ord) INTO ids FROM resolved r;
    RETURN ids;
END
$$;

-- Inserts a batch of tasks in one statement, all or nothing. Arrays are
-- parallel, one element per task: dependencies[i] is a jsonb array of existing
-- task ids, entry_dependencies[i] a jsonb array of 1-based positions of other
-- entries of this batch (the caller has checked them for cycles). run_after,
-- idempotency_keys and trace_contexts may be NULL, or hold NULLs. An entry
-- whose idempotency key belongs to an unfinished task yields that task.
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
    p_allow_failed boolean[],
    p_run_after timestamptz[],
    p_idempotency_keys text[],
    p_trace_contexts jsonb[]
)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    wanted bigint[];
    missing bigint;
    broken record;
    existing bigint[];
    ids bigint[];
    repeated text;
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

    -- Two entries with one key would collide with each other.
    SELECT k INTO repeated FROM unnest(p_idempotency_keys) AS k
    WHERE k IS NOT NULL GROUP BY k HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'idempotency key % is used twice in one batch', repeated
            USING ERRCODE = 'OS005';
    END IF;

    IF NOT EXISTS (SELECT 1 FROM unnest(p_idempotency_keys) AS k WHERE k IS NOT NULL) THEN
        RETURN QUERY SELECT i FROM unnest(omnispindle.insert_tasks(
            p_task_types, p_parameters, p_priorities, p_max_attempts, p_retry_backoffs,
            p_timeouts, p_required_capabilities, p_dependencies, p_entry_dependencies,
            p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, NULL)) AS i;
        RETURN;
    END IF;

    -- Submitters of one key meet at the unique index on unfinished tasks' keys:
    -- an insert waits there for the transaction that inserted the key first
    -- (only a role that may submit can make it wait, and for at most the
    -- function's lock_timeout), then fails if that one committed; this one
    -- then looks again and reuses that task. Batches that take shared keys in
    -- different orders may deadlock instead: the one chosen looks again too.
    FOR look IN 1..5 LOOP
        -- The unfinished tasks holding the batch's keys, by position. Under a
        -- REPEATABLE READ or SERIALIZABLE snapshot taken before such a task
        -- committed, it stays invisible here and the insert fails with a
        -- unique violation, which the caller answers by retrying its transaction.
        SELECT array_agg((SELECT t.id FROM omnispindle.tasks t
                          WHERE t.idempotency_key = k.key
                            AND t.state IN ('blocked', 'pending', 'running'))
                         ORDER BY k.ord)
        INTO existing
        FROM unnest(p_idempotency_keys) WITH ORDINALITY AS k(key, ord);
        BEGIN
            ids := omnispindle.insert_tasks(
                p_task_types, p_parameters, p_priorities, p_max_attempts, p_retry_backoffs,
                p_timeouts, p_required_capabilities, p_dependencies, p_entry_dependencies,
                p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, existing);
            RETURN QUERY SELECT i FROM unnest(ids) AS i;
            RETURN;
        EXCEPTION WHEN unique_violation OR deadlock_detected THEN
            -- Under a snapshot fixed for the transaction, looking again sees nothing new.
            IF look = 5 OR current_setting('transaction_isolation') <> 'read committed' THEN
                RAISE;
            END IF;
        END;
        -- Submitters that lost a race look again one at a time, so that two of
        -- them cannot keep deadlocking on keys they take in opposite orders.
        PERFORM 1 FROM omnispindle.maintenance_locks WHERE name = 'idempotency' FOR UPDATE;
    END LOOP;
END
$$;

-- Cancels one task: a blocked or pending one at once (its descendants follow
-- through the trigger); a running one gets a request that its worker sees
-- through a notification or its next heartbeat; a finished one is left as it
-- is. Returns the state after the call and whether anything changed.


ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[])
    SET lock_timeout = '10s';
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[])
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION
    omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
        double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[]),
    omnispindle.insert_tasks(text[], jsonb[], integer[], integer[], double precision[],
        double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
        bigint[])
    FROM PUBLIC;
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT g.grantee FROM submit_tasks_grantees g LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.submit_tasks(text[], jsonb[], '
                       'integer[], integer[], double precision[], double precision[], jsonb[], '
                       'jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[]) TO %s',
                       grantee);
    END LOOP;
END
$$;
DROP TABLE submit_tasks_grantees;

-- The limits' summary reads group_key.
DROP VIEW omnispindle.task_type_limit_summary;
DROP INDEX omnispindle.tasks_group_ready_idx;
ALTER TABLE omnispindle.tasks DROP COLUMN group_key;

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
DROP FUNCTION omnispindle.left_to_a_narrower_worker(text, text[], timestamptz, text[], uuid);
DROP FUNCTION omnispindle.group_tokens_at(jsonb, text, double precision, double precision,
                                           timestamptz);
DROP VIEW omnispindle.worker_demand;
DROP FUNCTION omnispindle.clear_task_type_limit(text);
DROP FUNCTION omnispindle.set_task_type_limit(text, integer, double precision, integer, integer,
                                               double precision);
DROP FUNCTION omnispindle.set_task_type_strategy(text, text, double precision);
DROP TABLE omnispindle.maintenance_leases;
DROP TABLE omnispindle.task_type_strategies;
DROP INDEX omnispindle.tasks_running_type_idx;
DROP TABLE omnispindle.task_type_limits;

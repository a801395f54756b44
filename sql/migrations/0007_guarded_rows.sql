-- Migration 0007_guarded_rows: frozen once released. Rows that plain SQL
-- could write and no worker could serve: a parent deleted from under a
-- dependent that still waits for it, numbers the API refuses (NaN, Infinity),
-- a waiting task with no attempt left, a lease that outlives any worker, values
-- beyond the size ceilings. Lock waits that any role could prolong, bounded.
-- And least privilege: views for what read-only commands read, producers
-- writing through SECURITY DEFINER functions, and grant_access() for the
-- observer, producer and worker roles.

-- Deleting the edge to a dependent that still waits or runs would leave it
-- blocked for ever, or let it run without that parent's result: refused,
-- whether the parent is deleted (its cascade lands here) or the edge itself.
-- A dependent deleted by the same statement is gone when the cascade runs, so
-- deleting a whole workflow, or finished tasks, still works.
CREATE FUNCTION omnispindle.guard_dependency_delete()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM omnispindle.tasks c
               WHERE c.id = OLD.task_id AND c.state IN ('blocked', 'pending', 'running')) THEN
        RAISE EXCEPTION '%', format('task %s depends on task %s and has not finished: '
                                    'the dependency cannot be deleted', OLD.task_id, OLD.depends_on)
            USING ERRCODE = 'OS007',
                  HINT = format('cancel task %s first (SELECT omnispindle.cancel_task(%s)), '
                                'or delete it in the same statement', OLD.task_id, OLD.task_id);
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER task_dependencies_guard_delete
    BEFORE DELETE ON omnispindle.task_dependencies
    FOR EACH ROW EXECUTE FUNCTION omnispindle.guard_dependency_delete();

-- Numbers as the API takes them. NOT VALID: rows written before are left as
-- they are; every row written from now on is checked.
ALTER TABLE omnispindle.tasks
    -- 1e9 s (about 31 years) at most: far beyond, deadlines overflow a
    -- timestamp in the sweeper.
    ADD CONSTRAINT tasks_timeout_bounded CHECK (timeout_seconds <= 1e9) NOT VALID,
    ADD CONSTRAINT tasks_retry_backoff_bounded CHECK (retry_backoff <= 3600) NOT VALID,
    ADD CONSTRAINT tasks_cancel_reason_bounded CHECK (length(cancel_reason) <= 1000) NOT VALID,
    -- A task that waits to run has an attempt left to run it with.
    ADD CONSTRAINT tasks_waiting_has_attempt_left
        CHECK (state NOT IN ('blocked', 'pending') OR attempts < max_attempts) NOT VALID;

-- A lease is renewed by heartbeats, so none needs to reach more than a day
-- ahead; a longer one would keep a dead worker's task from the sweeper. The
-- WHEN clause runs in the executor: claims and heartbeats call no PL/pgSQL.
CREATE FUNCTION omnispindle.refuse_long_lease()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '%', format('task %s: a lease may reach at most a day ahead, not until %s',
                                NEW.id, NEW.lease_expires_at)
        USING ERRCODE = 'OS005';
END
$$;

CREATE TRIGGER tasks_lease_bounded
    BEFORE INSERT OR UPDATE OF lease_expires_at ON omnispindle.tasks
    FOR EACH ROW
    WHEN (NEW.lease_expires_at > now() + interval '1 day')
    EXECUTE FUNCTION omnispindle.refuse_long_lease();

-- A claim is bounded in bytes of parameters as well as in tasks.
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

-- Idempotency keys are no longer advisory locks, which any role that can
-- connect could hold: submitters of one key meet at the unique index instead.
CREATE OR REPLACE FUNCTION omnispindle.submit_tasks(
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

-- A submitter waits for another's idempotency key for at most ten seconds,
-- then fails (lock_not_available) instead of hanging.
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[])
    SET lock_timeout = '10s';

-- Ceilings on size, for every writer: a process may set its own limits lower
-- or up to these (omnispindle.set_limits), never beyond. Sizes are those of
-- the stored values; the datum header makes reading one cheap.
ALTER TABLE omnispindle.tasks
    ADD CONSTRAINT tasks_parameters_size CHECK (pg_column_size(parameters) <= 67108864) NOT VALID,
    ADD CONSTRAINT tasks_result_size CHECK (pg_column_size(result) <= 67108864) NOT VALID,
    ADD CONSTRAINT tasks_required_capabilities_size
        CHECK (cardinality(required_capabilities) <= 1000
               AND octet_length(array_to_string(required_capabilities, '')) <= 800000) NOT VALID;
ALTER TABLE omnispindle.task_stream
    ADD CONSTRAINT task_stream_payload_size CHECK (pg_column_size(payload) <= 16777216) NOT VALID,
    ADD CONSTRAINT task_stream_length CHECK (seq <= 100000) NOT VALID;

-- What read-only commands read, as views: a role that may only look needs
-- SELECT on the views and nothing on the tables.
CREATE VIEW omnispindle.task_details AS
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

-- Failed and cancelled in the last minute, by task type (task_metrics splits
-- off only the succeeded ones).
CREATE VIEW omnispindle.outcomes_last_minute AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM omnispindle.tasks
WHERE finished_at > now() - interval '1 minute'
GROUP BY task_type;

-- Producers reach the tables only through these functions, which run with
-- the owner's rights: they need neither UPDATE (for the lock on parents) nor
-- INSERT on the dependency table. Their search path is pinned, as every
-- SECURITY DEFINER function's must be.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'omnispindle'::regnamespace
                AND p.proname IN ('submit_tasks', 'enqueue', 'cancel_task', 'retry_tasks',
                                  'retry_task')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp',
                       fn);
    END LOOP;
END
$$;

-- Locks that only roles with rights on the schema can take: one row per
-- maintenance job that must run alone, locked FOR UPDATE for a transaction.
CREATE TABLE omnispindle.maintenance_locks (
    name text PRIMARY KEY
);
INSERT INTO omnispindle.maintenance_locks (name) VALUES ('prune'), ('idempotency');

-- What each submit call of a client inserted, under a key the client drew: a
-- call whose reply was lost (a killed connection, a restart) reads here what
-- it committed instead of submitting twice. A call inserting in several
-- statements records one part per statement. Kept for an hour (the sweeper
-- deletes older ones).
CREATE TABLE omnispindle.submissions (
    key        uuid NOT NULL,
    part       integer NOT NULL,
    task_ids   bigint[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, part)
);
CREATE INDEX submissions_created_at_idx ON omnispindle.submissions (created_at);

-- Grants p_role what one kind of access needs, and nothing more:
--   observer: SELECT on the views (status, tasks, metrics);
--   producer: submit, wait, stream, cancel, retry and schedule;
--   worker:   claim, complete, heartbeat, stream, sweep, prune and schedule,
--             with UPDATE only on the columns a run changes (never the
--             parameters, type or priority of a task).
-- Run it as the schema's owner. Create the roles first (CREATE ROLE ... LOGIN).
CREATE FUNCTION omnispindle.grant_access(p_role regrole, p_access text)
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
                   'omnispindle.outcomes_last_minute TO %s', p_role);
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
    EXECUTE format('GRANT DELETE ON omnispindle.submissions TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.periodic_ticks TO %s', p_role);
END
$$;

-- Functions are executable by PUBLIC unless revoked; only granted roles (and
-- the owner) may call these.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA omnispindle FROM PUBLIC;

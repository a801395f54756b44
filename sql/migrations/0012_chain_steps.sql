-- Migration 0012_chain_steps: a chain's link costs Postgres less. The
-- completions' functions and the update trigger keep generic plans for the
-- connection's life (the plan cache made custom ones at every call, their
-- arrays' sizes being known), and a worker's step that claims after storing
-- its results announces only the children it made ready and left pending, so
-- that the next link of a chain, which the step claims itself, wakes nobody.
-- And a batch linked only within itself (a fan-out, a chain) goes in as one
-- document with its edges, through insert_linked_tasks. The rules on columns
-- that claims, completions and unblocking never write leave the CHECK
-- constraints, which every UPDATE statement prepared, for triggers that only
-- a statement writing one of those columns prepares.

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
        -- A child that changed since counted read it (cancelled, or waiting
        -- again for a retried parent, by a transaction committed while this
        -- one waited for its row) is read again by the update: one finished
        -- meanwhile is left alone, and the others count down from what they
        -- hold then. (As the state of an unfinished task, not as blocked: the
        -- plan then stays on the primary key rather than on the partial index
        -- of blocked tasks.)
        UPDATE omnispindle.tasks t
        SET pending_dependencies = t.pending_dependencies - c.done,
            state = CASE WHEN t.pending_dependencies = c.done
                         THEN 'pending' ELSE 'blocked' END::omnispindle.task_state,
            run_after = greatest(t.run_after, now())
        FROM counted c
        WHERE t.id = c.task_id AND c.done > 0
          AND t.state NOT IN ('succeeded', 'failed', 'cancelled');
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

-- A batch linked only within itself goes in as one document with its edges.
-- Producers call it with the owner's rights (they may insert neither edges
-- nor a blocked task), like submit_tasks.
CREATE FUNCTION omnispindle.insert_linked_tasks(p_rows jsonb, p_trace_context jsonb,
                                                p_default_priority integer,
                                                p_default_max_attempts integer,
                                                p_default_retry_backoff double precision,
                                                p_submission uuid, p_part integer)
RETURNS TABLE (first_id bigint, last_id bigint)
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    bad record;
BEGIN
    SELECT r.ord - 1 AS entry, a.position INTO bad
    FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS r(entry, ord)
    CROSS JOIN LATERAL jsonb_array_elements(
        -- Anything but a list (or null) is refused whole, as a string.
        CASE coalesce(jsonb_typeof(r.entry -> 'after'), 'null')
            WHEN 'array' THEN r.entry -> 'after'
            WHEN 'null' THEN '[]'
            ELSE jsonb_build_array((r.entry -> 'after')::text) END
    ) AS a(position)
    WHERE jsonb_typeof(a.position) IS DISTINCT FROM 'number'
       OR a.position::text !~ '^[0-9]{1,9}$'
       OR a.position::text::integer >= jsonb_array_length(p_rows)
       OR a.position::text::integer = r.ord - 1
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%', format('entry %s names %s as a parent: give the 0-based position '
                                    'of another entry of the batch', bad.entry, bad.position)
            USING ERRCODE = 'OS005';
    END IF;
    RETURN QUERY
    WITH entries AS (
        SELECT r.*, (SELECT count(DISTINCT a.position)
                     FROM jsonb_array_elements_text(r.after) AS a(position)) AS parents
        FROM ROWS FROM (
            jsonb_to_recordset(p_rows) AS (
                task_type text, parameters jsonb, priority integer, max_attempts integer,
                retry_backoff double precision, timeout_seconds double precision,
                required_capabilities text[], run_after timestamptz, group_key text,
                after jsonb, allow_failed boolean)
        ) WITH ORDINALITY AS r(task_type, parameters, priority, max_attempts, retry_backoff,
                               timeout_seconds, required_capabilities, run_after, group_key,
                               after, allow_failed, ord)
    ), inserted AS (
        -- Identities are drawn in this ORDER BY, so the n-th smallest new id
        -- belongs to the n-th entry.
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds, required_capabilities,
                                       state, pending_dependencies, allow_failed_dependencies,
                                       run_after, trace_context, group_key)
        SELECT e.task_type, coalesce(e.parameters, '{}'),
               coalesce(e.priority, p_default_priority),
               coalesce(e.max_attempts, p_default_max_attempts),
               coalesce(e.retry_backoff, p_default_retry_backoff),
               e.timeout_seconds, coalesce(e.required_capabilities, '{}'),
               CASE WHEN e.parents > 0 THEN 'blocked' ELSE 'pending' END::omnispindle.task_state,
               e.parents, coalesce(e.allow_failed, false), coalesce(e.run_after, now()),
               p_trace_context, e.group_key
        FROM entries e
        ORDER BY e.ord
        RETURNING omnispindle.tasks.id
    ), positioned AS (
        SELECT i.id, row_number() OVER (ORDER BY i.id) - 1 AS position FROM inserted i
    ), edges AS (
        INSERT INTO omnispindle.task_dependencies (task_id, depends_on)
        SELECT DISTINCT child.id, parent.id
        FROM entries e
        JOIN positioned child ON child.position = e.ord - 1
        CROSS JOIN jsonb_array_elements_text(e.after) AS a(position)
        JOIN positioned parent ON parent.position = a.position::bigint
        WHERE e.parents > 0
    ), recorded AS (
        INSERT INTO omnispindle.submissions (key, part, task_ids)
        SELECT p_submission, p_part, array_agg(i.id ORDER BY i.id)
        FROM inserted i
        HAVING p_submission IS NOT NULL
    )
    SELECT min(n.id), max(n.id)
    FROM (SELECT i.id, i.id - row_number() OVER (ORDER BY i.id) AS run FROM inserted i) AS n
    GROUP BY n.run
    ORDER BY 1;
END
$$;

ALTER FUNCTION omnispindle.insert_linked_tasks(jsonb, jsonb, integer, integer, double precision,
                                               uuid, integer)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION omnispindle.insert_linked_tasks(jsonb, jsonb, integer, integer,
                                                           double precision, uuid, integer)
    FROM PUBLIC;

-- grant_access() as 0011 made it, with insert_linked_tasks for producers.
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
                    WHEN 'producer' THEN ARRAY['submit_tasks', 'insert_linked_tasks',
                                               'enqueue', 'cancel_task',
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

-- Roles that could submit before this migration may insert linked batches too.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_proc p, aclexplode(p.proacl) a
                   WHERE p.pronamespace = 'omnispindle'::regnamespace
                     AND p.proname = 'submit_tasks'
                     AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.insert_linked_tasks(jsonb, jsonb, '
                       'integer, integer, double precision, uuid, integer) TO %s', grantee);
    END LOOP;
END
$$;

ALTER TABLE omnispindle.tasks
    DROP CONSTRAINT tasks_task_type_valid,
    DROP CONSTRAINT tasks_priority_range,
    DROP CONSTRAINT tasks_max_attempts_range,
    DROP CONSTRAINT tasks_retry_backoff_range,
    DROP CONSTRAINT tasks_retry_backoff_bounded,
    DROP CONSTRAINT tasks_timeout_positive,
    DROP CONSTRAINT tasks_timeout_bounded,
    DROP CONSTRAINT tasks_idempotency_key_valid,
    DROP CONSTRAINT tasks_group_key_valid,
    DROP CONSTRAINT tasks_parameters_size,
    DROP CONSTRAINT tasks_required_capabilities_size,
    DROP CONSTRAINT tasks_result_size,
    DROP CONSTRAINT tasks_errors_is_array,
    DROP CONSTRAINT tasks_cancel_reason_bounded;

-- As in sql/schema.sql.
-- The rules on what a task asks for and on what its attempts leave, each
-- checked when its column is written: on insert, and by an update that sets
-- the column. As CHECK constraints they were prepared again by every UPDATE
-- statement on tasks, also by the claims, completions and unblocking that
-- never write these columns (with the other checks, a third of a chain
-- link's time in Postgres). A trigger with a column list is prepared only by
-- a statement that sets one of its columns, and its WHEN clause runs in the
-- executor: a row that keeps every rule calls no PL/pgSQL. A row that breaks
-- one is refused as a CHECK constraint would refuse it (check_violation,
-- named by the rule). Rows written before a rule was added stay as they are
-- until their column is written again.
CREATE FUNCTION omnispindle.refuse_broken_rule()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    broken text;
BEGIN
    -- The first rule the row breaks; a rule that comes out NULL holds, as in
    -- a CHECK constraint. Each rule as in its trigger's WHEN clause.
    SELECT r.name INTO broken
    FROM (VALUES
        (1, 'tasks_task_type_valid', NEW.task_type <> '' AND length(NEW.task_type) <= 200),
        (2, 'tasks_priority_range', NEW.priority BETWEEN -1000 AND 1000),
        (3, 'tasks_max_attempts_range', NEW.max_attempts BETWEEN 1 AND 101),
        (4, 'tasks_retry_backoff_range', NEW.retry_backoff >= 0),
        (5, 'tasks_retry_backoff_bounded', NEW.retry_backoff <= 3600),
        (6, 'tasks_timeout_positive', NEW.timeout_seconds > 0),
        -- 1e9 s (about 31 years) at most: far beyond, deadlines overflow a
        -- timestamp in the sweeper.
        (7, 'tasks_timeout_bounded', NEW.timeout_seconds <= 1e9),
        (8, 'tasks_idempotency_key_valid',
         NEW.idempotency_key <> '' AND length(NEW.idempotency_key) <= 200),
        (9, 'tasks_group_key_valid', NEW.group_key <> '' AND length(NEW.group_key) <= 200),
        -- Sizes are those of the values as written; the datum header makes
        -- reading one cheap.
        (10, 'tasks_parameters_size', pg_column_size(NEW.parameters) <= 67108864),
        (11, 'tasks_required_capabilities_size',
         cardinality(NEW.required_capabilities) <= 1000
         AND octet_length(array_to_string(NEW.required_capabilities, '')) <= 800000),
        (12, 'tasks_result_size', pg_column_size(NEW.result) <= 67108864),
        (13, 'tasks_errors_is_array', jsonb_typeof(NEW.errors) = 'array'),
        (14, 'tasks_cancel_reason_bounded', length(NEW.cancel_reason) <= 1000)
    ) AS r(n, name, holds)
    WHERE NOT r.holds
    ORDER BY r.n
    LIMIT 1;
    broken := coalesce(broken, TG_NAME);
    RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', TG_TABLE_NAME, broken
        USING ERRCODE = 'check_violation', CONSTRAINT = broken, TABLE = TG_TABLE_NAME,
              SCHEMA = TG_TABLE_SCHEMA;
END
$$;

-- What a submitter sets.
CREATE TRIGGER tasks_check_request
    BEFORE INSERT OR UPDATE OF task_type, priority, max_attempts, retry_backoff, timeout_seconds,
                               idempotency_key, group_key, parameters, required_capabilities
    ON omnispindle.tasks
    FOR EACH ROW
    WHEN (NOT (NEW.task_type <> '' AND length(NEW.task_type) <= 200
               AND NEW.priority BETWEEN -1000 AND 1000
               AND NEW.max_attempts BETWEEN 1 AND 101
               AND NEW.retry_backoff >= 0 AND NEW.retry_backoff <= 3600
               AND NEW.timeout_seconds > 0 AND NEW.timeout_seconds <= 1e9
               AND NEW.idempotency_key <> '' AND length(NEW.idempotency_key) <= 200
               AND NEW.group_key <> '' AND length(NEW.group_key) <= 200
               AND pg_column_size(NEW.parameters) <= 67108864
               AND cardinality(NEW.required_capabilities) <= 1000
               AND octet_length(array_to_string(NEW.required_capabilities, '')) <= 800000))
    EXECUTE FUNCTION omnispindle.refuse_broken_rule();

-- What attempts leave: a result, errors, a reason for a cancel.
CREATE TRIGGER tasks_check_outcome
    BEFORE INSERT OR UPDATE OF result, errors, cancel_reason ON omnispindle.tasks
    FOR EACH ROW
    WHEN (NOT (pg_column_size(NEW.result) <= 67108864
               AND jsonb_typeof(NEW.errors) = 'array'
               AND length(NEW.cancel_reason) <= 1000))
    EXECUTE FUNCTION omnispindle.refuse_broken_rule();

REVOKE EXECUTE ON FUNCTION omnispindle.refuse_broken_rule() FROM PUBLIC;

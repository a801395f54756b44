-- Migration 0005_lean_updates: frozen once released. Claims and completions
-- cost Postgres less per task: the state rule is the check trigger's WHEN
-- clause (no PL/pgSQL call per row), the statement trigger returns at once
-- after a claim, completions and failures keep their plans for the
-- connection's life, a claim looks up failed dependencies only for the
-- tasks that can see them, and a worker's step returns only the results it
-- could not store instead of every stored one. A claim from a cursor no
-- longer falls back to a walk from the head when it comes up short: that walk
-- is the worker's to schedule. Prune batches lock their tasks through a
-- function that keeps the ordered index walk and can start at a cursor.

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
-- cursor's, then the cursor's priority past its id, then lower priorities: it
-- never walks back over the cursor's own priority. Tasks that became ready
-- behind the cursor (a retry, a delayed task come due, a submission that
-- committed late) wait for a claim from the head, which the worker makes
-- every 50 ms at most, and less often when a walk from the head is slow (see
-- omnispindle/claim_cursor.py).
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
    -- Walks of the index, in order: (lowest priority, highest priority, after id).
    -- -1000 and 1000 bound priorities (tasks_priority_range).
    walks integer[] := CASE WHEN p_after_id IS NULL THEN ARRAY[-1000, 1000, 0]
                            ELSE ARRAY[p_after_priority + 1, 1000, 0,
                                       p_after_priority, p_after_priority, p_after_id,
                                       -1000, p_after_priority - 1, 0] END;
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
        EXIT WHEN claimed >= p_limit;
    END LOOP;
END
$$;

-- Ends one attempt of each given task with an error: back to pending after a
-- backoff while attempts are left, else failed; cancelled when a cancel was
-- requested. Only rows whose lease token still matches change (fencing).
-- Shared by workers and lease recovery. PL/pgSQL with sequential scans off,
-- as complete_attempts.
CREATE OR REPLACE FUNCTION omnispindle.fail_attempts(ids bigint[], tokens uuid[], failures jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state, retry_in double precision)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
              CASE WHEN a.will_retry THEN extract(epoch FROM a.delay)::double precision END;
END
$$;

-- Ends attempts that returned: succeeded with their result, or cancelled
-- when a cancel was requested meanwhile. Fencing: a row changes only while
-- the caller still holds its lease, so a worker whose lease was taken over
-- gets no row back and its result is dropped. PL/pgSQL keeps the plan for the
-- connection's life (an SQL function that updates is planned at every call);
-- sequential scans are off so that a plan made while the table was small
-- still looks tasks up by key once it is large.
CREATE OR REPLACE FUNCTION omnispindle.complete_attempts(ids bigint[], tokens uuid[], results jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
    RETURNING t.id, t.state;
END
$$;

-- Refuses a state transition; the trigger below calls it only for illegal ones.
CREATE OR REPLACE FUNCTION omnispindle.check_transition()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'illegal task state transition % -> % for task %',
        OLD.state, NEW.state, OLD.id
        USING ERRCODE = 'OS002';
END
$$;

DROP TRIGGER tasks_check_transition ON omnispindle.tasks;
-- The legal state transitions; anything else is refused, also from plain SQL.
-- The rule is the WHEN clause, which the executor evaluates itself: a legal
-- update (every claim and completion) calls no PL/pgSQL for its rows.
CREATE TRIGGER tasks_check_transition
    BEFORE UPDATE OF state ON omnispindle.tasks
    FOR EACH ROW
    WHEN (NOT (NEW.state = OLD.state
               OR (OLD.state = 'blocked' AND NEW.state IN ('pending', 'cancelled'))
               OR (OLD.state = 'pending' AND NEW.state IN ('running', 'cancelled'))
               OR (OLD.state = 'running'
                   AND NEW.state IN ('pending', 'succeeded', 'failed', 'cancelled'))
               -- A failed task may be retried by hand, given an attempt to run.
               OR (OLD.state = 'failed' AND NEW.state = 'pending'
                   AND NEW.attempts < NEW.max_attempts)))
    EXECUTE FUNCTION omnispindle.check_transition();

-- Runs once per UPDATE statement over all changed rows: unblocks the children
-- of tasks that succeeded, cancels the descendants of tasks that failed or
-- were cancelled, and wakes workers and waiting clients.
-- JIT is off here, as in insert_tasks and submit_tasks: statements over
-- thousands of rows look costly to the planner, and compiling them would take
-- longer than running them.
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

DROP FUNCTION omnispindle.complete_and_claim(bigint[], uuid[], jsonb[], text[], text[], integer, uuid,
                                              double precision, integer, bigint);
-- A worker's step in one statement and one commit: store the results of the
-- attempts that returned, then claim up to p_limit more (from the worker's
-- claim cursor, if it passes one: see claim_tasks). Rows with dropped true
-- name results not stored because their lease was lost (id only); the others
-- are claims. Stored results return nothing, so a usual step returns claims
-- alone. Children the completions made ready can be claimed by the same call.
-- A step that only claims commits without waiting for the WAL flush: a claim
-- lost in a crash leaves its task pending, as if the worker had died right
-- after claiming, and it never delays the start of a task. Completions stay
-- durable.
CREATE FUNCTION omnispindle.complete_and_claim(p_ids bigint[], p_tokens uuid[], p_results jsonb[],
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

-- The oldest finished tasks past the horizon (keep_seconds), locked, at most
-- p_limit, from p_after on (a prune cursor; NULL for the oldest). A function
-- so that its plan is the walk of tasks_finished_idx in order, stopping after
-- the limit, whatever the planner guesses: two bounds on finished_at made the
-- generic plan of a plain statement expect one row, and sort every task past
-- the horizon instead. The dependents check is a per-row subplan (OFFSET 0
-- keeps it from becoming a join over every dependency): index lookups only.
-- SKIP LOCKED passes over rows another transaction holds, such as a parent
-- that a submitter is adding a dependent to (it holds KEY SHARE until it
-- commits).
CREATE FUNCTION omnispindle.lock_prunable_tasks(p_keep_seconds double precision,
                                                p_limit integer, p_after timestamptz)
RETURNS TABLE (id bigint, finished_at timestamptz)
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT t.id, t.finished_at
    FROM omnispindle.tasks t
    WHERE t.finished_at < now() - make_interval(secs => p_keep_seconds)
      AND t.finished_at >= coalesce(p_after, '-infinity')
      AND NOT EXISTS (
          SELECT 1
          FROM omnispindle.task_dependencies d
          WHERE d.depends_on = t.id
            AND (SELECT c.state IN ('blocked', 'pending', 'running')
                        OR (c.state = 'failed'
                            AND c.finished_at >= now() - make_interval(secs => p_keep_seconds))
                 FROM omnispindle.tasks c WHERE c.id = d.task_id)
          OFFSET 0)
    ORDER BY t.finished_at
    LIMIT p_limit
    FOR UPDATE OF t SKIP LOCKED;
END
$$;

-- Undo 0012_chain_steps: custom plans again, every ready notice at once, no
-- hand-over, and set_task_type_limit, fail_attempts, enqueue_periodic_ticks,
-- submit_tasks, revive_dependents, retry_tasks and lock_prunable_tasks as
-- 0010, 0005, 0002, 0010, 0006, 0006 and 0005 made them, without
-- dependents_reading; a partial result's notification and a finished one name
-- no task again, and dependents_of is 0006's. A required capability may be
-- NULL, empty or over 200 characters again, a run_after outside the years 1
-- to 9999 in UTC is stored again, a retry waiting out its backoff is not
-- announced, a claim gathers a task's parents' results whatever their size,
-- an error saying "retry": false is retried while attempts are left, and the
-- view unclaimable_tasks and its index are gone. task_metrics measures a wait
-- from any start again, as 0011 made it. A type's rates may be any number
-- above 0 again, and grant_access to a NULL role is a syntax error again.
-- enqueue is 0006's, which leaves a NULL task_type to not_null_violation and
-- a delay past timestamptz's range to timestamp out of range.
-- A retry of a task with 101 attempts breaks tasks_max_attempts_range again.
-- cover_history is 0011's, which trusts history_partitions as it is.
-- A live worker's row may be deleted again.

DROP TRIGGER workers_live_kept ON omnispindle.workers;
DROP FUNCTION omnispindle.refuse_live_worker_delete();

DROP VIEW omnispindle.unclaimable_tasks;
DROP INDEX omnispindle.tasks_needs_ready_idx;

-- As 0010 made it.
CREATE OR REPLACE VIEW omnispindle.task_type_limit_summary AS
SELECT l.task_type, l.max_running, r.running, l.starts_per_second, l.burst,
       b.tokens, q.ready,
       CASE WHEN r.running >= l.max_running OR b.tokens < 1 THEN q.ready
            ELSE coalesce(g.held_back, 0) END AS held_back,
       l.max_running_per_group, l.starts_per_second_per_group
FROM omnispindle.task_type_limits l
CROSS JOIN LATERAL (SELECT count(*) AS running FROM omnispindle.tasks t
                    WHERE t.state = 'running' AND t.task_type = l.task_type) r
CROSS JOIN LATERAL (SELECT count(*) AS ready FROM omnispindle.tasks t
                    WHERE t.state = 'pending' AND t.task_type = l.task_type
                      AND t.run_after <= now()) q
CROSS JOIN LATERAL (SELECT least(l.burst, l.tokens + l.starts_per_second
                                 * extract(epoch FROM clock_timestamp() - l.refilled_at))
                           AS tokens) b
CROSS JOIN LATERAL (SELECT sum(p.ready) AS held_back
                    FROM (SELECT t.group_key, count(*) AS ready FROM omnispindle.tasks t
                          WHERE l.max_running_per_group IS NOT NULL
                            AND t.state = 'pending' AND t.task_type = l.task_type
                            AND t.run_after <= now()
                          GROUP BY t.group_key) p
                    JOIN (SELECT t.group_key, count(*) AS running FROM omnispindle.tasks t
                          WHERE l.max_running_per_group IS NOT NULL
                            AND t.state = 'running' AND t.task_type = l.task_type
                          GROUP BY t.group_key) u
                      ON u.group_key IS NOT DISTINCT FROM p.group_key
                    WHERE u.running >= l.max_running_per_group) g;
DROP FUNCTION omnispindle.promote_due_tasks(text[], integer);
DROP INDEX omnispindle.tasks_due_later_idx;
DROP INDEX omnispindle.tasks_group_ready_idx;
CREATE INDEX tasks_group_ready_idx ON omnispindle.tasks (task_type, group_key, priority DESC, id)
    WHERE state = 'pending';
ALTER TABLE omnispindle.tasks DROP COLUMN due_later;
ALTER TABLE omnispindle.task_history DROP COLUMN due_later;

-- As 0005 made it (which also resets plan_cache_mode).
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

DROP FUNCTION omnispindle.first_ready_task(text[], text[], uuid, bigint[]);
DROP FUNCTION omnispindle.walks_one_type(text[]);
DROP FUNCTION omnispindle.walked_by_type(text[], text[]);
DROP FUNCTION omnispindle.ungrouped_type(text);
DROP FUNCTION omnispindle.left_to_a_narrower_worker(text, text[], timestamptz, jsonb);
DROP FUNCTION omnispindle.free_narrower_workers(text[], text[], uuid);

-- left_to_a_narrower_worker() as 0010 made it, for the roles that may claim.
-- Whether a ready task that needs capabilities is better left, for now, to
-- another live worker with fewer capabilities that runs its type, has them
-- all, and has a free slot: the narrowest match. A worker that can do common
-- work then takes that, instead of the work only a specialist can do while the
-- specialist stands idle. Only for a task's first 5 seconds of being ready:
-- past them any worker that can run it takes it, so a specialist that stalls
-- while it still heartbeats holds nothing back for long. claim_tasks asks
-- only about tasks that need capabilities.
CREATE FUNCTION omnispindle.left_to_a_narrower_worker(p_task_type text, p_required text[],
                                                      p_ready_since timestamptz,
                                                      p_capabilities text[], p_worker_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT p_ready_since > now() - interval '5 seconds'
       AND EXISTS (SELECT FROM omnispindle.workers w
                   WHERE w.state = 'active' AND w.id <> p_worker_id
                     AND cardinality(w.capabilities) < cardinality(p_capabilities)
                     AND p_required <@ w.capabilities
                     AND p_task_type = ANY (w.task_types)
                     AND w.last_heartbeat_at
                         > now() - make_interval(secs => coalesce(w.lease_timeout_seconds, 30))
                     AND (SELECT count(*) FROM omnispindle.tasks x
                          WHERE x.state = 'running' AND x.worker_id = w.id) < w.concurrency)
$$;

REVOKE EXECUTE ON FUNCTION
    omnispindle.left_to_a_narrower_worker(text, text[], timestamptz, text[], uuid) FROM PUBLIC;
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_proc p, aclexplode(p.proacl) a
                   WHERE p.pronamespace = 'omnispindle'::regnamespace
                     AND p.proname = 'claim_tasks'
                     AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.left_to_a_narrower_worker(text, '
                       'text[], timestamptz, text[], uuid) TO %s', grantee);
    END LOOP;
END
$$;

-- claim_tasks() as 0010 made it.
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
-- An aging pass sorts its few candidates: with sorting priced out, JIT would
-- compile that plan at every claim.
SET jit = off
-- Planned once per session: planning the passes afresh at every claim cost more
-- than running them (a claim of 3 ready tasks took 1.4 ms, 1.0 ms with generic
-- plans; of a fair type, 3.5 ms and 1.6 ms). The planner's choices here are
-- index scans whatever the values, as the settings above make them.
SET plan_cache_mode = force_generic_plan
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
    sizes bigint[];  -- each candidate's parameters, in bytes
    keys text[];  -- each candidate's group_key
    per_group integer;  -- the type's running limit per group, if any
    group_rate double precision;  -- the type's rate per group, if any
    group_burst double precision;  -- each group's bucket, full
    -- Walks of the index, in order: (lowest priority, highest priority, after id).
    -- -1000 and 1000 bound priorities (tasks_priority_range).
    walks integer[] := CASE WHEN p_after_id IS NULL THEN ARRAY[-1000, 1000, 0]
                            ELSE ARRAY[p_after_priority + 1, 1000, 0,
                                       p_after_priority, p_after_priority, p_after_id,
                                       -1000, p_after_priority - 1, 0] END;
    -- This worker's task types that have limits or a strategy. They are
    -- claimed first, one pass each (unless paused), up to what their limits
    -- allow and in their strategy's order; the walks then skip them. A limit
    -- both caps a type and keeps its share of the slots: a flood of other work
    -- cannot keep it waiting. One plain read: no sort, no check of the paused
    -- types, which only a type found here needs (each read costs every claim).
    set_apart text[] := ARRAY(SELECT l.task_type FROM omnispindle.task_type_limits l
                              WHERE l.task_type = ANY (p_task_types)
                              UNION ALL
                              SELECT g.task_type FROM omnispindle.task_type_strategies g
                              WHERE g.task_type = ANY (p_task_types));
    pass integer;
    walk integer;
    bucket record;  -- the type's task_type_limits row, if it has limits
    aging double precision;  -- the type's aging_seconds, if it ages
    type_strategy text;  -- the type's strategy, if it has one
    -- The lock_timeout to restore after waiting for a limited type's row.
    lock_wait text := current_setting('lock_timeout');
    limited boolean;  -- whether the type has a limits row
    room integer;
    n_tokens double precision;
    refilled timestamptz;
BEGIN
    FOR pass IN 1 .. cardinality(set_apart) + cardinality(walks) / 3 LOOP
        IF pass <= cardinality(set_apart) THEN
            -- A type with both limits and a strategy comes twice: once is enough.
            CONTINUE WHEN set_apart[pass] = ANY (set_apart[1:pass - 1])
                OR EXISTS (SELECT FROM omnispindle.paused_task_types p
                           WHERE p.task_type = set_apart[pass]);
            -- A first look at the limits, without their lock: a type out of
            -- tokens is passed over before its candidates are sought. Not found:
            -- a type with a strategy and no limits (every field of bucket is NULL).
            SELECT * INTO bucket FROM omnispindle.task_type_limits l
            WHERE l.task_type = set_apart[pass];
            limited := FOUND;
            per_group := coalesce(bucket.max_running_per_group, 2147483647);
            group_rate := bucket.starts_per_second_per_group;
            group_burst := greatest(1, ceil(group_rate));
            CONTINUE WHEN least(bucket.burst, bucket.tokens + bucket.starts_per_second
                                * extract(epoch FROM clock_timestamp() - bucket.refilled_at)) < 1;
            IF bucket.max_running IS NOT NULL THEN
                -- Nor is a type at its running limit (counted again under the lock).
                CONTINUE WHEN bucket.max_running
                    <= (SELECT count(*) FROM omnispindle.tasks r
                        WHERE r.state = 'running' AND r.task_type = set_apart[pass]);
            END IF;
            SELECT g.strategy, g.aging_seconds INTO type_strategy, aging
            FROM omnispindle.task_type_strategies g
            WHERE g.task_type = set_apart[pass];
            room := p_limit - claimed;
            -- The candidates, in the strategy's order and locked as found, come
            -- before the limits' lock (below), which is held until commit: only
            -- the counting and the update wait for other claims of the type.
            -- The price: while a limit binds, a claim that gets the lock first
            -- may start its own candidates before better ones that another
            -- claim holds and cannot start; those stay first for the next.
            IF type_strategy IS NULL
               AND (SELECT r.group_key FROM omnispindle.tasks r
                    WHERE r.state = 'pending' AND r.task_type = set_apart[pass]
                      AND r.group_key IS NOT NULL
                    -- In the index's order, so that the plan is a probe of
                    -- tasks_group_ready_idx: as an EXISTS, a generic plan made
                    -- while the statistics saw group keys walked the ready
                    -- index over every pending task.
                    ORDER BY r.task_type, r.group_key LIMIT 1) IS NULL THEN
                -- Strict order, when no pending task of the type has a
                -- group_key (the usual case): tasks_group_ready_idx holds the
                -- type's tasks apart from the others' and, within the tasks
                -- without a group_key, in that order. The ready index, in
                -- priority order across types, had each claim step over every
                -- ready task of other types ahead of the type's (2,000 rows
                -- read for a claim of 3 behind a backlog of 2,000).
                WITH ready AS (
                    SELECT r.id, pg_column_size(r.parameters) AS size, r.group_key
                    FROM omnispindle.tasks r
                    WHERE r.state = 'pending'
                      AND r.task_type = set_apart[pass]
                      AND r.group_key IS NULL
                      AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               p_capabilities, p_worker_id))
                      AND r.attempts < r.max_attempts
                    ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                    LIMIT room
                    FOR NO KEY UPDATE SKIP LOCKED
                ), summed AS (
                    SELECT id, size, group_key, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
                    FROM ready
                )
                SELECT array_agg(id), array_agg(size), array_agg(group_key), sum(size)
                INTO chosen, sizes, keys, taken
                FROM summed WHERE upto - size < budget;
            ELSIF type_strategy IS NULL THEN
                -- Strict order across the type's groups: the ready index's.
                WITH ready AS (
                    SELECT r.id, pg_column_size(r.parameters) AS size, r.group_key
                    FROM omnispindle.tasks r
                    WHERE r.state = 'pending'
                      AND r.task_type = set_apart[pass]
                      AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               p_capabilities, p_worker_id))
                      AND r.attempts < r.max_attempts
                    ORDER BY r.priority DESC, r.id
                    LIMIT room
                    FOR NO KEY UPDATE SKIP LOCKED
                ), summed AS (
                    SELECT id, size, group_key, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
                    FROM ready
                )
                SELECT array_agg(id), array_agg(size), array_agg(group_key), sum(size)
                INTO chosen, sizes, keys, taken
                FROM summed WHERE upto - size < budget;
            ELSIF type_strategy = 'fair' THEN
                -- Fair share: the group with the fewest running tasks of the type
                -- goes first, so that a group's flood cannot starve the others;
                -- ties go to a group drawn at random, so that over many claims
                -- each group's share of starts is equal. A group is a group_key,
                -- and the tasks without one are one group more. Within a group,
                -- strict priority then age. Only the first `room` groups in that
                -- order can take part, each up to the water level: the running
                -- count every group reaches when `room` starts go to the lowest
                -- first. Candidates are locked as found, so that concurrent
                -- claims take the next ones; those not taken are free again at
                -- commit. (Taking `room` of each group locked a row per group
                -- and slot.)
                WITH RECURSIVE keys AS (
                    -- The groups with pending tasks, one index probe each, and
                    -- whether the last task of each (in the group's order) is
                    -- one this worker may start now. Each probe reads the
                    -- group's range from its end: its first entries are mostly
                    -- those of tasks just claimed, which every probe from the
                    -- start walks over until vacuum removes them (16 buffers a
                    -- probe in a drain, against 3 from the end).
                    (SELECT r.group_key,
                            r.run_after <= now()
                            AND r.required_capabilities <@ p_capabilities
                            AND (r.required_capabilities = '{}'
                                 OR NOT omnispindle.left_to_a_narrower_worker(
                                     r.task_type, r.required_capabilities, r.run_after,
                                     p_capabilities, p_worker_id))
                            AND r.attempts < r.max_attempts AS last_ready
                     FROM omnispindle.tasks r
                     WHERE r.state = 'pending' AND r.task_type = set_apart[pass]
                       AND r.group_key IS NOT NULL
                     ORDER BY r.group_key DESC, r.priority, r.id DESC LIMIT 1)
                    UNION ALL
                    SELECT n.group_key, n.last_ready FROM keys k
                    CROSS JOIN LATERAL (SELECT r.group_key,
                                               r.run_after <= now()
                                               AND r.required_capabilities <@ p_capabilities
                                               AND (r.required_capabilities = '{}'
                                                    OR NOT omnispindle.left_to_a_narrower_worker(
                                                        r.task_type, r.required_capabilities, r.run_after,
                                                        p_capabilities, p_worker_id))
                                               AND r.attempts < r.max_attempts AS last_ready
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key < k.group_key
                                        ORDER BY r.group_key DESC, r.priority, r.id DESC
                                        LIMIT 1) n
                ), groups AS (
                    -- Those with a task this worker may start now: a group whose
                    -- tasks are all delayed or need other capabilities would
                    -- take a turn and come back with nothing. Most groups' last
                    -- task is one; the others take a probe each.
                    -- (As an EXISTS, the planner read every pending task of the
                    -- type once per claim instead.) Each probe below reads its
                    -- group's range of tasks_group_ready_idx in the index's
                    -- order: with an equality on group_key, which leaves any
                    -- order of it free, a plan made while the table was small
                    -- walked tasks_ready_idx over every pending task instead
                    -- (30,000 index entries for a claim of 32 under one group's
                    -- flood).
                    SELECT k.group_key FROM keys k WHERE k.last_ready
                    UNION ALL
                    SELECT k.group_key FROM keys k
                    CROSS JOIN LATERAL (SELECT FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key BETWEEN k.group_key AND k.group_key
                                          AND r.run_after <= now()
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   p_capabilities, p_worker_id))
                                          AND r.attempts < r.max_attempts
                                        ORDER BY r.group_key, r.priority DESC, r.id
                                        LIMIT 1) e
                    WHERE NOT k.last_ready
                    UNION ALL
                    SELECT NULL FROM (SELECT FROM omnispindle.tasks r
                                      WHERE r.state = 'pending'
                                        AND r.task_type = set_apart[pass]
                                        AND r.group_key IS NULL
                                        AND r.run_after <= now()
                                        AND r.required_capabilities <@ p_capabilities
                                        AND (r.required_capabilities = '{}'
                                             OR NOT omnispindle.left_to_a_narrower_worker(
                                                 r.task_type, r.required_capabilities, r.run_after,
                                                 p_capabilities, p_worker_id))
                                        AND r.attempts < r.max_attempts
                                      ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                                      LIMIT 1) e
                ), running AS (
                    SELECT r.group_key, count(*) AS n FROM omnispindle.tasks r
                    WHERE r.state = 'running' AND r.task_type = set_apart[pass]
                    GROUP BY r.group_key
                ), turns AS (
                    SELECT g.group_key, coalesce(u.n, 0) AS n_running, random() AS draw
                    FROM groups g
                    LEFT JOIN running u ON u.group_key IS NOT DISTINCT FROM g.group_key
                    WHERE coalesce(u.n, 0) < per_group
                      -- A group out of tokens takes no turn.
                      AND (group_rate IS NULL
                           OR omnispindle.group_tokens_at(bucket.group_tokens,
                                                          coalesce(g.group_key, ''), group_rate,
                                                          group_burst, clock_timestamp()) >= 1)
                    ORDER BY 2, 3 LIMIT room
                ), level AS (
                    -- Filling the j lowest groups to a common level takes
                    -- (room + their running) / j; the lowest such level is the one.
                    SELECT min((room + f.below)::double precision / f.j) AS height
                    FROM (SELECT row_number() OVER w AS j, sum(t.n_running) OVER w AS below
                          FROM turns t
                          WINDOW w AS (ORDER BY t.n_running, t.draw ROWS UNBOUNDED PRECEDING)) f
                ), keyed AS (
                    SELECT c.id, c.priority, c.size, t.group_key, t.n_running, t.draw
                    FROM turns t CROSS JOIN level v
                    CROSS JOIN LATERAL (SELECT r.id, r.priority,
                                               pg_column_size(r.parameters) AS size
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key BETWEEN t.group_key AND t.group_key
                                          AND r.run_after <= now()
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   p_capabilities, p_worker_id))
                                          AND r.attempts < r.max_attempts
                                        ORDER BY r.group_key, r.priority DESC, r.id
                                        LIMIT greatest(0, least(ceil(v.height)::integer, per_group)
                                                          - t.n_running)
                                        FOR NO KEY UPDATE SKIP LOCKED) c
                ), unkeyed AS (
                    SELECT r.id, r.priority, pg_column_size(r.parameters) AS size
                    FROM omnispindle.tasks r
                    WHERE EXISTS (SELECT FROM turns t WHERE t.group_key IS NULL)
                      AND r.state = 'pending' AND r.task_type = set_apart[pass]
                      AND r.group_key IS NULL AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               p_capabilities, p_worker_id))
                      AND r.attempts < r.max_attempts
                    -- In the index's order: by priority alone, the planner
                    -- walked tasks_ready_idx over every type's pending tasks.
                    ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                    LIMIT (SELECT greatest(0, least(ceil(v.height)::integer, per_group)
                                              - t.n_running)
                           FROM turns t, level v WHERE t.group_key IS NULL)
                    FOR NO KEY UPDATE SKIP LOCKED
                ), firsts AS (
                    SELECT k.id, k.priority, k.size, k.group_key, k.n_running, k.draw FROM keyed k
                    UNION ALL
                    SELECT u.id, u.priority, u.size, NULL, t.n_running, t.draw
                    FROM unkeyed u JOIN turns t ON t.group_key IS NULL
                ), spare AS (
                    -- A group with fewer ready tasks than its share leaves slots
                    -- over: the keyed groups fill them, each offering the next
                    -- few of its own (only when it happens).
                    SELECT c.id, c.priority, c.size, t.group_key, t.n_running, t.draw
                    FROM turns t
                    CROSS JOIN LATERAL (SELECT r.id, r.priority,
                                               pg_column_size(r.parameters) AS size
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key BETWEEN t.group_key AND t.group_key
                                          AND r.run_after <= now()
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   p_capabilities, p_worker_id))
                                          AND r.attempts < r.max_attempts
                                          AND r.id <> ALL (ARRAY(SELECT f.id FROM firsts f))
                                        ORDER BY r.group_key, r.priority DESC, r.id
                                        LIMIT room - (SELECT count(*) FROM firsts)
                                        FOR NO KEY UPDATE SKIP LOCKED) c
                    WHERE (SELECT count(*) FROM firsts) < room
                ), candidates AS (
                    SELECT * FROM firsts
                    UNION ALL
                    SELECT * FROM spare
                ), ranked AS (
                    -- A task's rank: how many of its group would run once it starts.
                    SELECT c.id, c.size, c.group_key, c.draw, c.n_running + row_number()
                               OVER (PARTITION BY c.group_key ORDER BY c.priority DESC, c.id)
                               AS share
                    FROM candidates c
                ), ready AS (
                    SELECT k.id, k.size, k.group_key FROM ranked k WHERE k.share <= per_group
                    ORDER BY k.share, k.draw, k.id LIMIT room
                ), summed AS (
                    SELECT id, size, group_key, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
                    FROM ready
                )
                SELECT array_agg(id), array_agg(size), array_agg(group_key), sum(size)
                INTO chosen, sizes, keys, taken
                FROM summed WHERE upto - size < budget;
            ELSE
                -- Aging: a task's effective priority is its priority plus one for
                -- every aging seconds it has been ready. Within a priority the
                -- oldest comes first, so the best candidates are the first few of
                -- each priority in use: found by a skip over the priorities (one
                -- index probe each), then ordered by effective priority.
                WITH RECURSIVE levels AS (
                    (SELECT r.priority FROM omnispindle.tasks r
                     WHERE r.state = 'pending' AND r.task_type = set_apart[pass]
                       AND r.run_after <= now()
                     ORDER BY r.priority DESC, r.id LIMIT 1)
                    UNION ALL
                    SELECT n.priority FROM levels l
                    CROSS JOIN LATERAL (SELECT r.priority FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.run_after <= now() AND r.priority < l.priority
                                        ORDER BY r.priority DESC, r.id LIMIT 1) n
                ), candidates AS (
                    SELECT c.id, c.priority + floor(extract(epoch FROM now() - c.run_after)
                                                    / aging) AS effective
                    FROM levels l
                    CROSS JOIN LATERAL (SELECT r.id, r.priority, r.run_after
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending'
                                          AND r.task_type = set_apart[pass]
                                          AND r.run_after <= now() AND r.priority = l.priority
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   p_capabilities, p_worker_id))
                                          AND r.attempts < r.max_attempts
                                        ORDER BY r.priority DESC, r.id LIMIT room
                                        -- Locked as found, so that concurrent claims
                                        -- take the next ones; those not taken are
                                        -- free again at commit.
                                        FOR NO KEY UPDATE SKIP LOCKED) c
                ), ready AS (
                    -- The best, by primary key in their order.
                    SELECT r.id, pg_column_size(r.parameters) AS size, r.group_key
                    FROM (SELECT c.id FROM candidates c
                          ORDER BY c.effective DESC, c.id LIMIT room) k
                    CROSS JOIN LATERAL (SELECT q.id, q.parameters, q.group_key
                                        FROM omnispindle.tasks q
                                        WHERE q.id = k.id OFFSET 0) r
                ), summed AS (
                    SELECT id, size, group_key, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
                    FROM ready
                )
                SELECT array_agg(id), array_agg(size), array_agg(group_key), sum(size)
                INTO chosen, sizes, keys, taken
                FROM summed WHERE upto - size < budget;
            END IF;
            CONTINUE WHEN chosen IS NULL;
            IF limited THEN
                -- One claim at a time takes from a limited type: its row's lock
                -- makes counting and claiming one step for every worker. The
                -- lock is held until commit; a claim that finds the row locked
                -- waits for it up to 20 ms (other claims hold it for a moment),
                -- then leaves the type to the one holding it: a transaction
                -- left open on the row (a limit set and not committed) slows
                -- claims of the type, never stops them. Skipping at once left a
                -- worker with nothing to claim whenever another held the row:
                -- two workers drained a limited type at a third of the rate of
                -- one without limits; trying again every 2 ms left each wait
                -- longer than the hold it waited for. The row is locked and
                -- updated in one subtransaction (the one that catches the
                -- timeout): a row locked by a subtransaction and updated by its
                -- parent would need a MultiXact at every claim.
                BEGIN
                    PERFORM set_config('lock_timeout', '20ms', true);
                    SELECT * INTO bucket FROM omnispindle.task_type_limits l
                    WHERE l.task_type = set_apart[pass]
                    FOR NO KEY UPDATE;
                    -- Not found: limits cleared since the first look (every
                    -- field of bucket NULL).
                    limited := FOUND;
                    PERFORM set_config('lock_timeout', lock_wait, true);
                    refilled := clock_timestamp();
                    -- The limits as locked, which may have changed since the first look.
                    per_group := coalesce(bucket.max_running_per_group, 2147483647);
                    group_rate := bucket.starts_per_second_per_group;
                    group_burst := greatest(1, ceil(group_rate));
                    IF bucket.starts_per_second IS NOT NULL THEN
                        n_tokens := least(bucket.burst, bucket.tokens + bucket.starts_per_second
                                          * extract(epoch FROM refilled - bucket.refilled_at));
                        room := least(room, floor(n_tokens)::integer);
                    END IF;
                    IF room <= 0 THEN
                        chosen := NULL;
                    ELSE
                        -- The first candidates, in the strategy's order, that
                        -- the limits let start, in one statement: the type's
                        -- running tasks, counted once per group with a fresh
                        -- snapshot taken after the lock (it sees every claim of
                        -- the type that held the lock before), cap the type and
                        -- each group; each group's bucket caps the group. The
                        -- tasks without a group_key are one group, as in fair
                        -- share. The rest are free again at commit.
                        WITH running AS (
                            SELECT r.group_key, count(*) AS n FROM omnispindle.tasks r
                            WHERE (bucket.max_running IS NOT NULL
                                   OR bucket.max_running_per_group IS NOT NULL)
                              AND r.state = 'running' AND r.task_type = set_apart[pass]
                            GROUP BY r.group_key
                        ), offered AS (
                            SELECT c.*, row_number() OVER (PARTITION BY c.group_key
                                                           ORDER BY c.n) AS nth
                            FROM unnest(chosen, sizes, keys)
                                 WITH ORDINALITY c(id, size, group_key, n)
                        )
                        SELECT array_agg(k.id ORDER BY k.n), array_agg(k.group_key ORDER BY k.n),
                               sum(k.size)
                        INTO chosen, keys, taken
                        FROM (SELECT c.id, c.n, c.group_key, c.size
                              FROM offered c
                              LEFT JOIN running u ON u.group_key IS NOT DISTINCT FROM c.group_key
                              WHERE coalesce(u.n, 0) + c.nth <= per_group
                                AND (group_rate IS NULL
                                     OR c.nth <= omnispindle.group_tokens_at(
                                                     bucket.group_tokens, coalesce(c.group_key, ''),
                                                     group_rate, group_burst, refilled))
                              ORDER BY c.n
                              -- LEAST ignores NULL: no running limit, no cap from it.
                              LIMIT greatest(0, least(room, bucket.max_running
                                                            - (SELECT coalesce(sum(u.n), 0)
                                                               FROM running u)))) k;
                    END IF;
                    IF chosen IS NOT NULL
                       AND (bucket.starts_per_second IS NOT NULL OR group_rate IS NOT NULL) THEN
                        -- The type's bucket and each group's after this claim's
                        -- starts (every chosen task is locked by this claim and
                        -- starts below), in one write. Full group buckets leave
                        -- the map (no entry means a full bucket).
                        UPDATE omnispindle.task_type_limits l
                        SET tokens = CASE WHEN bucket.starts_per_second IS NULL THEN l.tokens
                                          ELSE n_tokens - cardinality(chosen) END,
                            refilled_at = CASE WHEN bucket.starts_per_second IS NULL
                                               THEN l.refilled_at ELSE refilled END,
                            group_tokens = CASE WHEN group_rate IS NULL THEN l.group_tokens ELSE (
                                SELECT coalesce(jsonb_object_agg(b.key, jsonb_build_array(
                                                    b.tokens, extract(epoch FROM refilled))), '{}')
                                FROM (SELECT e.key,
                                             omnispindle.group_tokens_at(
                                                 bucket.group_tokens, e.key, group_rate,
                                                 group_burst, refilled)
                                                 - coalesce(u.n, 0) AS tokens
                                      FROM (SELECT jsonb_object_keys(bucket.group_tokens) AS key
                                            UNION
                                            SELECT coalesce(k, '') FROM unnest(keys) k) e
                                      LEFT JOIN (SELECT coalesce(k, '') AS key, count(*) AS n
                                                 FROM unnest(keys) k GROUP BY 1) u
                                        ON u.key = e.key) b
                                WHERE b.tokens < group_burst) END
                        WHERE l.task_type = set_apart[pass];
                    END IF;
                EXCEPTION WHEN lock_not_available THEN
                    chosen := NULL;  -- still locked by another claim
                END;
                CONTINUE WHEN chosen IS NULL;
            END IF;
        ELSE
            -- A worker whose every type is claimed apart has nothing to walk
            -- for: a walk would step over each of their ready tasks to find
            -- none (after a pass held back by a limit, at every claim).
            EXIT WHEN p_task_types <@ set_apart;
            walk := pass - cardinality(set_apart) - 1;
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
                  AND r.task_type <> ALL (set_apart)
                  AND r.required_capabilities <@ p_capabilities
                  AND (r.required_capabilities = '{}'
                       OR NOT omnispindle.left_to_a_narrower_worker(
                           r.task_type, r.required_capabilities, r.run_after,
                           p_capabilities, p_worker_id))
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
        END IF;
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

-- The transition rule as 0006 made it.
DROP TRIGGER tasks_check_transition ON omnispindle.tasks;
DROP FUNCTION omnispindle.legal_transition(omnispindle.task_state, omnispindle.task_state, integer,
                                           integer, integer, integer, text);
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
                   AND NEW.attempts < NEW.max_attempts)
               -- A task a failure cancelled waits again once that task is retried.
               OR (OLD.state = 'cancelled' AND NEW.state = 'blocked'
                   AND coalesce(OLD.cancel_reason LIKE 'dependency % failed', false))))
    EXECUTE FUNCTION omnispindle.check_transition();

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
DROP TRIGGER tasks_check_run_after ON omnispindle.tasks;
DROP FUNCTION omnispindle.refuse_broken_rule();
DROP FUNCTION omnispindle.broken_request_rule(text, integer, integer, double precision,
                                              double precision, text, text, integer, text[]);
DROP FUNCTION omnispindle.broken_outcome_rule(integer, text, text);
DROP FUNCTION omnispindle.check_run_after();
DROP FUNCTION omnispindle.run_after_rule(timestamptz);
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

-- The state rules as CHECK constraints again, as 0001 and 0007 made them.
DROP TRIGGER tasks_state_rules ON omnispindle.tasks;
DROP FUNCTION omnispindle.refuse_broken_state();
DROP FUNCTION omnispindle.broken_state_rule(omnispindle.task_state, integer, integer, integer,
                                            uuid, timestamptz, timestamptz, timestamptz, boolean,
                                            jsonb, timestamptz);
ALTER TABLE omnispindle.tasks
    ADD CONSTRAINT tasks_attempts_range CHECK (attempts >= 0 AND attempts <= max_attempts),
    ADD CONSTRAINT tasks_pending_dependencies_range CHECK (pending_dependencies >= 0),
    ADD CONSTRAINT tasks_blocked_has_dependencies
        CHECK ((state = 'blocked') = (pending_dependencies > 0)
               OR state IN ('succeeded', 'failed', 'cancelled')),
    ADD CONSTRAINT tasks_lease_matches_state
        CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
               AND (lease_token IS NULL) = (lease_expires_at IS NULL)),
    ADD CONSTRAINT tasks_running_has_start
        CHECK (state <> 'running' OR (started_at IS NOT NULL AND attempts > 0)),
    ADD CONSTRAINT tasks_finished_at_matches_state
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    ADD CONSTRAINT tasks_succeeded_has_result CHECK (state <> 'succeeded' OR result IS NOT NULL),
    ADD CONSTRAINT tasks_failed_has_error CHECK (state <> 'failed' OR jsonb_array_length(errors) > 0),
    ADD CONSTRAINT tasks_cancel_request_matches_state
        CHECK (cancel_requested_at IS NULL OR state IN ('running', 'cancelled')),
    ADD CONSTRAINT tasks_waiting_has_attempt_left
        CHECK (state NOT IN ('blocked', 'pending') OR attempts < max_attempts) NOT VALID;

-- A rate above 0, as 0010 made it.
ALTER TABLE omnispindle.task_type_limits
    DROP CONSTRAINT task_type_limits_rate_range,
    DROP CONSTRAINT task_type_limits_group_rate_range,
    ADD CONSTRAINT task_type_limits_rate_range
        CHECK (starts_per_second > 0 AND starts_per_second <= 1000000),
    ADD CONSTRAINT task_type_limits_group_rate_range
        CHECK (starts_per_second_per_group > 0 AND starts_per_second_per_group <= 1000000);

-- As in 0010_scheduling.
CREATE OR REPLACE FUNCTION omnispindle.set_task_type_limit(task_type text, max_running integer DEFAULT NULL,
                                                starts_per_second double precision DEFAULT NULL,
                                                burst integer DEFAULT NULL,
                                                max_running_per_group integer DEFAULT NULL,
                                                starts_per_second_per_group double precision
                                                    DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    full_bucket integer;
BEGIN
    IF set_task_type_limit.task_type IS NULL OR set_task_type_limit.task_type = ''
       OR length(set_task_type_limit.task_type) > 200 THEN
        RAISE EXCEPTION 'task_type must be a non-empty string of at most 200 characters'
            USING ERRCODE = 'OS005';
    END IF;
    IF set_task_type_limit.max_running IS NULL AND set_task_type_limit.starts_per_second IS NULL
       AND set_task_type_limit.max_running_per_group IS NULL
       AND set_task_type_limit.starts_per_second_per_group IS NULL THEN
        RAISE EXCEPTION 'give max_running, max_running_per_group, starts_per_second, '
                        'starts_per_second_per_group or several (clear_task_type_limit '
                        'removes a limit)' USING ERRCODE = 'OS005';
    END IF;
    IF NOT set_task_type_limit.max_running BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'max_running must be between 1 and 1000000 (pause_task_type holds '
                        'a type back entirely)' USING ERRCODE = 'OS005';
    END IF;
    -- NaN compares above every number, so this refuses it and infinity too.
    IF NOT (set_task_type_limit.starts_per_second > 0
            AND set_task_type_limit.starts_per_second <= 1000000) THEN
        RAISE EXCEPTION 'starts_per_second must be above 0 and at most 1000000'
            USING ERRCODE = 'OS005';
    END IF;
    IF set_task_type_limit.burst IS NOT NULL AND set_task_type_limit.starts_per_second IS NULL THEN
        RAISE EXCEPTION 'burst needs starts_per_second' USING ERRCODE = 'OS005';
    END IF;
    IF NOT set_task_type_limit.burst BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'burst must be between 1 and 1000000' USING ERRCODE = 'OS005';
    END IF;
    IF NOT set_task_type_limit.max_running_per_group BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'max_running_per_group must be between 1 and 1000000'
            USING ERRCODE = 'OS005';
    END IF;
    IF NOT (set_task_type_limit.starts_per_second_per_group > 0
            AND set_task_type_limit.starts_per_second_per_group <= 1000000) THEN
        RAISE EXCEPTION 'starts_per_second_per_group must be above 0 and at most 1000000'
            USING ERRCODE = 'OS005';
    END IF;
    IF set_task_type_limit.max_running_per_group IS NOT NULL
       OR set_task_type_limit.starts_per_second_per_group IS NOT NULL THEN
        -- Held until commit: a concurrent set_task_type_strategy, which locks
        -- the row before it looks at the limits, cannot leave fair meanwhile.
        PERFORM FROM omnispindle.task_type_strategies g
        WHERE g.task_type = set_task_type_limit.task_type AND g.strategy = 'fair'
        FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'a limit per group (max_running_per_group, '
                            'starts_per_second_per_group) needs the fair strategy: '
                            'set_task_type_strategy(task_type, ''fair'') first'
                USING ERRCODE = 'OS005';
        END IF;
    END IF;
    full_bucket := CASE WHEN set_task_type_limit.starts_per_second IS NOT NULL THEN
        coalesce(set_task_type_limit.burst,
                 greatest(1, ceil(set_task_type_limit.starts_per_second))::integer) END;
    INSERT INTO omnispindle.task_type_limits AS l
        (task_type, max_running, starts_per_second, burst, tokens, max_running_per_group,
         starts_per_second_per_group)
    VALUES (set_task_type_limit.task_type, set_task_type_limit.max_running,
            set_task_type_limit.starts_per_second, full_bucket, full_bucket,
            set_task_type_limit.max_running_per_group,
            set_task_type_limit.starts_per_second_per_group)
    ON CONFLICT ON CONSTRAINT task_type_limits_pkey DO UPDATE
    SET max_running = excluded.max_running,
        max_running_per_group = excluded.max_running_per_group,
        starts_per_second_per_group = excluded.starts_per_second_per_group,
        -- The groups' buckets keep their tokens, up to the new rate's burst.
        group_tokens = CASE WHEN excluded.starts_per_second_per_group IS NULL THEN '{}'
                            ELSE l.group_tokens END,
        starts_per_second = excluded.starts_per_second,
        burst = excluded.burst,
        -- No rate, no bucket (least() would ignore the NULL burst).
        tokens = CASE WHEN excluded.burst IS NOT NULL THEN
                     least(excluded.burst,
                           coalesce(l.tokens + l.starts_per_second
                                    * extract(epoch FROM clock_timestamp() - l.refilled_at),
                                    excluded.burst)) END,
        refilled_at = clock_timestamp(),
        set_at = now();
    -- 'limits' also tells workers to read the limits again, which pace their claims.
    PERFORM pg_notify('omnispindle_ready', 'limits');
END
$$;

-- As 0005 made it.
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

-- As 0002 made it.
CREATE OR REPLACE FUNCTION omnispindle.enqueue_periodic_ticks(p_names text[], p_ticks timestamptz[])
RETURNS TABLE (periodic_name text, tick_at timestamptz, task_id bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    tick record;
    new_id bigint;
BEGIN
    FOR tick IN
        INSERT INTO omnispindle.periodic_ticks AS k (periodic_name, tick_at)
        SELECT p.name, w.tick_at
        FROM unnest(p_names, p_ticks) AS w(name, tick_at)
        JOIN omnispindle.periodic_tasks p ON p.name = w.name AND p.enabled
        ORDER BY p.name, w.tick_at
        ON CONFLICT DO NOTHING
        RETURNING k.periodic_name, k.tick_at
    LOOP
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, state)
        SELECT p.task_type, p.parameters, p.priority, p.max_attempts, p.retry_backoff,
               p.timeout_seconds, p.required_capabilities, 'pending'
        FROM omnispindle.periodic_tasks p
        WHERE p.name = tick.periodic_name
        RETURNING id INTO new_id;
        UPDATE omnispindle.periodic_ticks k SET task_id = new_id
        WHERE k.periodic_name = tick.periodic_name AND k.tick_at = tick.tick_at;
        periodic_name := tick.periodic_name;
        tick_at := tick.tick_at;
        task_id := new_id;
        RETURN NEXT;
    END LOOP;
END
$$;

-- As 0010 made it.
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
    p_trace_contexts jsonb[],
    p_group_keys text[] DEFAULT NULL
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
            p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, NULL,
            p_group_keys)) AS i;
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
                p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, existing,
                p_group_keys);
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

-- What sql/schema.sql sets on it after creating it, which CREATE OR REPLACE resets.
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[], text[])
    SET lock_timeout = '10s';
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[], text[])
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- As 0006 made it.
CREATE OR REPLACE FUNCTION omnispindle.revive_dependents(p_ids bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
DECLARE
    causes text[];
    revived bigint[] := '{}';
    more bigint[];
BEGIN
    SELECT array_agg(format('dependency %s failed', i)) INTO causes FROM unnest(p_ids) AS i;
    LOOP
        SELECT array_agg(DISTINCT c.id) INTO more
        FROM omnispindle.task_dependencies d
        JOIN omnispindle.tasks c ON c.id = d.task_id
        WHERE d.depends_on = ANY (p_ids || revived)
          AND c.state = 'cancelled' AND c.cancel_reason = ANY (causes)
          AND NOT c.id = ANY (revived)
          AND NOT EXISTS (
              SELECT 1 FROM omnispindle.task_dependencies p
              JOIN omnispindle.tasks pt ON pt.id = p.depends_on
              WHERE p.task_id = c.id AND pt.state IN ('failed', 'cancelled')
                AND NOT pt.id = ANY (p_ids || revived));
        EXIT WHEN more IS NULL;
        revived := revived || more;
    END LOOP;

    UPDATE omnispindle.tasks t
    SET state = 'blocked', finished_at = NULL, cancel_reason = NULL, run_after = now(),
        pending_dependencies = (SELECT count(*) FROM omnispindle.task_dependencies p
                                JOIN omnispindle.tasks pt ON pt.id = p.depends_on
                                WHERE p.task_id = t.id AND pt.state <> 'succeeded')
    WHERE t.id = ANY (revived);
    RETURN revived;
END
$$;

-- As 0006 made it.
CREATE OR REPLACE FUNCTION omnispindle.retry_tasks(p_ids bigint[], p_with_dependents boolean DEFAULT false)
RETURNS TABLE (task_id bigint, state text, attempts integer, max_attempts integer,
               dependents bigint[])
LANGUAGE plpgsql
AS $$
DECLARE
    missing bigint;
    refused record;
    revived bigint[];
BEGIN
    PERFORM 1 FROM omnispindle.tasks t WHERE t.id = ANY (p_ids) ORDER BY t.id FOR NO KEY UPDATE;

    SELECT u.id INTO missing FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
    WHERE NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = u.id)
    ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'no task with id %', missing USING ERRCODE = 'OS004';
    END IF;

    -- The first task, in the order given, that is not failed or whose
    -- idempotency key another unfinished task (or an earlier one of these) holds.
    SELECT r.* INTO refused FROM (
        SELECT u.ord, t.id, t.state, t.idempotency_key AS key,
               coalesce(
                   (SELECT h.id FROM omnispindle.tasks h
                    WHERE h.idempotency_key = t.idempotency_key AND h.id <> t.id
                      AND h.state IN ('blocked', 'pending', 'running') LIMIT 1),
                   (SELECT e.id FROM unnest(p_ids) WITH ORDINALITY AS e(id, ord)
                    JOIN omnispindle.tasks et ON et.id = e.id
                    WHERE e.ord < u.ord AND e.id <> t.id
                      AND et.idempotency_key = t.idempotency_key
                    ORDER BY e.ord LIMIT 1)) AS holder
        FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
        JOIN omnispindle.tasks t ON t.id = u.id) AS r
    WHERE r.state <> 'failed' OR r.holder IS NOT NULL
    ORDER BY r.ord LIMIT 1;
    IF FOUND AND refused.state <> 'failed' THEN
        RAISE EXCEPTION 'task % is %; only failed tasks can be retried', refused.id, refused.state
            USING ERRCODE = 'OS006';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'task %''s idempotency key ''%'' is held by unfinished task %; '
                        'it cannot run twice at once', refused.id, refused.key, refused.holder
            USING ERRCODE = 'OS006';
    END IF;

    -- The state machine allows failed -> pending only with an attempt left.
    UPDATE omnispindle.tasks t
    SET state = 'pending', max_attempts = greatest(t.max_attempts, t.attempts + 1),
        finished_at = NULL, run_after = now()
    WHERE t.id = ANY (p_ids);

    revived := '{}';
    IF p_with_dependents THEN
        revived := omnispindle.revive_dependents(p_ids);
    END IF;

    RETURN QUERY
    SELECT t.id, t.state::text, t.attempts, t.max_attempts,
           coalesce((SELECT array_agg(d.id ORDER BY d.id)
                     FROM omnispindle.tasks d
                     WHERE d.id = ANY (revived)
                       AND d.id IN (SELECT x.task_id FROM omnispindle.dependents_of(t.id) x)),
                    '{}')
    FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
    JOIN omnispindle.tasks t ON t.id = u.id
    ORDER BY u.ord;
END
$$;

-- What 0007 set on it, which CREATE OR REPLACE resets.
ALTER FUNCTION omnispindle.retry_tasks(bigint[], boolean)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- As 0005 made it.
CREATE OR REPLACE FUNCTION omnispindle.lock_prunable_tasks(p_keep_seconds double precision,
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

DROP FUNCTION omnispindle.dependents_reading(bigint, double precision);

-- As 0001 made it: one notification per statement, naming no task.
CREATE OR REPLACE FUNCTION omnispindle.notify_streamed()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('omnispindle_stream', '');
    RETURN NULL;
END
$$;

DROP TRIGGER task_stream_notify ON omnispindle.task_stream;
CREATE TRIGGER task_stream_notify
    AFTER INSERT ON omnispindle.task_stream
    FOR EACH STATEMENT EXECUTE FUNCTION omnispindle.notify_streamed();

-- As 0006 made it.
CREATE OR REPLACE FUNCTION omnispindle.dependents_of(p_id bigint)
RETURNS TABLE (task_id bigint)
LANGUAGE sql
STABLE
AS $$
    WITH RECURSIVE below (id) AS (
        SELECT d.task_id FROM omnispindle.task_dependencies d WHERE d.depends_on = p_id
        UNION
        SELECT d.task_id FROM below b
        JOIN omnispindle.task_dependencies d ON d.depends_on = b.id
    )
    SELECT id FROM below;
$$;

-- As 0011 made it.
CREATE OR REPLACE VIEW omnispindle.task_metrics AS
WITH states AS (
    SELECT task_type,
           count(*) FILTER (WHERE state = 'blocked')   AS blocked,
           count(*) FILTER (WHERE state = 'pending')   AS pending,
           count(*) FILTER (WHERE state = 'running')   AS running,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed')    AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           extract(epoch FROM now() - min(run_after)
                   FILTER (WHERE state = 'pending' AND run_after <= now()))::double precision
               AS oldest_ready_seconds
    FROM omnispindle.tasks
    GROUP BY task_type
), finished AS (
    SELECT task_type, state, attempts, run_after, started_at, finished_at
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour'
    UNION ALL
    SELECT task_type, state, attempts, run_after, started_at, finished_at
    FROM omnispindle.task_history
    WHERE finished_at > now() - interval '1 hour'
), recent AS (
    SELECT task_type,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute'
                            AND state = 'succeeded') AS succeeded_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled_last_hour,
           count(*) FILTER (WHERE attempts > 1) AS retried_last_hour,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - run_after))
               FILTER (WHERE started_at IS NOT NULL) AS wait_quantiles,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM finished_at - started_at))
               FILTER (WHERE started_at IS NOT NULL AND state IN ('succeeded', 'failed'))
               AS run_quantiles
    FROM finished
    GROUP BY task_type
)
SELECT coalesce(s.task_type, r.task_type) AS task_type,
       coalesce(s.blocked, 0) AS blocked, coalesce(s.pending, 0) AS pending,
       coalesce(s.running, 0) AS running, coalesce(s.succeeded, 0) AS succeeded,
       coalesce(s.failed, 0) AS failed, coalesce(s.cancelled, 0) AS cancelled,
       coalesce(r.finished_last_minute, 0) AS finished_last_minute,
       coalesce(r.succeeded_last_minute, 0) AS succeeded_last_minute,
       coalesce(r.finished_last_hour, 0) AS finished_last_hour,
       coalesce(r.succeeded_last_hour, 0) AS succeeded_last_hour,
       coalesce(r.failed_last_hour, 0) AS failed_last_hour,
       coalesce(r.cancelled_last_hour, 0) AS cancelled_last_hour,
       coalesce(r.retried_last_hour, 0) AS retried_last_hour,
       r.failed_last_hour::double precision
           / nullif(r.succeeded_last_hour + r.failed_last_hour, 0) AS failure_rate_last_hour,
       r.retried_last_hour::double precision / nullif(r.finished_last_hour, 0)
           AS retry_rate_last_hour,
       r.wait_quantiles[1] AS wait_p50_seconds,
       r.wait_quantiles[2] AS wait_p95_seconds,
       r.wait_quantiles[3] AS wait_p99_seconds,
       r.run_quantiles[1] AS run_p50_seconds,
       r.run_quantiles[2] AS run_p95_seconds,
       r.run_quantiles[3] AS run_p99_seconds,
       s.oldest_ready_seconds
-- A type whose every task of the last hour is in the history has a row too.
FROM states s
FULL JOIN recent r ON r.task_type = s.task_type;

-- As 0006 made it.
CREATE OR REPLACE FUNCTION omnispindle.enqueue(
    task_type text,
    parameters jsonb DEFAULT '{}',
    priority integer DEFAULT 0,
    max_retries integer DEFAULT 3,
    timeout double precision DEFAULT NULL,
    dependencies bigint[] DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    retry_backoff double precision DEFAULT 1.0,
    required_capabilities text[] DEFAULT '{}',
    allow_failed_dependencies boolean DEFAULT false,
    idempotency_key text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    args jsonb := coalesce(enqueue.parameters, '{}');
    retries integer := coalesce(enqueue.max_retries, 3);
    new_id bigint;
BEGIN
    IF jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'parameters must be a JSON object, got %', jsonb_typeof(args)
            USING ERRCODE = 'OS005';
    END IF;
    IF retries NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'max_retries must be from 0 to 100, got %', retries
            USING ERRCODE = 'OS005';
    END IF;
    IF enqueue.run_at IS NOT NULL AND enqueue.delay IS NOT NULL THEN
        RAISE EXCEPTION 'give run_at or delay, not both' USING ERRCODE = 'OS005';
    END IF;
    SELECT s.id INTO new_id FROM omnispindle.submit_tasks(
        ARRAY[enqueue.task_type], ARRAY[args], ARRAY[coalesce(enqueue.priority, 0)],
        ARRAY[retries + 1], ARRAY[coalesce(enqueue.retry_backoff, 1.0)],
        ARRAY[enqueue.timeout],
        ARRAY[to_jsonb(coalesce(enqueue.required_capabilities, '{}'))],
        ARRAY[to_jsonb(coalesce(enqueue.dependencies, '{}'))], ARRAY['[]'::jsonb],
        ARRAY[coalesce(enqueue.allow_failed_dependencies, false)],
        ARRAY[coalesce(enqueue.run_at, now() + enqueue.delay)],
        ARRAY[enqueue.idempotency_key], ARRAY[NULL::jsonb]) AS s(id);
    RETURN new_id;
END
$$;

-- What sql/schema.sql sets on it after creating it, which CREATE OR REPLACE resets.
ALTER FUNCTION omnispindle.enqueue(text, jsonb, integer, integer, double precision, bigint[],
    timestamp with time zone, interval, double precision, text[], boolean, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Makes task_history's partitions reach from p_oldest (when not NULL, and
-- not further back than p_keep_seconds, the retention: drop_history would
-- drop such a partition at once) to one width past now(); returns how many it
-- made. A new partition is p_width_seconds wide and starts on a multiple of
-- the width (from 2000-01-01 UTC), except the two that fill a span in one:
-- the time since the newest partition ended (maintenance stopped for a while)
-- and the time before the oldest began. Creating a partition waits for
-- readers of task_history: the lock timeout keeps a long one from stalling
-- every reader queued behind.
CREATE OR REPLACE FUNCTION omnispindle.cover_history(p_oldest timestamptz, p_width_seconds double precision,
                                          p_keep_seconds double precision)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    origin CONSTANT timestamptz := '2000-01-01 00:00:00+00';
    width interval;
    now_bin timestamptz;
    lo timestamptz;
    hi timestamptz;
    made integer := 0;
BEGIN
    IF p_width_seconds IS NULL OR NOT p_width_seconds BETWEEN 1 AND 31622400 THEN
        RAISE EXCEPTION 'a history partition is 1 s to 366 days wide, not % s', p_width_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    width := make_interval(secs => p_width_seconds);
    now_bin := origin + make_interval(secs => floor(extract(epoch FROM now() - origin)
                                                    / p_width_seconds) * p_width_seconds);
    IF p_oldest IS NOT NULL AND p_keep_seconds IS NOT NULL THEN
        p_oldest := greatest(p_oldest, now() - make_interval(secs => p_keep_seconds));
    END IF;
    LOCK TABLE omnispindle.history_partitions IN EXCLUSIVE MODE;
    SELECT min(from_at), max(to_at) INTO lo, hi FROM omnispindle.history_partitions;
    IF hi IS NULL THEN
        lo := now_bin;
        hi := now_bin;
    ELSIF hi < now_bin THEN
        PERFORM omnispindle.add_history_partition(hi, now_bin);
        made := made + 1;
        hi := now_bin;
    END IF;
    WHILE hi < now() + width LOOP
        PERFORM omnispindle.add_history_partition(hi, hi + width);
        made := made + 1;
        hi := hi + width;
    END LOOP;
    IF p_oldest < lo THEN
        PERFORM omnispindle.add_history_partition(
            origin + make_interval(secs => floor(extract(epoch FROM p_oldest - origin)
                                                 / p_width_seconds) * p_width_seconds),
            lo);
        made := made + 1;
    END IF;
    RETURN made;
END
$$;

-- task_details as 0011 made it, without group_key (a view loses a column only
-- by being made again: SELECT granted on it to a role goes with it).
DROP VIEW omnispindle.task_details;
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
FROM (SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key
      FROM omnispindle.tasks
      UNION ALL
      SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key
      FROM omnispindle.task_history) t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id;

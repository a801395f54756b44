-- Omnispindle schema: the canonical definition of every table, type, function,
-- trigger and view. `alembic upgrade head` must produce exactly this (a test
-- compares the catalogs); a change here comes with a new migration.

CREATE SCHEMA IF NOT EXISTS omnispindle;

CREATE TYPE omnispindle.task_state AS ENUM (
    'blocked', 'pending', 'running', 'succeeded', 'failed', 'cancelled'
);

CREATE TYPE omnispindle.worker_state AS ENUM ('active', 'stopped', 'dead');

CREATE TABLE omnispindle.workers (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              text NOT NULL,
    host              text NOT NULL,
    pid               integer NOT NULL,
    capabilities      text[] NOT NULL DEFAULT '{}',
    task_types        text[] NOT NULL DEFAULT '{}',
    concurrency       integer NOT NULL CHECK (concurrency > 0),
    version           text NOT NULL,
    state             omnispindle.worker_state NOT NULL DEFAULT 'active',
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz,
    -- The lease the worker runs with: past it without a heartbeat, it is lost.
    lease_timeout_seconds double precision,
    CONSTRAINT workers_stopped_at_matches_state
        CHECK ((state = 'active') = (stopped_at IS NULL))
);

-- Heartbeats change only unindexed columns: free space keeps them in place (HOT).
ALTER TABLE omnispindle.workers SET (fillfactor = 50);

CREATE TABLE omnispindle.tasks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_type            text NOT NULL,
    parameters           jsonb NOT NULL DEFAULT '{}',
    priority             integer NOT NULL DEFAULT 0,
    required_capabilities text[] NOT NULL DEFAULT '{}',
    state                omnispindle.task_state NOT NULL DEFAULT 'pending',
    attempts             integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL DEFAULT 4,
    retry_backoff        double precision NOT NULL DEFAULT 1.0,
    timeout_seconds      double precision,
    pending_dependencies integer NOT NULL DEFAULT 0,
    run_after            timestamptz NOT NULL DEFAULT now(),
    result               jsonb,
    errors               jsonb NOT NULL DEFAULT '[]',
    cancel_reason        text,
    cancel_requested_at  timestamptz,
    allow_failed_dependencies boolean NOT NULL DEFAULT false,
    worker_id            uuid,
    lease_token          uuid,
    lease_expires_at     timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    idempotency_key      text,
    trace_context        jsonb
);

-- Frequent updates: leave room on each page for HOT updates and vacuum often.
ALTER TABLE omnispindle.tasks SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim query reads only ready rows, in priority then FIFO order. The type
-- and run_after make the dashboard's count of pending tasks an index-only scan.
CREATE INDEX tasks_ready_idx ON omnispindle.tasks (priority DESC, id)
    INCLUDE (task_type, run_after)
    WHERE state = 'pending';
-- The sweeper's repair pass reads only blocked tasks.
CREATE INDEX tasks_blocked_idx ON omnispindle.tasks (id) WHERE state = 'blocked';
-- Heartbeats and inspection find a worker's running tasks.
CREATE INDEX tasks_running_idx ON omnispindle.tasks (worker_id)
    WHERE state = 'running';
-- claim_tasks counts a limited type's running tasks (task_type_limits).
CREATE INDEX tasks_running_type_idx ON omnispindle.tasks (task_type) WHERE state = 'running';
-- One unfinished task per key: a repeated submission finds the existing task.
-- Once it has finished, the key is free again.
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON omnispindle.tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND state IN ('blocked', 'pending', 'running');
-- Metrics read recent outcomes by time.
CREATE INDEX tasks_finished_idx ON omnispindle.tasks (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE omnispindle.task_dependencies (
    task_id    bigint NOT NULL REFERENCES omnispindle.tasks (id) ON DELETE CASCADE,
    depends_on bigint NOT NULL REFERENCES omnispindle.tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on),
    CONSTRAINT task_dependencies_not_self CHECK (task_id <> depends_on)
);

CREATE INDEX task_dependencies_depends_on_idx
    ON omnispindle.task_dependencies (depends_on);

-- Partial results a running task emits, in order; kept so that a client that
-- subscribes late still reads the stream from its start.
CREATE TABLE omnispindle.task_stream (
    task_id    bigint NOT NULL REFERENCES omnispindle.tasks (id) ON DELETE CASCADE,
    seq        integer NOT NULL CHECK (seq > 0),
    attempt    integer NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

-- Rows that come and go as fast as tasks do: vacuum them as often as tasks.
ALTER TABLE omnispindle.task_dependencies SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE omnispindle.task_stream SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- Exponential backoff with equal jitter, capped at an hour.
CREATE FUNCTION omnispindle.retry_delay(attempt integer, base double precision)
RETURNS interval
LANGUAGE sql VOLATILE
AS $$
    SELECT make_interval(secs => least(3600.0, base * 2 ^ greatest(attempt - 1, 0))
                                 * (0.5 + random() * 0.5))
$$;

-- The tokens a group's bucket holds at p_at: buckets maps each group's key
-- ('' for the tasks without one) to [tokens, epoch seconds of that count]; a
-- group without an entry has a full bucket.
CREATE FUNCTION omnispindle.group_tokens_at(p_buckets jsonb, p_key text,
                                            p_rate double precision, p_burst double precision,
                                            p_at timestamptz)
RETURNS double precision
LANGUAGE sql
STABLE
AS $$
    SELECT least(p_burst, coalesce((p_buckets -> p_key ->> 0)::double precision
                                   + p_rate * (extract(epoch FROM p_at)
                                               - (p_buckets -> p_key ->> 1)::double precision),
                                   p_burst))
$$;

-- Whether a ready task that needs capabilities is better left, for now, to
-- another live worker with fewer capabilities that runs its type, has them
-- all, and has a free slot: the narrowest match. A worker that can do common
-- work then takes that, instead of the work only a specialist can do while the
-- specialist stands idle. Only for a task's first 5 seconds of being ready:
-- past them any worker that can run it takes it, so a specialist that stalls
-- while it still heartbeats holds nothing back for long. claim_tasks asks
-- only about tasks that need capabilities, with p_narrower the
-- free_narrower_workers of the claiming worker.
CREATE FUNCTION omnispindle.left_to_a_narrower_worker(p_task_type text, p_required text[],
                                                      p_ready_since timestamptz,
                                                      p_narrower jsonb)
RETURNS boolean
LANGUAGE sql
STABLE
AS $$
    SELECT p_ready_since > now() - interval '5 seconds'
       AND p_narrower @> jsonb_build_array(jsonb_build_object(
                             'capabilities', p_required, 'task_types', ARRAY[p_task_type]))
$$;

-- The live workers, other than p_worker_id, with fewer capabilities than
-- p_capabilities, that have a free slot and might be left a task of one of
-- p_task_types: each one's capabilities and task types. A claim reads them
-- once (an InitPlan), and only when it meets a task that needs capabilities:
-- looked up for each such task, the running tasks of every live worker were
-- counted again for each candidate (38,000 rows read by a claim of 8 among
-- 300 busy workers of 16 slots).
CREATE FUNCTION omnispindle.free_narrower_workers(p_task_types text[], p_capabilities text[],
                                                  p_worker_id uuid)
RETURNS jsonb
LANGUAGE sql
STABLE
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('capabilities', w.capabilities,
                                                 'task_types', w.task_types)), '[]')
    FROM omnispindle.workers w
    WHERE w.state = 'active' AND w.id <> p_worker_id
      AND cardinality(w.capabilities) < cardinality(p_capabilities)
      AND w.capabilities && p_capabilities
      AND w.task_types && p_task_types
      AND w.last_heartbeat_at
          > now() - make_interval(secs => coalesce(w.lease_timeout_seconds, 30))
      AND (SELECT count(*) FROM omnispindle.tasks x
           WHERE x.state = 'running' AND x.worker_id = w.id) < w.concurrency
$$;

-- Claims up to p_limit ready tasks for a worker in one statement. SKIP LOCKED
-- lets any number of workers claim at once without waiting on each other; NO
-- KEY UPDATE does not conflict with the KEY SHARE locks that submitting
-- dependents take. Bitmap scans are off so that, even with stale statistics
-- (right after a bulk submit), the plan walks tasks_ready_idx (or one type's
-- range of tasks_group_ready_idx: see walked_by_type) in order and stops
-- after p_limit rows instead of sorting every ready task. PL/pgSQL keeps the
-- plan for the connection's life, since a worker claims many times a second;
-- with sequential scans and sorts off too, that generic plan is the same
-- index walk whatever the statistics said when it was made.
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
    -- takes a concurrency's worth of the largest rows in one statement. Less
    -- when the step that calls it was handed children (see complete_and_claim).
    budget bigint := coalesce(nullif(current_setting('omnispindle_step.claim_budget', true), ''),
                              '67108864')::bigint;
    chosen bigint[];
    taken bigint;
    sizes bigint[];  -- each candidate's parameters, in bytes
    keys text[];  -- each candidate's group_key
    per_group integer;  -- the type's running limit per group, if any
    group_rate double precision;  -- the type's rate per group, if any
    group_burst double precision;  -- each group's bucket, full
    -- The type's group_tokens, decompressed once (see the reads of bucket).
    group_buckets jsonb;
    -- Where a fair claim of the type on this connection takes up the groups' turn
    -- (the last group the previous one served; '' for the top), and where the
    -- next one will: kept per type in the session's omnispindle_fair.after.
    fair_after text;
    fair_next text;
    fair_turns jsonb;  -- that setting, read as a map
    -- The groups the last fair claim of each type on this connection listed,
    -- when it saw them all, and when: the session's omnispindle_fair.groups.
    fair_lists jsonb;
    fair_listed jsonb;  -- the type's, if this claim may take them as its own
    fair_whole boolean;  -- whether this claim's listing saw every group
    fair_running jsonb;  -- the running tasks of each group, as the listing counted them
    fair_offered bigint[];  -- a fair claim's candidates, before the limits took theirs
    places integer[];  -- the place of each one's group in the turn
    -- Walks of the index, in order: (lowest priority, highest priority, after id).
    -- -1000 and 1000 bound priorities (tasks_priority_range). Ids are bigint: as
    -- integers, a cursor past 2^31 - 1 failed every claim.
    walks bigint[] := CASE WHEN p_after_id IS NULL THEN ARRAY[-1000, 1000, 0]
                            ELSE ARRAY[p_after_priority + 1, 1000, 0,
                                       p_after_priority, p_after_priority, p_after_id,
                                       -1000, p_after_priority - 1, 0] END;
    -- This worker's task types that have limits or a strategy. They are
    -- claimed first, one pass each (unless paused), up to what their limits
    -- allow and in their strategy's order; the walks then skip them. A limit
    -- both caps a type and keeps its share of the slots: a flood of other work
    -- cannot keep it waiting. No sort: a type that comes twice is passed over
    -- the second time.
    set_apart text[];
    -- Those and the worker's paused types: the types the walks leave.
    held_back text[];
    pass integer;
    walk integer;
    bucket record;  -- the type's task_type_limits row, if it has limits
    aging double precision;  -- the type's aging_seconds, if it ages
    type_strategy text;  -- the type's strategy, if it has one
    one_range boolean;  -- whether an aging type's pending tasks have no group_key
    -- The lock_timeout to restore after waiting for a limited type's row.
    lock_wait text := current_setting('lock_timeout');
    limited boolean;  -- whether the type has a limits row
    room integer;
    n_tokens double precision;
    refilled timestamptz;
    -- The types the walks take each from its own range of tasks_group_ready_idx
    -- instead of walking tasks_ready_idx (see walked_by_type); NULL until the
    -- first walk, empty when the walks take tasks_ready_idx.
    by_type text[];
    -- A walk of several types: the priorities of what its rounds took, the
    -- tasks they passed over (held by another claim), and how many tasks the
    -- last round read.
    priorities integer[];
    passed bigint[];
    read_best integer;
BEGIN
    -- The worker's tasks due later that have come due, in the index the claim reads.
    PERFORM omnispindle.promote_due_tasks(p_task_types, p_limit);
    -- Both in one read, which every claim makes.
    SELECT ARRAY(SELECT l.task_type FROM omnispindle.task_type_limits l
                 WHERE l.task_type = ANY (p_task_types)
                 UNION ALL
                 SELECT g.task_type FROM omnispindle.task_type_strategies g
                 WHERE g.task_type = ANY (p_task_types)),
           ARRAY(SELECT p.task_type FROM omnispindle.paused_task_types p
                 WHERE p.task_type = ANY (p_task_types))
    INTO set_apart, held_back;
    held_back := set_apart || held_back;
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
            -- A map of thousands of groups is stored compressed: read from the
            -- row, each group's lookup decompressed all of it again, quadratic in
            -- the groups (a claim of a fair type with 16,000 groups in the map
            -- took 7 s). || returns the map decompressed, looked up in place.
            group_buckets := bucket.group_tokens || '{}';
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
            IF type_strategy IS NULL AND omnispindle.ungrouped_type(set_apart[pass]) THEN
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
                    WHERE r.state = 'pending' AND NOT r.due_later
                      AND r.task_type = set_apart[pass]
                      AND r.group_key IS NULL
                      AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
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
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
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
                -- ties go in turn, from where this connection's last claim of the
                -- type left off, so that over many claims each group's share of
                -- starts is equal. A group is a group_key, and the tasks without
                -- one are one group more. Within a group, strict priority then
                -- age. Only the first `room` groups in that order can take part,
                -- each up to the water level: the running count every group
                -- reaches when `room` starts go to the lowest first. Candidates
                -- are locked as found, so that concurrent claims take the next
                -- ones; those not taken are free again at commit. (Taking `room`
                -- of each group locked a row per group and slot.)
                -- A worker's step (complete_and_claim) lists the groups again
                -- only when the last listing on this connection is 50 ms old,
                -- or did not see every group (a window of them): otherwise it
                -- takes that listing's groups, and whether each had a task this
                -- worker could start, as its own. A claim made by itself lists
                -- them.
                -- Listing the groups, one index probe each, was 11 of a claim's
                -- 22 probes of the index in a drain of 10 groups. The price: a
                -- group that appears, or whose tasks come due, waits for the
                -- next listing, 50 ms at most; one that empties takes a turn and
                -- comes back with nothing, and its slots go to the others
                -- (spare, below).
                -- Settings that are not JSON objects (set by hand in the
                -- session, say) count as no turn and no listing yet: they
                -- failed every claim. (Assignments made before the error stand.)
                fair_turns := NULL;
                fair_lists := NULL;
                fair_listed := NULL;
                BEGIN
                    fair_turns := nullif(current_setting('omnispindle_fair.after', true), '')::jsonb;
                    fair_lists := nullif(current_setting('omnispindle_fair.groups', true),
                                         '')::jsonb;
                    -- (A time to come, set by hand, is no listing either; nor
                    -- is one made for other capabilities, through a pooler.)
                    IF current_setting('omnispindle_step.claiming', true) = 'on'
                       AND extract(epoch FROM clock_timestamp())
                           - (fair_lists #>> ARRAY[set_apart[pass], 'at'])::double precision
                           BETWEEN 0 AND 0.05
                       AND fair_lists #> ARRAY[set_apart[pass], 'capabilities']
                           = to_jsonb(p_capabilities) THEN
                        fair_listed := fair_lists #> ARRAY[set_apart[pass], 'groups'];
                    END IF;
                EXCEPTION WHEN data_exception THEN
                    fair_listed := NULL;
                END;
                IF jsonb_typeof(fair_turns) IS DISTINCT FROM 'object' THEN
                    fair_turns := '{}';
                END IF;
                IF jsonb_typeof(fair_lists) IS DISTINCT FROM 'object' THEN
                    fair_lists := '{}';
                END IF;
                IF jsonb_typeof(fair_listed) IS DISTINCT FROM 'array' THEN
                    fair_listed := NULL;
                END IF;
                fair_after := coalesce(fair_turns ->> set_apart[pass], '');
                fair_running := NULL;
                IF fair_listed IS NULL THEN
                    -- The groups listed: each one's group_key (NULL for the tasks
                    -- without one) and whether it had a task this worker could
                    -- start, in the walk's order, and whether the walk saw them all.
                    -- A statement of its own: in the claim's, its plan was started
                    -- at every claim, listing or not.
                    WITH RECURSIVE running AS (
                        SELECT r.group_key, count(*) AS n FROM omnispindle.tasks r
                        WHERE r.state = 'running' AND r.task_type = set_apart[pass]
                        GROUP BY r.group_key
                    ), walked AS (
                        -- The groups in turn: down tasks_group_ready_idx by group_key
                        -- from below fair_after (from the top when it is ''), then the
                        -- place of the tasks without a group_key (bottom), then round
                        -- again from the top, each group once; the walk sets out from
                        -- a row of its own, place 0, at fair_after (at the bottom when
                        -- it is ''). Only a window of them is read: until as many as
                        -- the claim's slots, the groups running (which a limit per
                        -- group may hold back) and 16 more may take a turn, one index
                        -- probe each. Every group was probed at every claim: a claim
                        -- took 15 ms at 1,000 groups and 190 ms at 16,000. Counted by
                        -- place, a window of groups with nothing to start came back
                        -- empty however many groups past it had ready tasks.
                        -- A probe also tells whether the last task of its group (in
                        -- the group's order) is one this worker may start now. It
                        -- reads the group's range from its end: its first entries are
                        -- mostly those of tasks just claimed, which every probe from
                        -- the start walks over until vacuum removes them (16 buffers a
                        -- probe in a drain, against 3 from the end).
                        SELECT CASE WHEN fair_after <> '' THEN fair_after END AS group_key,
                               NULL::boolean AS last_ready, fair_after = '' AS bottom,
                               false AS wrapped, 0 AS place, false AS startable, false AS ready,
                               0 AS counted
                        UNION ALL
                        SELECT n.group_key, n.last_ready, n.bottom, n.wrapped, k.place + 1,
                               e.startable, e.ready, k.counted + e.ready::integer
                        FROM walked k
                        CROSS JOIN LATERAL (
                            (SELECT r.group_key,
                                    r.run_after <= now()
                                    AND r.required_capabilities <@ p_capabilities
                                    AND (r.required_capabilities = '{}'
                                         OR NOT omnispindle.left_to_a_narrower_worker(
                                             r.task_type, r.required_capabilities, r.run_after,
                                             (SELECT omnispindle.free_narrower_workers(
                                                  p_task_types, p_capabilities, p_worker_id))))
                                    AND r.attempts < r.max_attempts AS last_ready,
                                    false AS bottom, k.wrapped AS wrapped
                             FROM omnispindle.tasks r
                             WHERE NOT k.bottom AND r.state = 'pending' AND NOT r.due_later
                               AND r.task_type = set_apart[pass]
                               AND r.group_key < k.group_key
                               -- Round again, down to where this walk began.
                               AND r.group_key >= CASE WHEN k.wrapped THEN fair_after ELSE '' END
                             ORDER BY r.group_key DESC, r.priority, r.id DESC LIMIT 1)
                            UNION ALL
                            SELECT NULL, NULL, true, false WHERE NOT k.bottom AND NOT k.wrapped
                            UNION ALL
                            (SELECT r.group_key,
                                    r.run_after <= now()
                                    AND r.required_capabilities <@ p_capabilities
                                    AND (r.required_capabilities = '{}'
                                         OR NOT omnispindle.left_to_a_narrower_worker(
                                             r.task_type, r.required_capabilities, r.run_after,
                                             (SELECT omnispindle.free_narrower_workers(
                                                  p_task_types, p_capabilities, p_worker_id))))
                                    AND r.attempts < r.max_attempts,
                                    false, fair_after <> ''
                             FROM omnispindle.tasks r
                             WHERE k.bottom AND (fair_after <> '' OR k.place = 0)
                               AND r.state = 'pending' AND NOT r.due_later
                               AND r.task_type = set_apart[pass]
                               AND r.group_key >= fair_after
                             ORDER BY r.group_key DESC, r.priority, r.id DESC LIMIT 1)
                            UNION ALL
                            -- From the top with no group_key pending: the bottom.
                            SELECT NULL, NULL, true, false WHERE k.bottom AND k.place = 0
                            LIMIT 1) n
                        -- Whether the group may take a turn: a task this worker may
                        -- start now (a group whose tasks are all delayed or need other
                        -- capabilities would take a turn and come back with nothing;
                        -- most groups' last task is one, the others take a probe
                        -- each), and a token. (As an EXISTS, the planner read every
                        -- pending task of the type once per claim instead.) Each probe
                        -- reads its group's range of tasks_group_ready_idx in the
                        -- index's order: with an equality on group_key, which leaves
                        -- any order of it free, a plan made while the table was small
                        -- walked tasks_ready_idx over every pending task instead
                        -- (30,000 index entries for a claim of 32 under one group's
                        -- flood).
                        CROSS JOIN LATERAL (
                            SELECT s.startable,
                                   -- A group out of tokens takes no turn.
                                   s.startable
                                   AND (group_rate IS NULL
                                        OR omnispindle.group_tokens_at(group_buckets,
                                                                       coalesce(n.group_key, ''),
                                                                       group_rate, group_burst,
                                                                       clock_timestamp()) >= 1)
                                   AS ready
                            FROM (SELECT coalesce(CASE WHEN n.last_ready THEN true
                                                 WHEN n.bottom THEN
                                (SELECT true FROM omnispindle.tasks r
                                 WHERE r.state = 'pending' AND NOT r.due_later
                                   AND r.task_type = set_apart[pass]
                                   AND r.group_key IS NULL
                                   AND r.run_after <= now()
                                   AND r.required_capabilities <@ p_capabilities
                                   AND (r.required_capabilities = '{}'
                                        OR NOT omnispindle.left_to_a_narrower_worker(
                                            r.task_type, r.required_capabilities, r.run_after,
                                            (SELECT omnispindle.free_narrower_workers(
                                                 p_task_types, p_capabilities, p_worker_id))))
                                   AND r.attempts < r.max_attempts
                                 ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                                 LIMIT 1)
                                                 ELSE
                                (SELECT true FROM omnispindle.tasks r
                                 WHERE r.state = 'pending' AND NOT r.due_later
                                   AND r.task_type = set_apart[pass]
                                   AND r.group_key BETWEEN n.group_key AND n.group_key
                                   AND r.run_after <= now()
                                   AND r.required_capabilities <@ p_capabilities
                                   AND (r.required_capabilities = '{}'
                                        OR NOT omnispindle.left_to_a_narrower_worker(
                                            r.task_type, r.required_capabilities, r.run_after,
                                            (SELECT omnispindle.free_narrower_workers(
                                                 p_task_types, p_capabilities, p_worker_id))))
                                   AND r.attempts < r.max_attempts
                                 ORDER BY r.group_key, r.priority DESC, r.id
                                 LIMIT 1) END, false) AS startable
                                  -- Not pulled up: the probe would run once for each column.
                                  OFFSET 0) s) e
                        WHERE k.counted < room + 16 + (SELECT count(*) FROM running)
                    )
                    SELECT coalesce(jsonb_agg(jsonb_build_array(w.group_key, w.startable)
                                              ORDER BY w.place) FILTER (WHERE w.place > 0), '[]'),
                           max(w.counted) < room + 16 + (SELECT count(*) FROM running),
                           (SELECT coalesce(jsonb_agg(jsonb_build_array(u.group_key, u.n)), '[]')
                            FROM running u)
                    INTO fair_listed, fair_whole, fair_running
                    FROM walked w;
                    IF fair_whole THEN
                        PERFORM set_config('omnispindle_fair.groups', jsonb_set(
                            fair_lists, ARRAY[set_apart[pass]], jsonb_build_object(
                                'at', extract(epoch FROM clock_timestamp()),
                                'capabilities', p_capabilities, 'groups', fair_listed))::text,
                        false);
                    ELSIF fair_lists ? set_apart[pass] THEN
                        PERFORM set_config('omnispindle_fair.groups',
                                           (fair_lists - set_apart[pass])::text, false);
                    END IF;
                END IF;
                -- The running tasks of each group: as the listing counted them,
                -- if this claim listed the groups.
                WITH running AS (
                    SELECT r.group_key, count(*) AS n FROM omnispindle.tasks r
                    WHERE fair_running IS NULL
                      AND r.state = 'running' AND r.task_type = set_apart[pass]
                    GROUP BY r.group_key
                    UNION ALL
                    SELECT e.value ->> 0, (e.value ->> 1)::bigint
                    FROM jsonb_array_elements(fair_running) e
                ), keys AS (
                    -- The listed groups in the walk's turn (the tasks without a
                    -- group_key after the groups below fair_after), in the same
                    -- window, with tokens as they are now; first, the walk's row
                    -- of its own, place 0.
                    SELECT CASE WHEN fair_after <> '' THEN fair_after END AS group_key,
                           0 AS place, false AS ready
                    UNION ALL
                    SELECT c.group_key, c.place, c.ready
                    FROM (SELECT o.*, sum(o.ready::integer) OVER (ORDER BY o.place
                                                                  ROWS UNBOUNDED PRECEDING)
                                          AS counted
                          FROM (SELECT l.group_key, l.place::integer,
                                       l.startable
                                       AND (group_rate IS NULL
                                            OR omnispindle.group_tokens_at(
                                                   group_buckets, coalesce(l.group_key, ''),
                                                   group_rate, group_burst,
                                                   clock_timestamp()) >= 1)
                                       AS ready
                                FROM (SELECT e.value ->> 0 AS group_key,
                                             e.value -> 1 = 'true' AS startable,
                                             row_number() OVER (
                                                 ORDER BY CASE WHEN e.value ->> 0 IS NULL
                                                               THEN CASE WHEN fair_after = ''
                                                                         THEN 3 ELSE 1 END
                                                               WHEN e.value ->> 0 < fair_after
                                                               THEN 0 ELSE 2 END,
                                                          e.value ->> 0 DESC) AS place
                                      FROM jsonb_array_elements(fair_listed) e) l) o) c
                    WHERE c.counted - c.ready::integer < room + 16 + (SELECT count(*) FROM running)
                ), eligible AS (
                    SELECT g.group_key, coalesce(u.n, 0) AS n_running, g.place
                    FROM keys g
                    LEFT JOIN running u ON u.group_key IS NOT DISTINCT FROM g.group_key
                    WHERE g.ready AND coalesce(u.n, 0) < per_group
                ), turns AS (
                    SELECT * FROM eligible e ORDER BY e.n_running, e.place LIMIT room
                ), level AS (
                    -- Filling the j lowest groups to a common level takes
                    -- (room + their running) / j; the lowest such level is the one.
                    SELECT min((room + f.below)::double precision / f.j) AS height
                    FROM (SELECT row_number() OVER w AS j, sum(t.n_running) OVER w AS below
                          FROM turns t
                          WINDOW w AS (ORDER BY t.n_running, t.place ROWS UNBOUNDED PRECEDING)) f
                ), keyed AS (
                    SELECT c.id, c.priority, c.size, t.group_key, t.n_running, t.place
                    FROM turns t CROSS JOIN level v
                    CROSS JOIN LATERAL (SELECT r.id, r.priority,
                                               pg_column_size(r.parameters) AS size
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending' AND NOT r.due_later
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key BETWEEN t.group_key AND t.group_key
                                          AND r.run_after <= now()
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   (SELECT omnispindle.free_narrower_workers(
                                                        p_task_types, p_capabilities, p_worker_id))))
                                          AND r.attempts < r.max_attempts
                                        ORDER BY r.group_key, r.priority DESC, r.id
                                        LIMIT greatest(0, least(ceil(v.height)::integer, per_group)
                                                          - t.n_running)
                                        FOR NO KEY UPDATE SKIP LOCKED) c
                ), unkeyed AS (
                    SELECT r.id, r.priority, pg_column_size(r.parameters) AS size
                    FROM omnispindle.tasks r
                    WHERE EXISTS (SELECT FROM turns t WHERE t.group_key IS NULL)
                      AND r.state = 'pending' AND NOT r.due_later AND r.task_type = set_apart[pass]
                      AND r.group_key IS NULL AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
                      AND r.attempts < r.max_attempts
                    -- In the index's order: by priority alone, the planner
                    -- walked tasks_ready_idx over every type's pending tasks.
                    ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                    LIMIT (SELECT greatest(0, least(ceil(v.height)::integer, per_group)
                                              - t.n_running)
                           FROM turns t, level v WHERE t.group_key IS NULL)
                    FOR NO KEY UPDATE SKIP LOCKED
                ), firsts AS (
                    SELECT k.id, k.priority, k.size, k.group_key, k.n_running, k.place FROM keyed k
                    UNION ALL
                    SELECT u.id, u.priority, u.size, NULL, t.n_running, t.place
                    FROM unkeyed u JOIN turns t ON t.group_key IS NULL
                ), spare AS (
                    -- A group with fewer ready tasks than its share leaves slots
                    -- over, and so does one whose tasks another claim holds: the
                    -- keyed groups of the window fill them, in turn, each offering
                    -- the next few of its own (only when it happens). Filled from
                    -- the turns' groups alone, a claim made at the same moment as
                    -- another, which follows the same turn, came back with nothing
                    -- whenever the other held its groups' tasks.
                    SELECT c.id, c.priority, c.size, t.group_key, t.n_running, t.place
                    FROM (SELECT * FROM eligible e ORDER BY e.n_running, e.place) t
                    CROSS JOIN LATERAL (SELECT r.id, r.priority,
                                               pg_column_size(r.parameters) AS size
                                        FROM omnispindle.tasks r
                                        WHERE r.state = 'pending' AND NOT r.due_later
                                          AND r.task_type = set_apart[pass]
                                          AND r.group_key BETWEEN t.group_key AND t.group_key
                                          AND r.run_after <= now()
                                          AND r.required_capabilities <@ p_capabilities
                                          AND (r.required_capabilities = '{}'
                                               OR NOT omnispindle.left_to_a_narrower_worker(
                                                   r.task_type, r.required_capabilities, r.run_after,
                                                   (SELECT omnispindle.free_narrower_workers(
                                                        p_task_types, p_capabilities, p_worker_id))))
                                          AND r.attempts < r.max_attempts
                                          AND r.id <> ALL (ARRAY(SELECT f.id FROM firsts f))
                                        ORDER BY r.group_key, r.priority DESC, r.id
                                        LIMIT room - (SELECT count(*) FROM firsts)
                                        FOR NO KEY UPDATE SKIP LOCKED) c
                    WHERE (SELECT count(*) FROM firsts) < room
                    LIMIT greatest(0, room - (SELECT count(*) FROM firsts))
                ), candidates AS (
                    SELECT * FROM firsts
                    UNION ALL
                    SELECT * FROM spare
                ), ranked AS (
                    -- A task's rank: how many of its group would run once it starts.
                    SELECT c.id, c.size, c.group_key, c.place, c.n_running + row_number()
                               OVER (PARTITION BY c.group_key ORDER BY c.priority DESC, c.id)
                               AS share
                    FROM candidates c
                ), ready AS (
                    SELECT k.id, k.size, k.group_key, k.place FROM ranked k WHERE k.share <= per_group
                    ORDER BY k.share, k.place, k.id LIMIT room
                ), summed AS (
                    SELECT id, size, group_key, place,
                           sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
                    FROM ready
                )
                -- With each candidate its group's place in the turn, and the
                -- end of the window ('' for the tasks without a group_key).
                SELECT array_agg(id), array_agg(size), array_agg(group_key), sum(size),
                       array_agg(place),
                       (SELECT coalesce(k.group_key, '') FROM keys k
                        ORDER BY k.place DESC LIMIT 1)
                INTO chosen, sizes, keys, taken, places, fair_next
                FROM summed WHERE upto - size < budget;
                fair_offered := chosen;
            ELSE
                -- Aging: a task's effective priority is its priority plus one for
                -- every aging seconds it has been ready. Within a priority the
                -- oldest comes first, so the best candidates are the first few of
                -- each priority in use: found by a skip over the priorities (one
                -- index probe each), then ordered by effective priority. The
                -- probes of an ungrouped type (the usual case) read its own
                -- range of tasks_group_ready_idx, in the same order: in
                -- tasks_ready_idx, across types, each stepped over every
                -- pending task of other types at higher priorities (a claim
                -- behind another type's backlog of 20,000 read them all).
                -- A type with group keys still walks tasks_ready_idx.
                one_range := omnispindle.ungrouped_type(set_apart[pass]);
                WITH RECURSIVE levels AS (
                    SELECT * FROM (
                        (SELECT r.priority FROM omnispindle.tasks r
                         WHERE one_range AND r.state = 'pending' AND NOT r.due_later
                           AND r.task_type = set_apart[pass] AND r.group_key IS NULL
                           AND r.run_after <= now()
                         ORDER BY r.task_type, r.group_key, r.priority DESC, r.id LIMIT 1)
                        UNION ALL
                        (SELECT r.priority FROM omnispindle.tasks r
                         WHERE NOT one_range AND r.state = 'pending'
                           AND r.task_type = set_apart[pass] AND r.run_after <= now()
                         ORDER BY r.priority DESC, r.id LIMIT 1)) a
                    UNION ALL
                    SELECT n.priority FROM levels l
                    CROSS JOIN LATERAL (
                        (SELECT r.priority FROM omnispindle.tasks r
                         WHERE one_range AND r.state = 'pending' AND NOT r.due_later
                           AND r.task_type = set_apart[pass] AND r.group_key IS NULL
                           AND r.run_after <= now() AND r.priority < l.priority
                         ORDER BY r.task_type, r.group_key, r.priority DESC, r.id LIMIT 1)
                        UNION ALL
                        (SELECT r.priority FROM omnispindle.tasks r
                         WHERE NOT one_range AND r.state = 'pending'
                           AND r.task_type = set_apart[pass]
                           AND r.run_after <= now() AND r.priority < l.priority
                         ORDER BY r.priority DESC, r.id LIMIT 1)) n
                ), candidates AS (
                    SELECT c.id, c.priority + floor(extract(epoch FROM now() - c.run_after)
                                                    / aging) AS effective
                    FROM levels l
                    -- Locked as found, so that concurrent claims take the next
                    -- ones; those not taken are free again at commit.
                    CROSS JOIN LATERAL (
                        SELECT * FROM (SELECT r.id, r.priority, r.run_after
                                       FROM omnispindle.tasks r
                                       WHERE one_range AND r.state = 'pending' AND NOT r.due_later
                                         AND r.task_type = set_apart[pass]
                                         AND r.group_key IS NULL
                                         AND r.run_after <= now() AND r.priority = l.priority
                                         AND r.required_capabilities <@ p_capabilities
                                         AND (r.required_capabilities = '{}'
                                              OR NOT omnispindle.left_to_a_narrower_worker(
                                                  r.task_type, r.required_capabilities,
                                                  r.run_after,
                                                  (SELECT omnispindle.free_narrower_workers(
                                                       p_task_types, p_capabilities,
                                                       p_worker_id))))
                                         AND r.attempts < r.max_attempts
                                       ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                                       LIMIT room
                                       FOR NO KEY UPDATE SKIP LOCKED) o
                        UNION ALL
                        SELECT * FROM (SELECT r.id, r.priority, r.run_after
                                       FROM omnispindle.tasks r
                                       WHERE NOT one_range AND r.state = 'pending'
                                         AND r.task_type = set_apart[pass]
                                         AND r.run_after <= now() AND r.priority = l.priority
                                         AND r.required_capabilities <@ p_capabilities
                                         AND (r.required_capabilities = '{}'
                                              OR NOT omnispindle.left_to_a_narrower_worker(
                                                  r.task_type, r.required_capabilities,
                                                  r.run_after,
                                                  (SELECT omnispindle.free_narrower_workers(
                                                       p_task_types, p_capabilities,
                                                       p_worker_id))))
                                         AND r.attempts < r.max_attempts
                                       ORDER BY r.priority DESC, r.id LIMIT room
                                       FOR NO KEY UPDATE SKIP LOCKED) g) c
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
            IF limited AND chosen IS NOT NULL THEN
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
                    -- Not found: limits cleared since the first look (every
                    -- field of bucket NULL), or replaced while this claim
                    -- waited for the row (cleared and set again by one
                    -- transaction): the new row came after this statement's
                    -- snapshot, and taken for cleared, it let the claim start
                    -- every candidate past the new limits. A look with a fresh
                    -- snapshot tells the two apart; a row replaced at every try
                    -- leaves the type to the next claim, as a held row does.
                    FOR attempt IN 1 .. 3 LOOP
                        SELECT * INTO bucket FROM omnispindle.task_type_limits l
                        WHERE l.task_type = set_apart[pass]
                        FOR NO KEY UPDATE;
                        limited := FOUND;
                        EXIT WHEN limited;
                        EXIT WHEN NOT EXISTS (SELECT FROM omnispindle.task_type_limits l
                                              WHERE l.task_type = set_apart[pass]);
                        IF attempt = 3 THEN
                            RAISE lock_not_available;
                        END IF;
                    END LOOP;
                    PERFORM set_config('lock_timeout', lock_wait, true);
                    refilled := clock_timestamp();
                    -- The limits as locked, which may have changed since the first look.
                    per_group := coalesce(bucket.max_running_per_group, 2147483647);
                    group_rate := bucket.starts_per_second_per_group;
                    group_burst := greatest(1, ceil(group_rate));
                    group_buckets := bucket.group_tokens || '{}';
                    IF bucket.starts_per_second IS NOT NULL THEN
                        n_tokens := least(bucket.burst, bucket.tokens + bucket.starts_per_second
                                          * extract(epoch FROM refilled - bucket.refilled_at));
                        room := least(room, floor(n_tokens)::integer);
                    END IF;
                    IF room <= 0 THEN
                        chosen := NULL;
                    ELSE
                        -- The first candidates, in the strategy's order, that
                        -- the limits let start, and the buckets they take from,
                        -- in one statement: the type's running tasks, counted
                        -- once per group with a fresh snapshot taken after the
                        -- lock (it sees every claim of the type that held the
                        -- lock before), cap the type and each group; each
                        -- group's bucket caps the group. The tasks without a
                        -- group_key are one group, as in fair share. The rest
                        -- are free again at commit. One statement, so that the
                        -- lock's holder runs one statement fewer before the
                        -- start.
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
                        ), picked AS (
                            SELECT c.id, c.n, c.group_key, c.size
                            FROM offered c
                            LEFT JOIN running u ON u.group_key IS NOT DISTINCT FROM c.group_key
                            WHERE coalesce(u.n, 0) + c.nth <= per_group
                              AND (group_rate IS NULL
                                   OR c.nth <= omnispindle.group_tokens_at(
                                                   group_buckets, coalesce(c.group_key, ''),
                                                   group_rate, group_burst, refilled))
                            ORDER BY c.n
                            -- LEAST ignores NULL: no running limit, no cap from it.
                            LIMIT greatest(0, least(room, bucket.max_running
                                                          - (SELECT coalesce(sum(u.n), 0)
                                                             FROM running u)))
                        ), spent AS (
                            -- The type's bucket and each group's after these
                            -- starts (every picked task is locked by this claim
                            -- and starts below), in one write, when a task is
                            -- picked and a rate is set. Full group buckets leave
                            -- the map (no entry means a full bucket).
                            UPDATE omnispindle.task_type_limits l
                            SET tokens = CASE WHEN bucket.starts_per_second IS NULL THEN l.tokens
                                              ELSE n_tokens - (SELECT count(*) FROM picked) END,
                                refilled_at = CASE WHEN bucket.starts_per_second IS NULL
                                                   THEN l.refilled_at ELSE refilled END,
                                group_tokens = CASE WHEN group_rate IS NULL THEN l.group_tokens ELSE (
                                    SELECT coalesce(jsonb_object_agg(b.key, jsonb_build_array(
                                                        b.tokens, extract(epoch FROM refilled))), '{}')
                                    FROM (SELECT e.key,
                                                 omnispindle.group_tokens_at(
                                                     group_buckets, e.key, group_rate,
                                                     group_burst, refilled)
                                                     - coalesce(u.n, 0) AS tokens
                                          FROM (SELECT jsonb_object_keys(group_buckets) AS key
                                                UNION
                                                SELECT coalesce(p.group_key, '') FROM picked p) e
                                          LEFT JOIN (SELECT coalesce(p.group_key, '') AS key,
                                                            count(*) AS n
                                                     FROM picked p GROUP BY 1) u
                                            ON u.key = e.key) b
                                    WHERE b.tokens < group_burst) END
                            WHERE l.task_type = set_apart[pass]
                              AND (bucket.starts_per_second IS NOT NULL OR group_rate IS NOT NULL)
                              AND EXISTS (SELECT FROM picked)
                        )
                        SELECT array_agg(k.id ORDER BY k.n), sum(k.size) INTO chosen, taken
                        FROM picked k;
                    END IF;
                EXCEPTION WHEN lock_not_available THEN
                    chosen := NULL;  -- still locked by another claim
                END;
            END IF;
            IF type_strategy = 'fair' THEN
                -- The groups' turn goes on past the last group of the tasks
                -- this claim starts (past the tasks without a group_key: from
                -- the top); past the window when it had nothing to offer; and
                -- stays where it was when the limits started none of those it
                -- offered, which are first again next time.
                IF fair_offered IS NOT NULL THEN
                    fair_next := coalesce(
                        (SELECT coalesce(c.group_key, '')
                         FROM unnest(fair_offered, keys, places) AS c(id, group_key, place)
                         WHERE c.id = ANY (chosen) ORDER BY c.place DESC LIMIT 1),
                        fair_after);
                END IF;
                IF fair_next IS DISTINCT FROM fair_after THEN
                    PERFORM set_config('omnispindle_fair.after', jsonb_set(
                        fair_turns, ARRAY[set_apart[pass]], to_jsonb(fair_next))::text, false);
                END IF;
            END IF;
        ELSE
            -- A worker whose every type is claimed apart or paused has nothing
            -- to walk for: a walk would step over each of their ready tasks to
            -- find none (after a pass held back by a limit, at every claim).
            EXIT WHEN p_task_types <@ held_back;
            walk := pass - cardinality(set_apart) - 1;
            IF by_type IS NULL THEN
                by_type := omnispindle.walked_by_type(p_task_types, held_back);
            END IF;
            IF cardinality(by_type) = 1 THEN
                -- The same walk over the one type's range: the same tasks in the
                -- same order, none of another type on the way. (A task with a
                -- group_key committed since the probe waits for the next claim.)
                WITH ready AS (
                    SELECT r.id, pg_column_size(r.parameters) AS size
                    FROM omnispindle.tasks r
                    WHERE r.state = 'pending' AND NOT r.due_later
                      AND r.task_type = by_type[1]
                      AND r.group_key IS NULL
                      AND r.priority BETWEEN walks[walk * 3 + 1] AND walks[walk * 3 + 2]
                      AND r.id > walks[walk * 3 + 3]
                      AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
                      AND r.attempts < r.max_attempts
                      AND NOT EXISTS (SELECT FROM omnispindle.paused_task_types p
                                      WHERE p.task_type = by_type[1])
                    ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                    LIMIT p_limit - claimed
                    FOR NO KEY UPDATE SKIP LOCKED
                ), summed AS (
                    SELECT id, size, sum(size) OVER (ROWS UNBOUNDED PRECEDING) AS upto FROM ready
                )
                SELECT array_agg(id), max(upto) INTO chosen, taken
                FROM summed WHERE upto - size < budget;
            ELSIF cardinality(by_type) > 1 THEN
                -- Several types, each over its own range, merged in the walk's
                -- order and read without a lock; then the claim locks those best
                -- tasks by key, passing over the ones another claim holds, and
                -- so locks no more rows than it takes. (A walk of each type that
                -- locked up to the claim's room held tasks that a claim made at
                -- the same moment needed: that claim came back empty.) The tasks
                -- passed over are left out of the next round, which reads the
                -- next best for the room left: the claim takes the best tasks
                -- no other claim holds, as a walk of the ready index does.
                chosen := '{}';
                sizes := '{}';
                priorities := '{}';
                passed := '{}';
                taken := 0;
                LOOP
                    room := p_limit - claimed - cardinality(chosen);
                    WITH best AS MATERIALIZED (
                        SELECT c.id
                        FROM unnest(by_type) AS w(task_type)
                        CROSS JOIN LATERAL (
                            SELECT r.priority, r.id
                            FROM omnispindle.tasks r
                            WHERE r.state = 'pending' AND NOT r.due_later
                              AND r.task_type = w.task_type
                              AND r.group_key IS NULL
                              AND r.priority BETWEEN walks[walk * 3 + 1] AND walks[walk * 3 + 2]
                              AND r.id > walks[walk * 3 + 3]
                              AND r.run_after <= now()
                              AND r.required_capabilities <@ p_capabilities
                              AND (r.required_capabilities = '{}'
                                   OR NOT omnispindle.left_to_a_narrower_worker(
                                       r.task_type, r.required_capabilities, r.run_after,
                                       (SELECT omnispindle.free_narrower_workers(
                                            p_task_types, p_capabilities, p_worker_id))))
                              AND r.attempts < r.max_attempts
                              AND r.id <> ALL (chosen)
                              AND r.id <> ALL (passed)
                            ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                            LIMIT room) c
                        ORDER BY c.priority DESC, c.id
                        LIMIT room
                    ), locked AS (
                        -- Each by its key (a plan made on a table without
                        -- statistics took the ready index for a list of keys,
                        -- and read all of it), read again once locked: still
                        -- ready, and not paused by a pause committed since the
                        -- claim began.
                        SELECT c.*
                        FROM best b
                        CROSS JOIN LATERAL (
                            SELECT r.id, r.priority, pg_column_size(r.parameters) AS size
                            FROM omnispindle.tasks r
                            WHERE r.id = b.id
                              AND r.state = 'pending'
                              AND r.run_after <= now()
                              AND r.attempts < r.max_attempts
                              AND NOT EXISTS (SELECT FROM omnispindle.paused_task_types p
                                              WHERE p.task_type = r.task_type)
                            FOR NO KEY UPDATE SKIP LOCKED) c
                    )
                    SELECT chosen || ARRAY(SELECT l.id FROM locked l),
                           sizes || ARRAY(SELECT l.size::bigint FROM locked l),
                           priorities || ARRAY(SELECT l.priority FROM locked l),
                           taken + coalesce((SELECT sum(l.size) FROM locked l), 0),
                           passed || ARRAY(SELECT b.id FROM best b
                                           WHERE b.id <> ALL (ARRAY(SELECT l.id FROM locked l))),
                           (SELECT count(*) FROM best)
                    INTO chosen, sizes, priorities, taken, passed, read_best;
                    -- Done when the room is full, or the round read all there was.
                    EXIT WHEN claimed + cardinality(chosen) >= p_limit OR read_best < room;
                END LOOP;
                IF taken >= budget THEN
                    -- As many as the budget holds, in the walk's order.
                    SELECT array_agg(c.id), max(c.upto) INTO chosen, taken
                    FROM (SELECT c.id, c.size, sum(c.size) OVER (ORDER BY c.priority DESC, c.id
                                                                 ROWS UNBOUNDED PRECEDING) AS upto
                          FROM unnest(chosen, sizes, priorities) AS c(id, size, priority)) c
                    WHERE c.upto - c.size < budget;
                ELSIF cardinality(chosen) = 0 THEN
                    chosen := NULL;
                END IF;
            ELSE
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
                      AND r.task_type <> ALL (held_back)
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
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
                  -- the worker decoding an empty object per task. Results that
                  -- together would not fit in one jsonb value (268,435,455
                  -- bytes) come as the bytes they need instead, a number, and
                  -- are never gathered: the aggregate raised for ever at each
                  -- claim, after holding them all in memory. A result's size
                  -- is read decompressed (#> '{}' hands back the value itself),
                  -- plus 32 bytes for its key and entries.
                  (SELECT CASE WHEN max(e.total) > 268435447 THEN to_jsonb(max(e.total))
                               ELSE jsonb_object_agg(e.parent, e.result)
                                    FILTER (WHERE e.total <= 268435447) END
                   FROM (SELECT d.depends_on::text AS parent, p.result,
                                sum(pg_column_size(p.result #> '{}') + 32) OVER () AS total
                         FROM omnispindle.task_dependencies d,
                              LATERAL (SELECT q.result FROM omnispindle.tasks q
                                       WHERE q.id = d.depends_on AND q.state = 'succeeded'
                                       OFFSET 0) p
                         WHERE d.task_id = t.id) e),
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

-- Ends one attempt of each given task with an error: back to pending after a
-- backoff while attempts are left, else failed (at once for an error saying
-- "retry": false); cancelled when a cancel was requested. Only rows whose
-- lease token still matches change (fencing).
-- Shared by workers and lease recovery. Whether a cancel was requested and
-- an attempt is left is read from the row as the update locks it: read
-- before, with the statement's snapshot, a cancel committed while the update
-- waited for the row went unseen, and the task went back to pending with its
-- cancel request, which the state rules refuse. PL/pgSQL with generic plans
-- and sequential and bitmap scans off, as complete_attempts.
CREATE FUNCTION omnispindle.fail_attempts(ids bigint[], tokens uuid[], failures jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state, retry_in double precision)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN t.cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN t.attempts < t.max_attempts AND f.may_retry THEN 'pending'
                     ELSE 'failed' END::omnispindle.task_state,
        run_after = CASE WHEN t.cancel_requested_at IS NULL AND t.attempts < t.max_attempts
                              AND f.may_retry
                         THEN now() + omnispindle.retry_delay(t.attempts, t.retry_backoff)
                         ELSE t.run_after END,
        finished_at = CASE WHEN t.cancel_requested_at IS NULL AND t.attempts < t.max_attempts
                                AND f.may_retry
                           THEN NULL ELSE now() END,
        errors = t.errors || jsonb_build_array(f.error),
        lease_token = NULL,
        lease_expires_at = NULL
    -- An error saying "retry": false (an executor's FailForGood) ends its task.
    FROM (SELECT u.id, u.token, u.error, u.error -> 'retry' IS DISTINCT FROM 'false' AS may_retry
          FROM unnest(ids, tokens, failures) AS u(id, token, error)) AS f
    -- The token alone fences (a lease exists exactly while the task runs, see
    -- tasks_lease_matches_state). Saying state = 'running' too let the planner
    -- scan all of tasks_running_idx, dead entries included, instead of the
    -- primary key: completions slowed as a held snapshot kept those entries.
    -- The ids again, as a condition on tasks alone, so that whichever side of
    -- the join tasks takes, the primary key is probed for these ids only: the
    -- plan is kept for the session, and one made while vacuum had just emptied
    -- the table read all of tasks_pkey at every later call.
    WHERE t.id = f.id AND t.lease_token = f.token AND t.id = ANY (ids)
    -- The new row: a retried task's run_after is now plus its delay.
    RETURNING t.id, t.state,
              CASE WHEN t.state = 'pending'
                   THEN extract(epoch FROM t.run_after - now())::double precision END;
END
$$;

-- Ends attempts that returned: succeeded with their result, or cancelled
-- when a cancel was requested meanwhile. Fencing: a row changes only while
-- the caller still holds its lease, so a worker whose lease was taken over
-- gets no row back and its result is dropped. PL/pgSQL keeps the plan for the
-- connection's life (an SQL function that updates is planned at every call),
-- if it is generic: with the arrays' sizes known at each call, the plan cache
-- would otherwise make a custom plan every time. Sequential and bitmap scans
-- are off so that a plan made while the table was small still looks tasks up
-- by key, one probe each, once it is large.
CREATE FUNCTION omnispindle.complete_attempts(ids bigint[], tokens uuid[], results jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
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
    -- The ids again, as a condition on tasks alone: see fail_attempts.
    WHERE t.id = c.id AND t.lease_token = c.token AND t.id = ANY (ids)
    RETURNING t.id, t.state;
END
$$;

-- The first ready task a worker's claim would take by its walks (see
-- claim_tasks): p_walks holds each walk's (lowest priority, highest priority,
-- after id). Each walk stops at its first task that passes the walk's test,
-- so this reads no more of the ready index than the claim would. The settings
-- are claim_tasks's, for the same reason: a generic plan made once the table
-- held a few thousand ready tasks otherwise read every one of them through a
-- bitmap and sorted them (56 ms a call behind 100,000 of them, against 0.7 ms
-- for the claim). The hand-over in after_tasks_update asks it.
CREATE FUNCTION omnispindle.first_ready_task(p_task_types text[], p_capabilities text[],
                                             p_worker_id uuid, p_walks bigint[])
RETURNS TABLE (walk integer, priority integer, id bigint)
LANGUAGE plpgsql
STABLE
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    w integer;
    by_type text[];
BEGIN
    -- As claim_tasks walks: a hand-over happens only when none of the
    -- worker's types has limits or a strategy, so only paused ones are set
    -- apart here; for a worker of one type that changes nothing, and a chain's
    -- steps read no more.
    IF cardinality(p_task_types) = 1 THEN
        by_type := omnispindle.walked_by_type(p_task_types, '{}');
    ELSE
        by_type := omnispindle.walked_by_type(
            p_task_types, ARRAY(SELECT p.task_type FROM omnispindle.paused_task_types p
                                WHERE p.task_type = ANY (p_task_types)));
    END IF;
    FOR w IN 1 .. 3 LOOP
        IF cardinality(by_type) > 0 THEN
            -- As claim_tasks walks its types apart: the best of each one's first.
            RETURN QUERY
                SELECT w, c.priority, c.id
                FROM unnest(by_type) AS t(task_type)
                CROSS JOIN LATERAL (
                    SELECT r.priority, r.id FROM omnispindle.tasks r
                    WHERE r.state = 'pending' AND NOT r.due_later
                      AND r.task_type = t.task_type
                      AND r.group_key IS NULL
                      AND r.priority BETWEEN p_walks[w * 3 - 2] AND p_walks[w * 3 - 1]
                      AND r.id > p_walks[w * 3]
                      AND r.run_after <= now()
                      AND r.required_capabilities <@ p_capabilities
                      AND (r.required_capabilities = '{}'
                           OR NOT omnispindle.left_to_a_narrower_worker(
                               r.task_type, r.required_capabilities, r.run_after,
                               (SELECT omnispindle.free_narrower_workers(
                                    p_task_types, p_capabilities, p_worker_id))))
                      AND r.attempts < r.max_attempts
                      AND NOT EXISTS (SELECT FROM omnispindle.paused_task_types p
                                      WHERE p.task_type = t.task_type)
                    ORDER BY r.task_type, r.group_key, r.priority DESC, r.id
                    LIMIT 1) c
                ORDER BY c.priority DESC, c.id
                LIMIT 1;
        ELSE
            RETURN QUERY
                SELECT w, r.priority, r.id FROM omnispindle.tasks r
                WHERE r.state = 'pending'
                  AND r.priority BETWEEN p_walks[w * 3 - 2] AND p_walks[w * 3 - 1]
                  AND r.id > p_walks[w * 3]
                  AND r.run_after <= now()
                  AND r.task_type = ANY (p_task_types)
                  AND r.required_capabilities <@ p_capabilities
                  AND (r.required_capabilities = '{}'
                       OR NOT omnispindle.left_to_a_narrower_worker(
                           r.task_type, r.required_capabilities, r.run_after,
                           (SELECT omnispindle.free_narrower_workers(
                                p_task_types, p_capabilities, p_worker_id))))
                  AND r.attempts < r.max_attempts
                  AND r.task_type <> ALL (ARRAY(SELECT p.task_type
                                                FROM omnispindle.paused_task_types p))
                ORDER BY r.priority DESC, r.id
                LIMIT 1;
        END IF;
        EXIT WHEN FOUND;
    END LOOP;
END
$$;

-- A worker's step in one statement and one commit: store the results of the
-- attempts that returned, then claim up to p_limit more (from the worker's
-- claim cursor, if it passes one: see claim_tasks). Rows with dropped true
-- name results not stored because their lease was lost (id only); the others
-- are claims. Stored results return nothing, so a usual step returns claims
-- alone. Children the completions make ready are handed to this worker by the
-- update that readies them, as far as its claim would have taken them first
-- (see after_tasks_update); the claim then takes the rest, within what is left
-- of the slots and of the budget of parameters, or is skipped when nothing
-- else was ready for it. The claim can also take children left pending, which
-- is why their ready notice waits until after it: it goes out only if one of
-- them is still pending, so a chain's next link neither wakes other workers
-- nor this one for a claim that would find nothing. What the step lets the
-- countdown hand over, and what waits for a notice, are kept in
-- transaction-local settings, named alike for a queue in any schema.
-- A step that only claims commits without waiting for the WAL flush: a claim
-- lost in a crash leaves its task pending, as if the worker had died right
-- after claiming, and it never delays the start of a task. Completions stay
-- durable. Generic plans: custom ones, which the arrays of every call would
-- otherwise get, are made afresh at each call; with sequential scans off, as
-- in complete_attempts.
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    unannounced bigint[];
    hand jsonb;
    handed bigint[];
    room integer := p_limit;  -- the slots left for claim_tasks
BEGIN
    IF cardinality(p_ids) = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    ELSE
        IF p_limit > 0 THEN
            -- Before the hand-over looks for the tasks the claim would take first.
            PERFORM omnispindle.promote_due_tasks(p_task_types, p_limit);
            PERFORM set_config('omnispindle_step.ready_unannounced', '{}', true);
            -- What the countdown may hand this worker (see after_tasks_update).
            -- 67108864: the claim's budget of parameters (see claim_tasks). No
            -- types or capabilities (NULL) are none, as for the claim.
            PERFORM set_config('omnispindle_step.hand_to', jsonb_build_object(
                'worker', p_worker_id, 'lease', p_lease_seconds,
                'types', coalesce(p_task_types, '{}'),
                'capabilities', coalesce(p_capabilities, '{}'), 'after_priority', p_after_priority,
                'after_id', p_after_id, 'room', p_limit, 'budget', 67108864)::text, true);
        END IF;
        RETURN QUERY
            SELECT d.id, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
                   NULL::double precision, NULL::uuid, NULL::jsonb, NULL::jsonb, NULL::jsonb,
                   NULL::integer, true
            FROM (SELECT unnest(p_ids) AS id
                  EXCEPT ALL
                  SELECT c.id FROM omnispindle.complete_attempts(p_ids, p_tokens, p_results) c) d;
        IF p_limit > 0 THEN
            hand := current_setting('omnispindle_step.hand_to')::jsonb;
            PERFORM set_config('omnispindle_step.hand_to', '', true);
            -- A key that only a hand-over adds: a usual step reads no more.
            IF hand ? 'handed' THEN
                handed := ARRAY(SELECT jsonb_array_elements_text(hand -> 'handed')::bigint);
                RETURN QUERY
                    SELECT t.id, t.task_type, t.parameters, t.attempts, t.max_attempts,
                           t.timeout_seconds, t.lease_token,
                           -- As claim_tasks returns them.
                           (SELECT CASE WHEN max(e.total) > 268435447 THEN to_jsonb(max(e.total))
                                        ELSE jsonb_object_agg(e.parent, e.result)
                                             FILTER (WHERE e.total <= 268435447) END
                            FROM (SELECT d.depends_on::text AS parent, p.result,
                                         sum(pg_column_size(p.result #> '{}') + 32)
                                             OVER () AS total
                                  FROM omnispindle.task_dependencies d,
                                       LATERAL (SELECT q.result FROM omnispindle.tasks q
                                                WHERE q.id = d.depends_on
                                                  AND q.state = 'succeeded'
                                                OFFSET 0) p
                                  WHERE d.task_id = t.id) e),
                           CASE WHEN t.allow_failed_dependencies THEN
                           (SELECT jsonb_object_agg(d.depends_on::text, p.failure)
                            FROM omnispindle.task_dependencies d,
                                 LATERAL (SELECT jsonb_build_object(
                                                     'state', q.state, 'error', q.errors -> -1,
                                                     'cancel_reason', q.cancel_reason) AS failure
                                          FROM omnispindle.tasks q
                                          WHERE q.id = d.depends_on
                                            AND q.state IN ('failed', 'cancelled')
                                          OFFSET 0) p
                            WHERE d.task_id = t.id) END,
                           t.trace_context, t.priority, false
                    FROM omnispindle.tasks t
                    WHERE t.id = ANY (handed);
                room := (hand ->> 'room')::integer;
                -- Nothing else the claim could take was ready, or the budget is
                -- spent: a claim would walk the ready index for nothing, or lock
                -- rows it cannot take. A child the step left pending is no
                -- reason to claim: the countdown offered every child the claim
                -- could take, in the claim's order.
                IF (hand ->> 'none_ready')::boolean OR (hand ->> 'budget')::bigint <= 0 THEN
                    room := 0;
                END IF;
            END IF;
        END IF;
    END IF;
    IF room > 0 THEN
        IF handed IS NOT NULL THEN
            PERFORM set_config('omnispindle_step.claim_budget', hand ->> 'budget', true);
        END IF;
        -- A step may take the groups a fair claim listed just before (see claim_tasks).
        PERFORM set_config('omnispindle_step.claiming', 'on', true);
        RETURN QUERY
            SELECT c.*, false
            FROM omnispindle.claim_tasks(p_task_types, p_capabilities, room, p_worker_id,
                                         p_lease_seconds, p_after_priority, p_after_id) c;
        PERFORM set_config('omnispindle_step.claiming', '', true);
        IF handed IS NOT NULL THEN
            PERFORM set_config('omnispindle_step.claim_budget', '', true);
        END IF;
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

-- The dependents of p_id that may still read its result, which keep it from
-- retention and the history: one that is blocked, pending or running; one
-- that failed within the horizon (p_keep_seconds; it may be retried by
-- hand); and one cancelled within it because another of its dependencies
-- failed, while that one is failed or retried (pending, running): retried
-- with its dependents (retry_tasks), it brings this one back, which then
-- reads the result of every dependency it still has. A set-returning SQL
-- function so that the planner inlines it: NOT EXISTS over it stays the
-- per-row subplan of index lookups the rule was written out as (its argument
-- refers to the row, so the EXISTS never becomes a join over every
-- dependency). A function returning boolean is not inlined but called for
-- each row: a count of 100,000 tasks took 60 % longer.
CREATE FUNCTION omnispindle.dependents_reading(p_id bigint, p_keep_seconds double precision)
RETURNS TABLE (task_id bigint)
LANGUAGE sql
STABLE
AS $$
    SELECT d.task_id
    FROM omnispindle.task_dependencies d
    WHERE d.depends_on = p_id
      AND (SELECT c.state IN ('blocked', 'pending', 'running')
                  OR (c.state = 'failed'
                      AND c.finished_at >= now() - make_interval(secs => p_keep_seconds))
                  OR (c.state = 'cancelled'
                      AND c.finished_at >= now() - make_interval(secs => p_keep_seconds)
                      AND (SELECT x.state IN ('pending', 'running', 'failed') AND x.id <> p_id
                           FROM omnispindle.tasks x
                           WHERE x.id = substring(c.cancel_reason
                                                  FROM '^dependency ([0-9]{1,18}) failed$')
                                            ::bigint))
           FROM omnispindle.tasks c WHERE c.id = d.task_id);
$$;

-- The oldest finished tasks past the horizon (keep_seconds), locked, at most
-- p_limit, from p_after on (a prune cursor; NULL for the oldest). A function
-- so that its plan is the walk of tasks_finished_idx in order, stopping after
-- the limit, whatever the planner guesses: two bounds on finished_at made the
-- generic plan of a plain statement expect one row, and sort every task past
-- the horizon instead. A task stays while a dependent may still read its
-- result (see dependents_reading). SKIP LOCKED passes over rows another
-- transaction holds, such as a parent that a submitter is adding a dependent
-- to (it holds KEY SHARE until it commits).
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
      AND NOT EXISTS (SELECT FROM omnispindle.dependents_reading(t.id, p_keep_seconds))
    ORDER BY t.finished_at
    LIMIT p_limit
    FOR UPDATE OF t SKIP LOCKED;
END
$$;

-- Refuses a state transition; the trigger below calls it only for illegal ones.
-- The hint says what does what the update tried.
CREATE FUNCTION omnispindle.check_transition()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    hint text := '';
BEGIN
    IF OLD.state = 'failed' AND NEW.state = 'pending' THEN
        hint := format(': it has used all %s of its attempts; run SELECT * FROM '
                       'omnispindle.retry_task(%s), or raise max_attempts in the same UPDATE',
                       OLD.max_attempts, OLD.id);
    ELSIF OLD.state = 'cancelled' AND OLD.cancel_reason LIKE 'dependency % failed' THEN
        hint := ': it was cancelled because a dependency failed; retry that one with '
                'omnispindle.retry_task(id, with_dependents => true)';
    ELSIF OLD.state IN ('succeeded', 'cancelled') THEN
        hint := format(': a %s task stays %s; submit a new one', OLD.state, OLD.state);
    END IF;
    RAISE EXCEPTION '%', format('illegal task state transition %s -> %s for task %s%s',
                                OLD.state, NEW.state, OLD.id, hint)
        USING ERRCODE = 'OS002';
END
$$;

-- Whether a task may go from state p_old to p_new (the other arguments are
-- what the exceptions read). The transition trigger below asks it for each
-- row whose state changes. A call costs under a microsecond a row; written
-- out in the trigger's WHEN clause, the rule was prepared again by every
-- UPDATE statement that sets a state (with the state rules below, a fifth of
-- a chain link's time in Postgres). This function and the other rules'
-- functions run as the writer, with its search_path: each operator and
-- function in them is named with its schema, so that none of the writer's
-- own can take its place (an operator on the enum type itself would win
-- over pg_catalog's, which takes any enum, wherever the path puts it).
CREATE FUNCTION omnispindle.legal_transition(p_old omnispindle.task_state,
                                             p_new omnispindle.task_state,
                                             p_old_pending integer, p_new_pending integer,
                                             p_new_attempts integer, p_new_max_attempts integer,
                                             p_old_cancel_reason text)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    RETURN p_new OPERATOR(pg_catalog.=) p_old
        OR (p_old OPERATOR(pg_catalog.=) 'blocked'
            AND p_new OPERATOR(pg_catalog.=) ANY ('{pending,cancelled}'))
        -- A child handed to a worker as its last parent finishes
        -- (after_tasks_update) starts in the update that readies it.
        OR (p_old OPERATOR(pg_catalog.=) 'blocked' AND p_new OPERATOR(pg_catalog.=) 'running'
            AND p_old_pending OPERATOR(pg_catalog.>) 0
            AND p_new_pending OPERATOR(pg_catalog.=) 0)
        OR (p_old OPERATOR(pg_catalog.=) 'pending'
            AND p_new OPERATOR(pg_catalog.=) ANY ('{running,cancelled}'))
        OR (p_old OPERATOR(pg_catalog.=) 'running'
            AND p_new OPERATOR(pg_catalog.=) ANY ('{pending,succeeded,failed,cancelled}'))
        -- A failed task may be retried by hand, given an attempt to run.
        OR (p_old OPERATOR(pg_catalog.=) 'failed' AND p_new OPERATOR(pg_catalog.=) 'pending'
            AND p_new_attempts OPERATOR(pg_catalog.<) p_new_max_attempts)
        -- A task a failure cancelled waits again once that task is retried.
        OR (p_old OPERATOR(pg_catalog.=) 'cancelled' AND p_new OPERATOR(pg_catalog.=) 'blocked'
            AND coalesce(p_old_cancel_reason OPERATOR(pg_catalog.~~) 'dependency % failed',
                         false));
END
$$;

-- The legal state transitions; anything else is refused, also from plain SQL.
-- An update that keeps a row's state calls nothing.
CREATE TRIGGER tasks_check_transition
    BEFORE UPDATE OF state ON omnispindle.tasks
    FOR EACH ROW
    WHEN (NEW.state <> OLD.state
          AND NOT omnispindle.legal_transition(OLD.state, NEW.state, OLD.pending_dependencies,
                                               NEW.pending_dependencies, NEW.attempts,
                                               NEW.max_attempts, OLD.cancel_reason))
    EXECUTE FUNCTION omnispindle.check_transition();

-- Workers wake on this notification. Tasks that are not due yet are announced
-- with the time the earliest of them is due (epoch seconds), so that a worker
-- can sleep until then.
CREATE FUNCTION omnispindle.notify_inserted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    any_ready boolean;
    first_later timestamptz;
BEGIN
    SELECT bool_or(run_after <= now()), min(run_after) FILTER (WHERE run_after > now())
    INTO any_ready, first_later
    FROM inserted WHERE state = 'pending';
    IF any_ready THEN
        PERFORM pg_notify('omnispindle_ready', '');
    END IF;
    IF first_later IS NOT NULL THEN
        PERFORM pg_notify('omnispindle_ready', extract(epoch FROM first_later)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_inserted
    AFTER INSERT ON omnispindle.tasks
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION omnispindle.notify_inserted();

-- Runs once per UPDATE statement over all changed rows: unblocks the children
-- of tasks that succeeded, cancels the descendants of tasks that failed or
-- were cancelled, and wakes workers and waiting clients.
-- JIT is off here, as in insert_tasks and submit_tasks: statements over
-- thousands of rows look costly to the planner, and compiling them would take
-- longer than running them. Its plans are generic, kept for the connection's
-- life: custom ones were made afresh for every statement (a fifth of a chain
-- step's time in Postgres), and with sequential scans off the generic plan
-- looks rows up by key also when it was made while the tables were small.
CREATE FUNCTION omnispindle.after_tasks_update()
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
    became_blocked bigint[];  -- cancelled tasks a retry with dependents brought back
    retried bigint[];
    any_ready boolean;  -- whether a task it left pending is due now
    first_later timestamptz;  -- when the first one left pending for later is due
    -- What a worker's step lets the countdown hand it (see complete_and_claim).
    hand jsonb;
    hand_worker uuid;
    hand_types text[];
    hand_capabilities text[];
    -- The claim's walks from the worker's cursor, as in claim_tasks: (lowest
    -- priority, highest priority, after id) each; without a cursor, one walk.
    walks bigint[];
    handed bigint[];
    handed_bytes bigint;
    none_ready boolean;  -- whether the claim would have found nothing but the children
    -- In a worker's step: 0 when its tasks have no children, 1 when no child
    -- can become ready, 2 when one may or the edges are too many to tell.
    children integer;
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
           array_agg(c.id) FILTER (WHERE c.state = 'pending'),
           array_agg(c.id) FILTER (WHERE c.state = 'blocked')
    INTO succeeded, broken, became_pending, became_blocked
    FROM (SELECT id, state FROM new_rows EXCEPT SELECT id, state FROM old_rows) AS c;

    IF became_pending IS NOT NULL OR became_blocked IS NOT NULL THEN
        SELECT array_agg(id) INTO retried
        FROM (SELECT id FROM old_rows WHERE state IN ('failed', 'cancelled')
              INTERSECT SELECT id FROM new_rows WHERE state IN ('pending', 'blocked')) AS r;
    END IF;

    IF retried IS NOT NULL THEN
        -- A failed parent retried, or a cancelled one brought back by a retry
        -- with dependents, is unfinished again for the children that had
        -- counted its end as done: else such a child started before it ran.
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
        -- In a worker's step, the children made ready start on that worker in
        -- the same update, as far as its claim would have taken them first
        -- (see offered and handing below): a chain's next link is then written
        -- once, neither announced nor claimed. That statement costs more to
        -- start than the plain countdown, so a step runs it only when a child
        -- may become ready: one waiting on no more parents than the step
        -- finished (its parents among them are distinct, so no more can
        -- count). A fan-in's last task, waiting on thousands, is counted down
        -- plainly, and a step whose tasks have no children does nothing more.
        -- A step whose tasks have over 32 children's edges runs it at once:
        -- its start weighs little there, and reading each child a second time
        -- to choose would weigh more. A step whose results include a cancel
        -- (one was requested) counts down plainly: the cascade below readies
        -- more children in a nested countdown, which could not weigh them
        -- against those handed here.
        hand := nullif(current_setting('omnispindle_step.hand_to', true), '')::jsonb;
        IF hand IS NOT NULL AND broken IS NULL THEN
            -- CASE reads the children only for a step with a few edges.
            SELECT CASE WHEN e.edges = 0 THEN 0
                        WHEN e.edges > 32 THEN 2
                        WHEN EXISTS (SELECT FROM omnispindle.task_dependencies d
                                     WHERE d.depends_on = ANY (succeeded)
                                       AND (SELECT t.pending_dependencies <= cardinality(succeeded)
                                            FROM omnispindle.tasks t
                                            WHERE t.id = d.task_id AND t.state = 'blocked'
                                            OFFSET 0)) THEN 2
                        ELSE 1 END
            INTO children
            FROM (SELECT count(*) AS edges
                  FROM (SELECT FROM omnispindle.task_dependencies d
                        WHERE d.depends_on = ANY (succeeded) LIMIT 33) x) e;
        END IF;
        IF hand IS NULL OR broken IS NOT NULL OR children = 1 THEN
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
            -- hold then. (As the state of an unfinished task, not as blocked:
            -- the plan then stays on the primary key rather than on the partial
            -- index of blocked tasks.)
            UPDATE omnispindle.tasks t
            SET pending_dependencies = t.pending_dependencies - c.done,
                state = CASE WHEN t.pending_dependencies = c.done
                             THEN 'pending' ELSE 'blocked' END::omnispindle.task_state,
                -- Due once ready, not before: a child left blocked keeps every
                -- indexed column, so that its row is rewritten on its page (HOT)
                -- and a fan-in's countdowns leave no trail of index entries.
                run_after = CASE WHEN t.pending_dependencies = c.done
                                 THEN greatest(t.run_after, now()) ELSE t.run_after END
            FROM counted c
            WHERE t.id = c.task_id AND c.done > 0
              AND t.state NOT IN ('succeeded', 'failed', 'cancelled');
        ELSIF children = 2 THEN
            hand_worker := (hand ->> 'worker')::uuid;
            hand_types := ARRAY(SELECT jsonb_array_elements_text(hand -> 'types'));
            hand_capabilities := ARRAY(SELECT jsonb_array_elements_text(hand -> 'capabilities'));
            walks := CASE WHEN hand ->> 'after_id' IS NULL
                          THEN ARRAY[-1000, 1000, 0, 1, 0, 0, 1, 0, 0]
                          ELSE ARRAY[(hand ->> 'after_priority')::integer + 1, 1000, 0,
                                     (hand ->> 'after_priority')::integer,
                                     (hand ->> 'after_priority')::integer,
                                     (hand ->> 'after_id')::bigint,
                                     -1000, (hand ->> 'after_priority')::integer - 1, 0] END;
            WITH finished_parents AS (
                SELECT d.task_id,
                       count(*) FILTER (WHERE d.depends_on = ANY (succeeded))::integer AS ok,
                       count(*)::integer AS finished
                FROM omnispindle.task_dependencies d
                WHERE d.depends_on = ANY (coalesce(succeeded, '{}') || coalesce(broken, '{}'))
                GROUP BY d.task_id
            ), counted AS (
                SELECT f.task_id, c.*,
                       CASE WHEN c.allow_failed_dependencies THEN f.finished ELSE f.ok END AS done
                FROM finished_parents f,
                     LATERAL (SELECT t.allow_failed_dependencies, t.pending_dependencies, t.priority,
                                     t.task_type, t.required_capabilities, t.run_after,
                                     t.attempts < t.max_attempts AS may_start,
                                     pg_column_size(t.parameters) AS size
                              FROM omnispindle.tasks t
                              WHERE t.id = f.task_id AND t.state = 'blocked' OFFSET 0) c
            ), offered AS (
                -- The children made ready that the worker's claim would take, by
                -- the test of its walks, in the walks' order, up to its free slots
                -- and its budget of parameters (the first always fits, as in
                -- claim_tasks). Not when any of the worker's types has limits or a
                -- strategy: their passes come before the walks and would take the
                -- slots first. The reads past the first tests run only for a child
                -- made ready.
                SELECT o.task_id, o.walk, o.priority, o.size
                FROM (SELECT c.task_id, c.priority, c.size, w.walk,
                             sum(c.size) OVER (ORDER BY w.walk, c.priority DESC, c.task_id
                                               ROWS UNBOUNDED PRECEDING) AS upto
                      FROM counted c,
                           -- Which walk reaches the child: none behind the cursor.
                           LATERAL (SELECT CASE WHEN c.priority BETWEEN walks[1] AND walks[2]
                                                     AND c.task_id > walks[3] THEN 1
                                                WHEN c.priority BETWEEN walks[4] AND walks[5]
                                                     AND c.task_id > walks[6] THEN 2
                                                WHEN c.priority BETWEEN walks[7] AND walks[8]
                                                     AND c.task_id > walks[9] THEN 3 END AS walk) w
                      WHERE w.walk IS NOT NULL
                        AND c.pending_dependencies = c.done AND c.may_start
                        -- Due once ready: its run_after becomes at least now.
                        AND c.run_after <= now()
                        AND c.task_type = ANY (hand_types)
                        AND c.required_capabilities <@ hand_capabilities
                        -- Asked with the run_after it gets once ready: now.
                        AND (c.required_capabilities = '{}'
                             OR NOT omnispindle.left_to_a_narrower_worker(
                                 c.task_type, c.required_capabilities, now(),
                                 (SELECT omnispindle.free_narrower_workers(
                                      hand_types, hand_capabilities, hand_worker))))
                        AND c.task_type <> ALL (ARRAY(SELECT p.task_type
                                                      FROM omnispindle.paused_task_types p))
                        AND NOT EXISTS (SELECT FROM omnispindle.task_type_limits l
                                        WHERE l.task_type = ANY (hand_types))
                        AND NOT EXISTS (SELECT FROM omnispindle.task_type_strategies g
                                        WHERE g.task_type = ANY (hand_types))
                      ORDER BY w.walk, c.priority DESC, c.task_id
                      LIMIT (hand ->> 'room')::integer) o
                WHERE o.upto - o.size < (hand ->> 'budget')::bigint
            ), head AS MATERIALIZED (
                -- The first ready task the worker's claim would take. Run only
                -- when a child is offered.
                SELECT * FROM omnispindle.first_ready_task(hand_types, hand_capabilities,
                                                           hand_worker, walks)
            ), handing AS (
                -- The children that come before it in the walks' order.
                SELECT o.task_id FROM offered o
                WHERE NOT EXISTS (SELECT FROM head h
                                  WHERE (h.walk, -h.priority, h.id)
                                        < (o.walk, -o.priority, o.task_id))
            ), counted_down AS (
                -- A child that changed since counted read it (cancelled, or
                -- waiting again for a retried parent, by a transaction committed
                -- while this one waited for its row) is read again by the update:
                -- one finished meanwhile is left alone, and the others count down
                -- from what they hold then, and start only if that makes them
                -- ready. (As the state of an unfinished task, not as blocked: the
                -- plan then stays on the primary key rather than on the partial
                -- index of blocked tasks.) A child handed over starts as
                -- claim_tasks starts a task.
                UPDATE omnispindle.tasks t
                SET pending_dependencies = t.pending_dependencies - c.done,
                    state = CASE WHEN t.pending_dependencies <> c.done THEN 'blocked'
                                 WHEN h.task_id IS NOT NULL THEN 'running'
                                 ELSE 'pending' END::omnispindle.task_state,
                    -- Due once ready, not before (HOT, as in the plain countdown).
                    run_after = CASE WHEN t.pending_dependencies = c.done
                                     THEN greatest(t.run_after, now()) ELSE t.run_after END,
                    attempts = t.attempts + (h.task_id IS NOT NULL
                                             AND t.pending_dependencies = c.done)::integer,
                    worker_id = CASE WHEN h.task_id IS NOT NULL AND t.pending_dependencies = c.done
                                     THEN hand_worker ELSE t.worker_id END,
                    lease_token = CASE WHEN h.task_id IS NOT NULL AND t.pending_dependencies = c.done
                                       THEN gen_random_uuid() ELSE t.lease_token END,
                    lease_expires_at = CASE WHEN h.task_id IS NOT NULL
                                                 AND t.pending_dependencies = c.done
                                            THEN now() + make_interval(
                                                secs => LEAST((hand ->> 'lease')::double precision,
                                                              t.timeout_seconds))
                                            ELSE t.lease_expires_at END,
                    started_at = CASE WHEN h.task_id IS NOT NULL AND t.pending_dependencies = c.done
                                      THEN now() ELSE t.started_at END
                FROM counted c
                LEFT JOIN handing h ON h.task_id = c.task_id
                WHERE t.id = c.task_id AND c.done > 0
                  AND t.state NOT IN ('succeeded', 'failed', 'cancelled')
                RETURNING t.id, t.state, c.size
            )
            SELECT array_agg(x.id), sum(x.size),
                   -- Read only when a child was handed over, and then already at hand.
                   CASE WHEN count(*) > 0 THEN NOT EXISTS (SELECT FROM head) END
            INTO handed, handed_bytes, none_ready
            FROM counted_down x WHERE x.state = 'running';
            IF handed IS NOT NULL THEN
                -- What the step claims next has the rest of its slots and budget.
                -- One countdown per step hands over: the step's results are one
                -- update, and a cascade's nested countdown is a plain one.
                PERFORM set_config('omnispindle_step.hand_to', (hand || jsonb_build_object(
                    'room', (hand ->> 'room')::integer - cardinality(handed),
                    'budget', (hand ->> 'budget')::bigint - handed_bytes,
                    'handed', handed, 'none_ready', none_ready))::text, true);
            END IF;
        END IF;
    END IF;

    IF broken IS NOT NULL THEN
        -- Everything downstream of a failure or cancellation is cancelled, up
        -- to (not including) the children that allow failed dependencies. The
        -- walk goes through unfinished tasks only: one cancelled already had
        -- its own cascade, such as those this update cancels, whose nested
        -- run of this trigger would otherwise walk the whole chain below each
        -- of them again (a pair per task and ancestor: quadratic in a chain).
        WITH RECURSIVE doomed (id, ancestor) AS (
            SELECT d.task_id, d.depends_on
            FROM omnispindle.task_dependencies d
            WHERE d.depends_on = ANY (broken)
              AND (SELECT c.state IN ('blocked', 'pending') AND NOT c.allow_failed_dependencies
                   FROM omnispindle.tasks c WHERE c.id = d.task_id)
            UNION
            -- Each level's edges by key: as a join, the generic plan merged the
            -- level with every edge of the table, read whole at each level (a
            -- cancel at the head of a chain of 300 took 6 s among 8,000 edges).
            SELECT d.task_id, x.ancestor
            FROM doomed x
            CROSS JOIN LATERAL (SELECT e.task_id FROM omnispindle.task_dependencies e
                                WHERE e.depends_on = x.id OFFSET 0) d
            WHERE (SELECT c.state IN ('blocked', 'pending') AND NOT c.allow_failed_dependencies
                   FROM omnispindle.tasks c WHERE c.id = d.task_id)
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

    IF became_pending IS NOT NULL THEN
        SELECT bool_or(run_after <= now()), min(run_after) FILTER (WHERE run_after > now())
        INTO any_ready, first_later
        FROM new_rows WHERE state = 'pending';
    END IF;
    IF any_ready THEN
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
    -- Tasks pending for later (a retry after its backoff, a delayed child
    -- whose parents finished) are announced with the time the first is due,
    -- as notify_inserted announces submissions: otherwise only the worker that
    -- stored a retry woke for it, and the others a poll interval late.
    IF first_later IS NOT NULL THEN
        PERFORM pg_notify('omnispindle_ready', extract(epoch FROM first_later)::text);
    END IF;

    -- The notice names the tasks this statement finished, so that a wait
    -- wakes for its own tasks only (one naming none wakes every wait): more
    -- than 400 ids of up to 19 digits would not fit in its 8,000 bytes.
    IF succeeded IS NOT NULL OR broken IS NOT NULL THEN
        PERFORM pg_notify('omnispindle_finished',
                          CASE WHEN cardinality(succeeded || broken) <= 400
                               THEN array_to_string(succeeded || broken, ',') ELSE '' END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_after_update
    AFTER UPDATE ON omnispindle.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION omnispindle.after_tasks_update();

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
    p_existing bigint[],
    p_group_keys text[] DEFAULT NULL
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
                    p_trace_contexts, p_group_keys)
             WITH ORDINALITY AS s(task_type, parameters, priority, max_attempts,
                                  retry_backoff, timeout_seconds, caps, deps, entry_deps,
                                  tolerant, run_after, idempotency_key, trace_context,
                                  group_key, ord)
    ), inserted AS (
        -- Identities are drawn in this ORDER BY, so the n-th smallest new id
        -- belongs to the n-th inserted entry.
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, allow_failed_dependencies,
                                       state, pending_dependencies, run_after,
                                       idempotency_key, trace_context, group_key)
        SELECT task_type, parameters, priority, max_attempts, retry_backoff,
               timeout_seconds,
               ARRAY(SELECT jsonb_array_elements_text(caps)),
               tolerant,
               CASE WHEN unfinished > 0 THEN 'blocked' ELSE 'pending' END::omnispindle.task_state,
               unfinished, coalesce(run_after, now()), idempotency_key, trace_context,
               group_key
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
-- idempotency_keys, trace_contexts and group_keys may be NULL, or hold NULLs.
-- An entry whose idempotency key belongs to an unfinished task yields that task,
-- which the entries depending on it wait for as for a task named by id.
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
    by_id jsonb[];
    by_entry jsonb[];
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
    -- different orders may deadlock instead: the one chosen looks again too,
    -- once the other has inserted the keys. A look is lost only to a
    -- submitter that committed a task with the key, and it can take several
    -- while workers finish those tasks as fast as they come: five, then an
    -- error, failed 4 submits in 10,000 with 12 threads on 3 keys.
    FOR look IN 1..50 LOOP
        -- The unfinished tasks holding the batch's keys, by position, held as
        -- the parents named by id are (KEY SHARE), so that none is deleted
        -- before the dependents' edges to it commit. Under a REPEATABLE READ or
        -- SERIALIZABLE snapshot taken before such a task committed, it stays
        -- invisible here and the insert fails with a unique violation, which
        -- the caller answers by retrying its transaction.
        SELECT array_agg(h.id ORDER BY k.ord)
        INTO existing
        FROM unnest(p_idempotency_keys) WITH ORDINALITY AS k(key, ord)
        LEFT JOIN LATERAL (SELECT t.id FROM omnispindle.tasks t
                           WHERE t.idempotency_key = k.key
                             AND t.state IN ('blocked', 'pending', 'running')
                           FOR KEY SHARE) AS h ON true;
        by_id := p_dependencies;
        by_entry := p_entry_dependencies;
        IF array_remove(existing, NULL) <> '{}' THEN
            -- A task reused is a parent as one named by id is: it may have
            -- finished since it was looked up (the lock holds its row, not its
            -- state), and one failed or cancelled refuses the new entries that
            -- need it.
            SELECT t.id, t.state INTO broken
            FROM unnest(p_entry_dependencies, p_allow_failed)
                     WITH ORDINALITY AS s(entry_deps, tolerant, ord),
                 jsonb_array_elements_text(s.entry_deps) AS e(value)
            JOIN omnispindle.tasks t ON t.id = existing[e.value::integer]
            WHERE existing[s.ord] IS NULL AND NOT s.tolerant
              AND t.state IN ('failed', 'cancelled')
            ORDER BY t.id LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'dependency task % is %: its dependents could never run',
                    broken.id, broken.state
                    USING ERRCODE = 'OS003';
            END IF;
            -- The entries that depend on one name its task by id instead, so
            -- that the insert counts it by its state, done once it succeeded
            -- (or failed or was cancelled, for a dependent that allows it).
            SELECT array_agg(coalesce(s.deps, '[]') || r.held ORDER BY s.ord),
                   array_agg(r.fresh ORDER BY s.ord)
            INTO by_id, by_entry
            FROM unnest(p_dependencies, p_entry_dependencies)
                     WITH ORDINALITY AS s(deps, entry_deps, ord)
            CROSS JOIN LATERAL (
                SELECT coalesce(jsonb_agg(existing[e.value::integer])
                                    FILTER (WHERE existing[e.value::integer] IS NOT NULL),
                                '[]') AS held,
                       coalesce(jsonb_agg(e.value)
                                    FILTER (WHERE existing[e.value::integer] IS NULL),
                                '[]') AS fresh
                FROM jsonb_array_elements(s.entry_deps) AS e(value)
            ) AS r;
        END IF;
        BEGIN
            ids := omnispindle.insert_tasks(
                p_task_types, p_parameters, p_priorities, p_max_attempts, p_retry_backoffs,
                p_timeouts, p_required_capabilities, by_id, by_entry,
                p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, existing,
                p_group_keys);
            RETURN QUERY SELECT i FROM unnest(ids) AS i;
            RETURN;
        EXCEPTION WHEN unique_violation OR deadlock_detected OR serialization_failure THEN
            -- Under a snapshot fixed for the transaction, looking again sees nothing new.
            IF look = 50 OR current_setting('transaction_isolation') <> 'read committed' THEN
                -- A deadlock's victim was never told a key is taken: say what
                -- the unique violation would have said (OS008 is that error).
                IF SQLSTATE = '40P01' THEN
                    RAISE EXCEPTION 'a transaction submitting the same idempotency keys in '
                                    'another order met this one in a deadlock; retry the '
                                    'transaction'
                        USING ERRCODE = 'OS008';
                END IF;
                -- Nor was a serializable one that Postgres refused where another
                -- transaction inserted the key: the same race, another error.
                IF SQLSTATE = '40001' THEN
                    RAISE EXCEPTION 'a transaction submitting the same idempotency keys ran '
                                    'alongside this serializable one, which cannot be '
                                    'serialized with it; retry the transaction'
                        USING ERRCODE = 'OS008', DETAIL = SQLERRM;
                END IF;
                RAISE;
            END IF;
        END;
        -- No lock to look again one at a time: a row lock is held until the
        -- caller's transaction ends, and one held by a caller's open
        -- transaction kept every other submitter that lost a race, on any
        -- key, waiting for it until its lock_timeout.
    END LOOP;
END
$$;

-- Inserts a batch whose dependencies are all entries of itself (a fan-out, a
-- chain) in one statement, from the plain bulk insert's JSON document: an
-- object may also name its parents by their 0-based positions in the batch
-- ("after") and allow them to fail ("allow_failed"). Every parent is new, so
-- none can be missing or finished and nothing needs a lock: a task with
-- parents starts blocked on them all. The caller checks for cycles, as for
-- submit_tasks; a position that names no other entry is refused. Returns the
-- new ids as runs of consecutive ids (the n-th smallest is the n-th entry's)
-- and records them under p_submission, if given. Unlike submit_tasks, it
-- runs no PL/pgSQL per entry.
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

-- Cancels one task: a blocked or pending one at once (its descendants follow
-- through the trigger); a running one gets a request that its worker sees
-- through a notification or its next heartbeat; a finished one is left as it
-- is. Returns the state after the call and whether anything changed.
CREATE FUNCTION omnispindle.cancel_task(p_id bigint, p_reason text)
RETURNS TABLE (state text, changed boolean)
LANGUAGE plpgsql
AS $$
DECLARE
    current omnispindle.task_state;
BEGIN
    SELECT t.state INTO current FROM omnispindle.tasks t WHERE t.id = p_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no task with id %', p_id USING ERRCODE = 'OS004';
    END IF;
    IF current IN ('blocked', 'pending') THEN
        UPDATE omnispindle.tasks t
        SET state = 'cancelled', finished_at = now(), cancel_reason = p_reason
        WHERE t.id = p_id;
        RETURN QUERY SELECT 'cancelled'::text, true;
    ELSIF current = 'running' THEN
        UPDATE omnispindle.tasks t
        SET cancel_requested_at = coalesce(t.cancel_requested_at, now()),
            cancel_reason = coalesce(t.cancel_reason, p_reason)
        WHERE t.id = p_id;
        PERFORM pg_notify('omnispindle_cancel', p_id::text);
        RETURN QUERY SELECT 'running'::text, true;
    ELSE
        RETURN QUERY SELECT current::text, false;
    END IF;
END
$$;

-- Runs failed tasks again, all or nothing: each goes back to pending now, with
-- one more attempt if it had none left; its error history stays. Every task is
-- locked (in id order) and checked before any changes. With p_with_dependents,
-- the tasks that a retried task's failure cancelled (and theirs, transitively)
-- wait for it again, unless another of their dependencies failed or was
-- cancelled for another reason. They are brought back before the tasks
-- retried change: bringing them back may wait for another dependency's end
-- (see revive_dependents), and the update of the tasks has its trigger count
-- up their children that allow failed dependencies, which that end's
-- countdown may be waiting to write; waiting after the update could deadlock.
-- Returns one row per retried task, in the order given, with the dependents
-- it brought back.
CREATE FUNCTION omnispindle.retry_tasks(p_ids bigint[], p_with_dependents boolean DEFAULT false)
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

    -- The first task, in the order given, that is not failed, that has used
    -- the 101 attempts a task may have (max_retries 100: another would break
    -- tasks_max_attempts_range), or whose idempotency key another unfinished
    -- task (or an earlier one of these) holds.
    SELECT r.* INTO refused FROM (
        SELECT u.ord, t.id, t.state, t.attempts, t.idempotency_key AS key,
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
    WHERE r.state <> 'failed' OR r.attempts >= 101 OR r.holder IS NOT NULL
    ORDER BY r.ord LIMIT 1;
    IF FOUND AND refused.state <> 'failed' THEN
        RAISE EXCEPTION 'task % is %; only failed tasks can be retried', refused.id, refused.state
            USING ERRCODE = 'OS006';
    ELSIF FOUND AND refused.attempts >= 101 THEN
        RAISE EXCEPTION 'task % has used all % attempts a task may have; submit it again as '
                        'a new task', refused.id, refused.attempts
            USING ERRCODE = 'OS006';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'task %''s idempotency key ''%'' is held by unfinished task %; '
                        'it cannot run twice at once', refused.id, refused.key, refused.holder
            USING ERRCODE = 'OS006';
    END IF;

    revived := '{}';
    IF p_with_dependents THEN
        revived := omnispindle.revive_dependents(p_ids);
    END IF;

    -- The state machine allows failed -> pending only with an attempt left.
    UPDATE omnispindle.tasks t
    SET state = 'pending', max_attempts = greatest(t.max_attempts, t.attempts + 1),
        finished_at = NULL, run_after = now()
    WHERE t.id = ANY (p_ids);

    RETURN QUERY
    SELECT t.id, t.state::text, t.attempts, t.max_attempts,
           coalesce((SELECT array_agg(r.id ORDER BY r.id)
                     FROM unnest(revived) AS r(id)
                     WHERE r.id IN (SELECT x.task_id FROM omnispindle.dependents_of(t.id) x)),
                    '{}')
    FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
    JOIN omnispindle.tasks t ON t.id = u.id
    ORDER BY u.ord;
END
$$;

-- Every task downstream of p_id, following dependency edges.
CREATE FUNCTION omnispindle.dependents_of(p_id bigint)
RETURNS TABLE (task_id bigint)
LANGUAGE sql
STABLE
AS $$
    WITH RECURSIVE below (id) AS (
        SELECT d.task_id FROM omnispindle.task_dependencies d WHERE d.depends_on = p_id
        UNION
        -- Each level's edges by key: a join was free to read every edge of the
        -- table at each level.
        SELECT d.task_id FROM below b
        CROSS JOIN LATERAL (SELECT e.task_id FROM omnispindle.task_dependencies e
                            WHERE e.depends_on = b.id OFFSET 0) d
    )
    SELECT id FROM below;
$$;

-- Brings back the tasks cancelled because one of p_ids failed (and those
-- cancelled because of them): blocked again, waiting for every dependency that
-- has not succeeded. One whose other dependency failed or was cancelled for
-- another reason could never run, and stays cancelled. Grows the set until
-- nothing more qualifies, since a task may wait on several of the set.
-- p_ids are locked by the caller. The tasks found and their unfinished
-- dependencies are locked (in id order) and the set is found again, until
-- all that it stands on is locked: a dependency's end then waits for this
-- transaction, or this one for it and reads it. Read with the statement's
-- snapshot alone, a dependency that failed or succeeded while this ran, or
-- before it committed, went unseen, and that dependency's cascade or
-- countdown, which read the task as cancelled, left it alone: it stayed
-- blocked for a failed dependency until the sweeper cancelled it, or waited
-- for one that had succeeded.
CREATE FUNCTION omnispindle.revive_dependents(p_ids bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
-- Generic plans: a custom plan, made again at each round, folded the growing
-- set in as a constant and took longer to make as it grew (a retry of a chain
-- of 2,000 took 3.2 s, and 0.2 s with generic plans).
SET plan_cache_mode = force_generic_plan
-- A round's generic plan can cost past jit_above_cost: JIT then compiled it
-- afresh at every round, one per link of a chain (2,000 links took 55 s).
SET jit = off
AS $$
DECLARE
    causes text[];
    revived bigint[];
    more bigint[];
    locked bigint[] := p_ids;
    unlocked bigint[];
    -- The tasks whose dependents the next round looks at: those the last round
    -- found. A task waits for the last of its dependencies in the set, so it
    -- is found when that one is; reading the dependents of the whole set at
    -- every round made a chain's retry quadratic in its length.
    frontier bigint[];
    clash record;
BEGIN
    SELECT array_agg(format('dependency %s failed', i)) INTO causes FROM unnest(p_ids) AS i;
    LOOP
        revived := '{}';
        frontier := p_ids;
        LOOP
            -- From the frontier's edges, each by key: a plan free to start from
            -- the cancelled tasks read every task at every round.
            SELECT array_agg(DISTINCT c.id) INTO more
            FROM unnest(frontier) AS f(id)
            CROSS JOIN LATERAL (SELECT d.task_id FROM omnispindle.task_dependencies d
                                WHERE d.depends_on = f.id OFFSET 0) d
            CROSS JOIN LATERAL (SELECT c.id FROM omnispindle.tasks c
                                WHERE c.id = d.task_id
                                  AND c.state = 'cancelled' AND c.cancel_reason = ANY (causes)
                                  AND NOT c.id = ANY (revived)
                                OFFSET 0) c
            -- A subplan per candidate (OFFSET 0): as an anti-join, a plan made
            -- once the set was large read every edge for each candidate.
            WHERE NOT EXISTS (
                  SELECT 1 FROM omnispindle.task_dependencies p
                  JOIN omnispindle.tasks pt ON pt.id = p.depends_on
                  WHERE p.task_id = c.id AND pt.state IN ('failed', 'cancelled')
                    AND NOT pt.id = ANY (p_ids || revived)
                  OFFSET 0);
            EXIT WHEN more IS NULL;
            revived := revived || more;
            frontier := more;
        END LOOP;

        SELECT array_agg(x.id) INTO unlocked
        FROM (SELECT r.id FROM unnest(revived) AS r(id)
              UNION
              SELECT p.depends_on FROM omnispindle.task_dependencies p
              JOIN omnispindle.tasks pt ON pt.id = p.depends_on
              WHERE p.task_id = ANY (revived)
                AND pt.state IN ('blocked', 'pending', 'running')) AS x
        WHERE NOT x.id = ANY (locked);
        EXIT WHEN unlocked IS NULL;
        PERFORM 1 FROM omnispindle.tasks t WHERE t.id = ANY (unlocked)
        ORDER BY t.id FOR NO KEY UPDATE;
        locked := locked || unlocked;
    END LOOP;

    -- A dependent brought back whose idempotency key an unfinished task holds,
    -- or a task this retry brings back too, would break the key's unique index.
    SELECT c.* INTO clash FROM (
        SELECT t.id, t.idempotency_key AS key,
               (SELECT h.id FROM omnispindle.tasks h
                WHERE h.idempotency_key = t.idempotency_key AND h.id <> t.id
                  AND h.state IN ('blocked', 'pending', 'running') LIMIT 1) AS holder,
               (SELECT o.id FROM omnispindle.tasks o
                WHERE o.id = ANY (p_ids || revived) AND o.id <> t.id
                  AND o.idempotency_key = t.idempotency_key
                ORDER BY o.id LIMIT 1) AS twin
        FROM omnispindle.tasks t
        WHERE t.id = ANY (revived) AND t.idempotency_key IS NOT NULL) AS c
    WHERE c.holder IS NOT NULL OR c.twin IS NOT NULL
    ORDER BY c.id LIMIT 1;
    IF FOUND AND clash.holder IS NOT NULL THEN
        RAISE EXCEPTION 'dependent task %''s idempotency key ''%'' is held by unfinished task %; '
                        'it cannot run twice at once: retry without its dependents',
                        clash.id, clash.key, clash.holder
            USING ERRCODE = 'OS006';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'dependent task %''s idempotency key ''%'' is also that of task %, '
                        'which this retry brings back too; they cannot run at once: retry '
                        'without its dependents', clash.id, clash.key, clash.twin
            USING ERRCODE = 'OS006';
    END IF;

    UPDATE omnispindle.tasks t
    SET state = 'blocked', finished_at = NULL, cancel_reason = NULL, run_after = now(),
        pending_dependencies = (SELECT count(*) FROM omnispindle.task_dependencies p
                                JOIN omnispindle.tasks pt ON pt.id = p.depends_on
                                WHERE p.task_id = t.id AND pt.state <> 'succeeded')
    WHERE t.id = ANY (revived);
    RETURN revived;
END
$$;

-- One failed task run again (see retry_tasks), for psql and triggers:
-- SELECT * FROM omnispindle.retry_task(42, with_dependents => true);
CREATE FUNCTION omnispindle.retry_task(id bigint, with_dependents boolean DEFAULT false)
RETURNS TABLE (task_id bigint, state text, attempts integer, max_attempts integer,
               dependents bigint[])
LANGUAGE sql
AS $$
    SELECT * FROM omnispindle.retry_tasks(ARRAY[retry_task.id], retry_task.with_dependents);
$$;

-- Submits one task from SQL (psql, a trigger, another language) with named,
-- defaulted arguments, as submit_task does from Python; returns its id.
-- SELECT omnispindle.enqueue('email', '{"to": "ada@example.com"}', priority => 5);
-- NULL takes an argument's default. run_at, or delay from now, holds it back.
CREATE FUNCTION omnispindle.enqueue(
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
    IF enqueue.task_type IS NULL THEN
        RAISE EXCEPTION 'task_type must be a non-empty string, got NULL' USING ERRCODE = 'OS005';
    END IF;
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
    -- Past these, now() + delay is out of timestamptz's range, and within
    -- them tasks_run_after_range refuses what is due outside the years 1 to 9999.
    IF enqueue.delay > interval '10000 years' THEN
        RAISE EXCEPTION 'delay % reaches beyond the year 9999', enqueue.delay
            USING ERRCODE = 'OS005';
    END IF;
    IF enqueue.delay < interval '-4000 years' THEN
        RAISE EXCEPTION 'delay % reaches before the year 1', enqueue.delay
            USING ERRCODE = 'OS005';
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

-- A notification per task that partial results were added to, naming it, so
-- that a stream wakes for its own task's partials only (a transaction's
-- notifications with the same payload are sent once).
CREATE FUNCTION omnispindle.notify_streamed()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('omnispindle_stream', NEW.task_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER task_stream_notify
    AFTER INSERT ON omnispindle.task_stream
    FOR EACH ROW EXECUTE FUNCTION omnispindle.notify_streamed();

-- Tasks submitted on a cron schedule. Every worker may enqueue a tick; the
-- primary key of periodic_ticks lets exactly one of them succeed.
CREATE TABLE omnispindle.periodic_tasks (
    name                  text PRIMARY KEY,
    cron                  text NOT NULL,
    task_type             text NOT NULL,
    parameters            jsonb NOT NULL DEFAULT '{}',
    priority              integer NOT NULL DEFAULT 0,
    max_attempts          integer NOT NULL DEFAULT 4,
    retry_backoff         double precision NOT NULL DEFAULT 1.0,
    timeout_seconds       double precision,
    required_capabilities text[] NOT NULL DEFAULT '{}',
    enabled               boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- The IANA time zone a schedule's cron fields are read in.
    timezone              text NOT NULL DEFAULT 'UTC',
    CONSTRAINT periodic_tasks_name_valid CHECK (name <> '' AND length(name) <= 200),
    CONSTRAINT periodic_tasks_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT periodic_tasks_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT periodic_tasks_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 101),
    CONSTRAINT periodic_tasks_retry_backoff_range CHECK (retry_backoff >= 0),
    CONSTRAINT periodic_tasks_timeout_positive CHECK (timeout_seconds > 0),
    CONSTRAINT periodic_tasks_timezone_valid CHECK (timezone <> '' AND length(timezone) <= 200)
);

CREATE TABLE omnispindle.periodic_ticks (
    periodic_name text NOT NULL REFERENCES omnispindle.periodic_tasks (name) ON DELETE CASCADE,
    tick_at       timestamptz NOT NULL,
    task_id       bigint REFERENCES omnispindle.tasks (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (periodic_name, tick_at)
);

CREATE INDEX periodic_ticks_task_id_idx ON omnispindle.periodic_ticks (task_id);

-- Enqueues each given tick of each named schedule at most once, whoever asks
-- and however often: the tick's primary key decides, so no leader is needed.
-- Returns the ticks this call enqueued, with their new task ids. A tick from
-- before the schedule was last saved is not enqueued, nor one of a schedule
-- disabled: the caller read the schedule before this statement, and a save
-- committed meanwhile had an old tick run as a task of the new schedule.
CREATE FUNCTION omnispindle.enqueue_periodic_ticks(p_names text[], p_ticks timestamptz[])
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
        JOIN omnispindle.periodic_tasks p
          ON p.name = w.name AND p.enabled AND w.tick_at >= p.updated_at
        ORDER BY p.name, w.tick_at
        ON CONFLICT DO NOTHING
        RETURNING k.periodic_name, k.tick_at
    LOOP
        -- Read again, with a fresh snapshot: the insert above may have waited
        -- for another runner's uncommitted tick while a save committed.
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, state)
        SELECT p.task_type, p.parameters, p.priority, p.max_attempts, p.retry_backoff,
               p.timeout_seconds, p.required_capabilities, 'pending'
        FROM omnispindle.periodic_tasks p
        WHERE p.name = tick.periodic_name AND p.enabled AND tick.tick_at >= p.updated_at
        RETURNING id INTO new_id;
        -- Its tick stays taken, with no task: no one enqueues it again.
        CONTINUE WHEN new_id IS NULL;
        UPDATE omnispindle.periodic_ticks k SET task_id = new_id
        WHERE k.periodic_name = tick.periodic_name AND k.tick_at = tick.tick_at;
        periodic_name := tick.periodic_name;
        tick_at := tick.tick_at;
        task_id := new_id;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Views for people at a psql prompt. A lease past its expiry is one nothing
-- has swept yet: with every sweeper (and worker) gone, the count only grows.
CREATE VIEW omnispindle.queue_summary AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'blocked')   AS blocked,
       count(*) FILTER (WHERE state = 'pending')   AS pending,
       count(*) FILTER (WHERE state = 'running')   AS running,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'failed')    AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       now() - min(run_after) FILTER (WHERE state = 'pending' AND run_after <= now())
           AS oldest_ready_age,
       count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now())
           AS expired_leases,
       now() - min(lease_expires_at) FILTER (WHERE state = 'running'
                                              AND lease_expires_at < now())
           AS oldest_expired_lease_age
FROM omnispindle.tasks
GROUP BY task_type;

-- lost: an active worker that has not heartbeated for longer than its lease;
-- its tasks' leases have expired, and a sweeper will declare it dead.
CREATE VIEW omnispindle.worker_summary AS
SELECT w.id, w.name, w.host, w.pid, w.state, w.capabilities, w.concurrency,
       count(t.id) AS running_tasks,
       now() - w.last_heartbeat_at AS heartbeat_age,
       w.started_at, w.stopped_at,
       w.state = 'active'
           AND w.last_heartbeat_at
               < now() - make_interval(secs => coalesce(w.lease_timeout_seconds, 30))
           AS lost
FROM omnispindle.workers w
LEFT JOIN omnispindle.tasks t ON t.worker_id = w.id AND t.state = 'running'
GROUP BY w.id;

-- Schedules with their latest tick and the task it enqueued.
CREATE VIEW omnispindle.periodic_summary AS
SELECT p.name, p.cron, p.task_type, p.enabled, last.tick_at AS last_tick_at,
       last.task_id AS last_task_id, p.created_at, p.updated_at, p.timezone
FROM omnispindle.periodic_tasks p
LEFT JOIN LATERAL (SELECT k.tick_at, k.task_id FROM omnispindle.periodic_ticks k
                   WHERE k.periodic_name = p.name
                   ORDER BY k.tick_at DESC LIMIT 1) last ON true;

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

-- A live worker's heartbeats update its row and never make it again: deleted,
-- the worker would run on unseen by list_workers, worker_summary, the
-- dashboard and the capability checks. Refused, as a CHECK constraint
-- refuses a row; a worker silent for its lease (crashed) or stopped may go.
CREATE FUNCTION omnispindle.refuse_live_worker_delete()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '%', format('worker %s (%s) is alive: its last heartbeat was %s s ago',
                                OLD.name, OLD.id,
                                round(extract(epoch FROM now() - OLD.last_heartbeat_at)))
        USING ERRCODE = 'check_violation', CONSTRAINT = 'workers_live_kept',
              TABLE = TG_TABLE_NAME, SCHEMA = TG_TABLE_SCHEMA,
              HINT = 'stop it first (SIGTERM); the sweeper deletes its row a week after it '
                     'stops, or after it is declared dead';
END
$$;

CREATE TRIGGER workers_live_kept
    BEFORE DELETE ON omnispindle.workers
    FOR EACH ROW
    WHEN (OLD.state = 'active'
          AND OLD.last_heartbeat_at
              > now() - make_interval(secs => coalesce(OLD.lease_timeout_seconds, 30)))
    EXECUTE FUNCTION omnispindle.refuse_live_worker_delete();

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

-- A submitter waits for another's idempotency key for at most ten seconds,
-- then fails (lock_not_available) instead of hanging.
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[], text[])
    SET lock_timeout = '10s';

-- Ceilings on size, for every writer: a process may set its own limits lower
-- or up to these (omnispindle.set_limits), never beyond. A task's are among
-- the rules of tasks_check_request and tasks_check_outcome.
ALTER TABLE omnispindle.task_stream
    ADD CONSTRAINT task_stream_payload_size CHECK (pg_column_size(payload) <= 16777216) NOT VALID,
    ADD CONSTRAINT task_stream_length CHECK (seq <= 100000) NOT VALID;


-- Finished tasks per minute and task type, counted once by a maintenance
-- pass (omnispindle._maintenance.rollup, run by every sweeper) rather than by
-- a trigger: the claim and complete statements stay free of any shared
-- counter. A pass takes the one row of outcome_rollup FOR UPDATE SKIP LOCKED
-- (so two passes never count the same task), counts the tasks that finished
-- in [counted_until, now() - a settle lag) through tasks_finished_idx, adds
-- them here and moves counted_until to the end of that span, all in one
-- transaction. Pruning tasks leaves these rows as they are.
--
-- Known imprecision: finished_at is the start time of the transaction that
-- finished the task. A pass misses a task whose finishing transaction started
-- before the pass's span ends (now() - the settle lag, 5 s by default) but had
-- not committed when the pass read the tasks: only a finishing transaction
-- that stays open longer than the settle lag (a cancel_task inside a long
-- transaction of a caller's, say) can be missed, and it is then never counted.
CREATE TABLE omnispindle.outcome_minutes (
    minute    timestamptz NOT NULL,
    task_type text NOT NULL,
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    retried   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, task_type)
);

-- The watermark: every task that finished before counted_until is counted in
-- outcome_minutes (but see above), none after it. One row, always.
CREATE TABLE omnispindle.outcome_rollup (
    single        boolean PRIMARY KEY DEFAULT true CHECK (single),
    counted_until timestamptz NOT NULL
);
-- Nothing counted yet: the first pass starts at the hour the views show.
INSERT INTO omnispindle.outcome_rollup (counted_until) VALUES ('-infinity');

-- Finished tasks per minute and task type, by outcome, from the start of the
-- minute 59 minutes ago; a minute without any has no row. retried: finished
-- after more than one attempt, as task_metrics counts them. Minutes before the
-- watermark come from outcome_minutes; the tail after it (the last few
-- seconds, while sweepers run) is counted live from tasks_finished_idx.
--
-- The tail's lower bound is only known when the query runs, so Postgres
-- estimates it as a third of the table and would scan it all. Bounded above as
-- well (by a time no task has finished at yet), the range estimate is small
-- and the index is used: the tail is short whenever the passes keep up.
CREATE VIEW omnispindle.outcomes_per_minute AS
WITH bounds AS (
    SELECT date_trunc('minute', now()) - interval '59 minutes' AS first_minute,
           greatest(r.counted_until, date_trunc('minute', now()) - interval '59 minutes')
               AS counted_until
    FROM omnispindle.outcome_rollup r
), counted AS (
    SELECT o.minute, o.task_type, o.succeeded, o.failed, o.cancelled, o.retried
    FROM omnispindle.outcome_minutes o
    WHERE o.minute >= (SELECT first_minute FROM bounds)
    UNION ALL
    SELECT date_trunc('minute', t.finished_at), t.task_type,
           count(*) FILTER (WHERE t.state = 'succeeded'),
           count(*) FILTER (WHERE t.state = 'failed'),
           count(*) FILTER (WHERE t.state = 'cancelled'),
           count(*) FILTER (WHERE t.attempts > 1)
    FROM omnispindle.tasks t
    WHERE t.finished_at >= (SELECT counted_until FROM bounds)
      AND t.finished_at < now() + interval '1 day'
    GROUP BY 1, 2
)
SELECT minute, task_type,
       sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
       sum(cancelled)::bigint AS cancelled, sum(retried)::bigint AS retried
FROM counted
GROUP BY minute, task_type;

-- Unfinished tasks per task type, each state read through its own partial
-- index: unlike queue_summary it never reads a finished row, so its cost
-- follows the backlog, not the table. Columns as in queue_summary. Running
-- tasks are read from the table (their number is bounded by the workers'
-- slots): their lease expiry changes with every heartbeat, and an index
-- holding it would make heartbeats costlier.
CREATE VIEW omnispindle.unfinished_summary AS
SELECT task_type,
       sum(blocked)::bigint AS blocked,
       sum(pending)::bigint AS pending,
       sum(running)::bigint AS running,
       now() - min(oldest_ready) AS oldest_ready_age,
       sum(expired_leases)::bigint AS expired_leases,
       now() - min(oldest_expired_lease) AS oldest_expired_lease_age
FROM (
    SELECT task_type, count(*) AS blocked, 0 AS pending, 0 AS running,
           NULL::timestamptz AS oldest_ready, 0 AS expired_leases,
           NULL::timestamptz AS oldest_expired_lease
    FROM omnispindle.tasks
    WHERE state = 'blocked'
    GROUP BY task_type
    UNION ALL
    SELECT task_type, 0, count(*), 0, min(run_after) FILTER (WHERE run_after <= now()), 0, NULL
    FROM omnispindle.tasks
    WHERE state = 'pending'
    GROUP BY task_type
    UNION ALL
    SELECT task_type, 0, 0, count(*), NULL,
           count(*) FILTER (WHERE lease_expires_at < now()),
           min(lease_expires_at) FILTER (WHERE lease_expires_at < now())
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY task_type
) AS by_state
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
                AND p.proname IN ('submit_tasks', 'insert_linked_tasks', 'enqueue',
                                  'cancel_task', 'retry_tasks', 'retry_task')
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

-- Who runs each maintenance duty now ('sweep': the stale-lease sweeper, with
-- pruning and the rollup; 'schedule': the periodic ticks). Every worker
-- process can do both, and one at a time does each, so that a fleet's
-- maintenance does not grow with it: the process holding a duty's lease
-- renews it at each pass; the others read it once an interval and take it
-- when it lapses (a killed holder) or is given up (a stopped one). Only
-- worker roles may write it.
CREATE TABLE omnispindle.maintenance_leases (
    duty       text PRIMARY KEY,
    holder     uuid NOT NULL,
    host       text NOT NULL,
    pid        integer NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT maintenance_leases_duty_known CHECK (duty IN ('sweep', 'schedule'))
);

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

-- Task types no worker claims for now. A row here holds back the type's
-- pending tasks (claim_tasks skips them); running tasks finish as usual and
-- submitting still works: the tasks wait. Deleting the row (resume_task_type)
-- makes them claimable at once. Read it with plain SQL; change it through the
-- functions below, which check their arguments and wake the workers. As the
-- other functions that write for producers, they run with the owner's
-- rights (a producer gets no right on the table but SELECT) and a pinned
-- search path.
CREATE TABLE omnispindle.paused_task_types (
    task_type text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    reason    text,
    CONSTRAINT paused_task_types_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT paused_task_types_reason_valid CHECK (length(reason) <= 1000)
);

-- Pauses a task type: true if it was not paused already. Pausing a paused
-- type changes nothing, its first reason and time included. Once the
-- transaction commits, no claim that starts afterwards takes its tasks; a
-- claim already under way may still take some, which then run as any task
-- running at the pause does.
CREATE FUNCTION omnispindle.pause_task_type(task_type text, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pause_task_type.task_type IS NULL OR pause_task_type.task_type = ''
       OR length(pause_task_type.task_type) > 200 THEN
        RAISE EXCEPTION 'task_type must be a non-empty string of at most 200 characters'
            USING ERRCODE = 'OS005';
    END IF;
    IF length(pause_task_type.reason) > 1000 THEN
        RAISE EXCEPTION 'reason must be at most 1000 characters' USING ERRCODE = 'OS005';
    END IF;
    INSERT INTO omnispindle.paused_task_types AS p (task_type, reason)
    VALUES (pause_task_type.task_type, pause_task_type.reason)
    ON CONFLICT ON CONSTRAINT paused_task_types_pkey DO NOTHING;
    RETURN FOUND;
END
$$;

-- Resumes a paused task type: true if it was paused. Its ready tasks are
-- claimable as soon as the transaction commits, and the notification wakes
-- idle workers then, as a submission's does.
CREATE FUNCTION omnispindle.resume_task_type(task_type text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF resume_task_type.task_type IS NULL OR resume_task_type.task_type = '' THEN
        RAISE EXCEPTION 'task_type must be a non-empty string' USING ERRCODE = 'OS005';
    END IF;
    DELETE FROM omnispindle.paused_task_types p WHERE p.task_type = resume_task_type.task_type;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('omnispindle_ready', '');
    RETURN true;
END
$$;

-- Limits on a task type, global across every worker: at most max_running of
-- its tasks running at once, at most max_running_per_group of them in each
-- group (group_key, for a type claimed by fair share), at most
-- starts_per_second claims of them per second (a token bucket of burst tokens,
-- refilled continuously; tokens and refilled_at are the bucket as of the last
-- claim that took from it), and at most starts_per_second_per_group claims of
-- each group's per second (a bucket per group holding one second of starts,
-- at least 1: group_tokens, see group_tokens_at).
-- claim_tasks enforces both under a lock on the type's row, so no two claims
-- count the same room. A task held back by a limit stays pending and loses
-- no attempt. Read it with plain SQL (or limit_summary); change it through
-- the functions below, which check their arguments and wake the workers.
CREATE TABLE omnispindle.task_type_limits (
    task_type         text PRIMARY KEY,
    max_running       integer,
    starts_per_second double precision,
    max_running_per_group integer,
    starts_per_second_per_group double precision,
    group_tokens      jsonb NOT NULL DEFAULT '{}',
    burst             integer,
    tokens            double precision,
    refilled_at       timestamptz NOT NULL DEFAULT now(),
    set_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_type_limits_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT task_type_limits_max_running_range CHECK (max_running BETWEEN 1 AND 1000000),
    -- From 1e-9: below, a bucket's refill could underflow (see set_task_type_limit).
    CONSTRAINT task_type_limits_rate_range
        CHECK (starts_per_second >= 1e-9 AND starts_per_second <= 1000000),
    CONSTRAINT task_type_limits_burst_range CHECK (burst BETWEEN 1 AND 1000000),
    CONSTRAINT task_type_limits_per_group_range
        CHECK (max_running_per_group BETWEEN 1 AND 1000000),
    CONSTRAINT task_type_limits_group_rate_range
        CHECK (starts_per_second_per_group >= 1e-9 AND starts_per_second_per_group <= 1000000),
    -- A rate comes with its bucket, and a row limits something.
    CONSTRAINT task_type_limits_rate_has_bucket
        CHECK ((starts_per_second IS NULL) = (burst IS NULL)
               AND (burst IS NULL) = (tokens IS NULL)),
    CONSTRAINT task_type_limits_limit_something
        CHECK (max_running IS NOT NULL OR starts_per_second IS NOT NULL
               OR max_running_per_group IS NOT NULL
               OR starts_per_second_per_group IS NOT NULL)
);

-- Sets (or replaces) the limits of a task type; NULL leaves that limit out.
-- burst defaults to one second of starts (at least 1). A bucket that changes
-- keeps the tokens it had, up to its new burst. A limit per group needs the
-- fair strategy: by strict priority or aging, a group at its limit would hold
-- the others back wherever its tasks come first. Wakes the workers: a raised
-- limit may free held-back tasks.
CREATE FUNCTION omnispindle.set_task_type_limit(task_type text, max_running integer DEFAULT NULL,
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
    -- Below 1e-9 (a start in about 31 years) a bucket's refill, the rate times
    -- the seconds since, could underflow and fail every claim of the type.
    IF NOT (set_task_type_limit.starts_per_second >= 1e-9
            AND set_task_type_limit.starts_per_second <= 1000000) THEN
        RAISE EXCEPTION 'starts_per_second must be from 1e-9 to 1000000'
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
    IF NOT (set_task_type_limit.starts_per_second_per_group >= 1e-9
            AND set_task_type_limit.starts_per_second_per_group <= 1000000) THEN
        RAISE EXCEPTION 'starts_per_second_per_group must be from 1e-9 to 1000000'
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
            -- Or replaced while this waited for it (set to another strategy
            -- and back to fair by one transaction): the new row came after
            -- this statement's snapshot. A look with a fresh one finds it.
            PERFORM FROM omnispindle.task_type_strategies g
            WHERE g.task_type = set_task_type_limit.task_type AND g.strategy = 'fair'
            FOR SHARE;
        END IF;
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

-- Removes a task type's limits: true if it had any. Wakes the workers.
CREATE FUNCTION omnispindle.clear_task_type_limit(task_type text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF clear_task_type_limit.task_type IS NULL OR clear_task_type_limit.task_type = '' THEN
        RAISE EXCEPTION 'task_type must be a non-empty string' USING ERRCODE = 'OS005';
    END IF;
    DELETE FROM omnispindle.task_type_limits l
    WHERE l.task_type = clear_task_type_limit.task_type;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- 'limits' also tells workers to read the limits again, which pace their claims.
    PERFORM pg_notify('omnispindle_ready', 'limits');
    RETURN true;
END
$$;

-- How workers order a task type's ready tasks, when not by strict priority
-- then age (the default, which needs no row). 'aging': a task's effective
-- priority grows by one for every aging_seconds it has waited since it
-- became ready, so that a flood of higher priorities cannot keep it waiting
-- for ever. 'fair': fair share between the groups of a type's tasks (their
-- group_key, which the submitter sets: a tenant, a customer), so that one
-- group's flood cannot starve the others. A type with a strategy is claimed
-- in a pass of its own, before the walk over the other types (as a limited
-- type is). Change it through set_task_type_strategy, which checks its
-- arguments.
CREATE TABLE omnispindle.task_type_strategies (
    task_type     text PRIMARY KEY,
    strategy      text NOT NULL,
    aging_seconds double precision,
    set_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT task_type_strategies_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT task_type_strategies_strategy_known CHECK (strategy IN ('aging', 'fair')),
    CONSTRAINT task_type_strategies_aging_range
        CHECK ((strategy = 'aging') = (aging_seconds IS NOT NULL)
               AND aging_seconds >= 0.001 AND aging_seconds <= 1000000)
);

-- The group a task belongs to for fair share (a tenant, a customer): set by
-- its submitter, NULL for none. Claims of a type with the 'fair' strategy
-- find each group's first tasks through the index below, one probe per
-- group; it holds only pending tasks, as tasks_ready_idx does, and of those
-- only the ones not due later (see due_later below).
ALTER TABLE omnispindle.tasks ADD COLUMN group_key text;
ALTER TABLE omnispindle.tasks ADD COLUMN due_later boolean NOT NULL DEFAULT false;
CREATE INDEX tasks_group_ready_idx ON omnispindle.tasks (task_type, group_key, priority DESC, id)
    WHERE state = 'pending' AND NOT due_later;

-- Tasks due later. A task written to start more than ten seconds from now
-- (submitted with a delay, retried after a backoff, moved by hand) is marked
-- due_later, which keeps it out of tasks_group_ready_idx until it comes due.
-- The claims of a type with limits or a strategy, and a worker's walks of
-- one type, read that index from the top of a type's or a group's range:
-- without the mark, each claim stepped over every task there not due yet
-- (50,000 tasks due the next day, ahead in the order, took a drain of a
-- fair type from 20,800 tasks a second to 3,600). A claim first clears the
-- mark of its types' tasks that have come due (promote_due_tasks), through
-- the index below. run_after alone still says when a task may start: the
-- mark only says which index holds it. The check of run_after
-- (tasks_check_run_after) sets it.
CREATE INDEX tasks_due_later_idx ON omnispindle.tasks (task_type, run_after)
    WHERE state = 'pending' AND due_later;

-- Clears the mark of p_task_types' tasks due later that have come due, so
-- that claims find them in tasks_group_ready_idx: one probe of
-- tasks_due_later_idx per type when none has. Rows another claim is
-- clearing are passed over: that claim commits them. Every claim, and every
-- step that may hand a worker its next task (complete_and_claim), calls it
-- first.
CREATE FUNCTION omnispindle.promote_due_tasks(p_task_types text[], p_room integer)
RETURNS void
LANGUAGE plpgsql
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    due bigint[];
    cleared integer;
BEGIN
    -- Each type's range of tasks_due_later_idx, in its order: a plan made on
    -- an empty table took tasks_ready_idx for a list of types, and read every
    -- pending task. At most 1,000 of each type, the earliest due first (7 ms):
    -- clearing 20,000 come due at once took one claim 136 ms, while the other
    -- workers' claims passed over them and came back with nothing.
    due := ARRAY(SELECT d.id FROM unnest(p_task_types) w(task_type)
                 CROSS JOIN LATERAL (
                     SELECT r.id FROM omnispindle.tasks r
                     WHERE r.state = 'pending' AND r.due_later
                       AND r.task_type = w.task_type AND r.run_after <= now()
                     ORDER BY r.task_type, r.run_after
                     LIMIT 1000
                     FOR NO KEY UPDATE SKIP LOCKED) d);
    -- An UPDATE statement fires the update trigger even when it changes no
    -- row: it runs only when a task has come due.
    IF cardinality(due) > 0 THEN
        UPDATE omnispindle.tasks t SET due_later = false WHERE t.id = ANY (due);
        GET DIAGNOSTICS cleared = ROW_COUNT;
        -- More than the caller may take (p_room) are left for other workers,
        -- which slept through their due time if their claims came while
        -- these were being cleared: wake them at commit.
        IF cleared > p_room THEN
            PERFORM pg_notify('omnispindle_ready', '');
        END IF;
    END IF;
END
$$;

-- Whether no pending task of p_task_type has a group_key (the usual case),
-- of those not due later (see due_later): then tasks_group_ready_idx holds
-- the type's pending tasks in one range, in the ready index's order (see
-- claim_tasks). One probe of that index, in its
-- order: as an EXISTS, a generic plan made while the statistics saw group
-- keys walked the ready index over every pending task. It reads the type's
-- tasks with a group_key from the start: under a snapshot held since many of
-- them left the pending state, it steps over their entries until vacuum
-- removes them. PL/pgSQL keeps its plan for the session; an SQL function
-- would be planned afresh at every call (0.15 ms of a 1 ms claim).
CREATE FUNCTION omnispindle.ungrouped_type(p_task_type text)
RETURNS boolean
LANGUAGE plpgsql
STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN (SELECT r.group_key FROM omnispindle.tasks r
            WHERE r.state = 'pending' AND NOT r.due_later AND r.task_type = p_task_type
              AND r.group_key IS NOT NULL
            ORDER BY r.task_type, r.group_key LIMIT 1) IS NULL;
END
$$;

-- Whether a worker's walks of the ready tasks (see claim_tasks) may take
-- its task types from tasks_group_ready_idx instead of tasks_ready_idx: when
-- it has one type, and that type is ungrouped. That index holds each type's
-- tasks without a group_key apart from the others' and in the ready index's
-- order, so the walk meets no task of another type. Walking the ready index,
-- a worker of one type stepped over every pending task of other types at
-- higher priorities than its own: 49 ms a claim behind 200,000 of them. A
-- worker of several types walks each of them so past a backlog of the types
-- it holds back (see walked_by_type).
CREATE FUNCTION omnispindle.walks_one_type(p_task_types text[])
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    -- Its one type is p_task_types[1]: an array of other bounds walks the
    -- ready index.
    RETURN cardinality(p_task_types) = 1 AND array_lower(p_task_types, 1) = 1
           AND array_ndims(p_task_types) = 1
           AND omnispindle.ungrouped_type(p_task_types[1]);
END
$$;

-- The types a worker's walks of the ready tasks (see claim_tasks) take each
-- from its own range of tasks_group_ready_idx, which holds a type's tasks
-- without a group_key apart from the others' and in the ready index's order:
-- the worker's types not set apart (p_set_apart: limited, with a strategy, or
-- paused), once each, when every one of them is ungrouped, and, if there are
-- several, when a type set apart has pending tasks. Empty otherwise: the
-- walks then take tasks_ready_idx, which gives every type's tasks in one
-- order. Walking that index, a worker steps over every pending task ahead of
-- its own that it does not run: a claim of 8 by a worker of two types took
-- 32 ms behind 100,000 tasks of one of them held back by its running limit,
-- and 0.6 ms by type; of three types, 46 to 69 ms, and 0.62 to 0.67 ms by type.
-- A worker of several types still steps so over another worker's backlog.
CREATE FUNCTION omnispindle.walked_by_type(p_task_types text[], p_set_apart text[])
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    walked text[] := p_task_types;
BEGIN
    -- A worker with none of its types set apart, the usual case, reads
    -- nothing more than the probe of its one type, and one of several types
    -- nothing at all.
    IF cardinality(p_set_apart) > 0 THEN
        walked := ARRAY(SELECT DISTINCT t.task_type FROM unnest(p_task_types) t(task_type)
                        WHERE t.task_type IS NOT NULL AND t.task_type <> ALL (p_set_apart));
    END IF;
    IF cardinality(walked) > 1 THEN
        -- Several types, only past a backlog set apart: without one, the
        -- ready index gives them in order at less cost, above all while other
        -- workers claim the same tasks (claim_tasks). A backlog is sought
        -- from the end of its type's range: its first entries, of tasks just
        -- claimed, wait there until vacuum removes them (in a drain of a fair
        -- type, this statement read 1,271 buffers a call with the probe from
        -- the start, 619 from the end). Then each type walked must be
        -- ungrouped.
        RETURN CASE WHEN EXISTS (SELECT FROM unnest(p_set_apart) h(task_type)
                                 CROSS JOIN LATERAL (
                                     SELECT FROM omnispindle.tasks r
                                     WHERE r.state = 'pending' AND NOT r.due_later
                                       AND r.task_type = h.task_type
                                     ORDER BY r.task_type DESC, r.group_key DESC, r.priority,
                                              r.id DESC
                                     LIMIT 1) b)
                         AND NOT EXISTS (SELECT FROM unnest(walked) t(task_type)
                                         WHERE NOT omnispindle.ungrouped_type(t.task_type))
                    THEN walked ELSE '{}' END;
    END IF;
    RETURN CASE WHEN omnispindle.walks_one_type(walked) THEN walked ELSE '{}' END;
END
$$;

-- Sets the strategy of a task type: 'priority' (the default: strict priority,
-- then age), 'aging' with aging_seconds, the wait that raises a task's
-- effective priority by one, or 'fair'. Wakes the workers.
CREATE FUNCTION omnispindle.set_task_type_strategy(task_type text, strategy text,
                                                   aging_seconds double precision DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF set_task_type_strategy.task_type IS NULL OR set_task_type_strategy.task_type = ''
       OR length(set_task_type_strategy.task_type) > 200 THEN
        RAISE EXCEPTION 'task_type must be a non-empty string of at most 200 characters'
            USING ERRCODE = 'OS005';
    END IF;
    IF set_task_type_strategy.strategy IS NULL
       OR set_task_type_strategy.strategy NOT IN ('priority', 'aging', 'fair') THEN
        RAISE EXCEPTION '%', format('unknown strategy %L: give priority, aging or fair',
                                    set_task_type_strategy.strategy)
            USING ERRCODE = 'OS005';
    END IF;
    IF (set_task_type_strategy.strategy = 'aging')
       IS DISTINCT FROM (set_task_type_strategy.aging_seconds IS NOT NULL) THEN
        RAISE EXCEPTION 'aging_seconds goes with the aging strategy, and only with it'
            USING ERRCODE = 'OS005';
    END IF;
    -- NaN compares above every number, so this refuses it and infinity too.
    IF NOT (set_task_type_strategy.aging_seconds >= 0.001
            AND set_task_type_strategy.aging_seconds <= 1000000) THEN
        RAISE EXCEPTION 'aging_seconds must be from 0.001 to 1000000'
            USING ERRCODE = 'OS005';
    END IF;
    -- The type's row first, then its limits: a concurrent set_task_type_limit
    -- waits for this one before it relies on the fair strategy.
    PERFORM FROM omnispindle.task_type_strategies s
    WHERE s.task_type = set_task_type_strategy.task_type
    FOR UPDATE;
    IF set_task_type_strategy.strategy <> 'fair'
       AND EXISTS (SELECT FROM omnispindle.task_type_limits l
                   WHERE l.task_type = set_task_type_strategy.task_type
                     AND (l.max_running_per_group IS NOT NULL
                          OR l.starts_per_second_per_group IS NOT NULL)) THEN
        RAISE EXCEPTION 'the type has a limit per group (max_running_per_group, '
                        'starts_per_second_per_group), which needs the fair strategy: '
                        'set its limits without it first' USING ERRCODE = 'OS005';
    END IF;
    IF set_task_type_strategy.strategy = 'priority' THEN
        DELETE FROM omnispindle.task_type_strategies s
        WHERE s.task_type = set_task_type_strategy.task_type;
    ELSE
        INSERT INTO omnispindle.task_type_strategies AS s (task_type, strategy, aging_seconds)
        VALUES (set_task_type_strategy.task_type, set_task_type_strategy.strategy,
                set_task_type_strategy.aging_seconds)
        ON CONFLICT ON CONSTRAINT task_type_strategies_pkey DO UPDATE
        SET strategy = excluded.strategy, aging_seconds = excluded.aging_seconds, set_at = now();
    END IF;
    -- 'limits': workers read which of their types are claimed apart again.
    PERFORM pg_notify('omnispindle_ready', 'limits');
END
$$;

-- Each limited type with what holds it now: its running tasks, the tokens
-- its bucket has, its ready tasks, and how many of them a limit holds back
-- (all of them while the type is at its running limit or out of tokens, else
-- those of the groups at their own limit).
CREATE VIEW omnispindle.task_type_limit_summary AS
SELECT l.task_type, l.max_running, r.running, l.starts_per_second, l.burst,
       b.tokens, q.ready,
       CASE WHEN r.running >= l.max_running OR b.tokens < 1 THEN q.ready
            ELSE coalesce(g.held_back, 0) END AS held_back,
       l.max_running_per_group, l.starts_per_second_per_group
FROM omnispindle.task_type_limits l
CROSS JOIN LATERAL (SELECT count(*) AS running FROM omnispindle.tasks t
                    WHERE t.state = 'running' AND t.task_type = l.task_type) r
-- The type's ready tasks, from each index that holds them: tasks_group_ready_idx
-- the ones not due later, tasks_due_later_idx the others (see due_later).
CROSS JOIN LATERAL (SELECT count(*) AS ready
                    FROM (SELECT FROM omnispindle.tasks t
                          WHERE t.state = 'pending' AND NOT t.due_later
                            AND t.task_type = l.task_type AND t.run_after <= now()
                          UNION ALL
                          SELECT FROM omnispindle.tasks t
                          WHERE t.state = 'pending' AND t.due_later
                            AND t.task_type = l.task_type AND t.run_after <= now()) r) q
CROSS JOIN LATERAL (SELECT least(l.burst, l.tokens + l.starts_per_second
                                 * extract(epoch FROM clock_timestamp() - l.refilled_at))
                           AS tokens) b
CROSS JOIN LATERAL (SELECT sum(p.ready) AS held_back
                    FROM (SELECT r.group_key, count(*) AS ready
                          FROM (SELECT t.group_key FROM omnispindle.tasks t
                                WHERE l.max_running_per_group IS NOT NULL
                                  AND t.state = 'pending' AND NOT t.due_later
                                  AND t.task_type = l.task_type AND t.run_after <= now()
                                UNION ALL
                                SELECT t.group_key FROM omnispindle.tasks t
                                WHERE l.max_running_per_group IS NOT NULL
                                  AND t.state = 'pending' AND t.due_later
                                  AND t.task_type = l.task_type AND t.run_after <= now()) r
                          GROUP BY r.group_key) p
                    JOIN (SELECT t.group_key, count(*) AS running FROM omnispindle.tasks t
                          WHERE l.max_running_per_group IS NOT NULL
                            AND t.state = 'running' AND t.task_type = l.task_type
                          GROUP BY t.group_key) u
                      ON u.group_key IS NOT DISTINCT FROM p.group_key
                    WHERE u.running >= l.max_running_per_group) g;

-- What each task type asks of the workers now: its running tasks, its ready
-- ones, and how many of both could run at once (running plus ready, capped
-- by its running limit; a paused type's running tasks only).
CREATE VIEW omnispindle.worker_demand AS
SELECT t.task_type,
       count(*) FILTER (WHERE t.state = 'running') AS running,
       count(*) FILTER (WHERE t.state = 'pending' AND t.run_after <= now()) AS ready,
       p.task_type IS NOT NULL AS paused,
       l.max_running,
       CASE WHEN p.task_type IS NOT NULL THEN count(*) FILTER (WHERE t.state = 'running')
            ELSE least(count(*) FILTER (WHERE t.state = 'running'
                                        OR (t.state = 'pending' AND t.run_after <= now())),
                       l.max_running) END AS demand
FROM omnispindle.tasks t
LEFT JOIN omnispindle.paused_task_types p ON p.task_type = t.task_type
LEFT JOIN omnispindle.task_type_limits l ON l.task_type = t.task_type
WHERE t.state IN ('pending', 'running')
GROUP BY t.task_type, p.task_type, l.max_running;

-- Pending tasks that need capabilities, by type and by what they need: the
-- unclaimable_tasks view below steps from one such pair to the next through
-- it. The array is hashed: as a key it could pass an index entry's size.
CREATE INDEX tasks_needs_ready_idx
    ON omnispindle.tasks (task_type, hash_array_extended(required_capabilities, 0))
    WHERE state = 'pending' AND required_capabilities <> '{}';

-- Ready tasks that no live worker can run while live workers run their type:
-- none of those declares every capability they need (a typo, "GPU" for
-- "gpu", a tag only a stopped worker had). Per type and set of capabilities
-- needed: the ready tasks, and which of those capabilities no live worker of
-- the type declares (none, when each is declared but no worker has them
-- all). Live as for left_to_a_narrower_worker. A type no live worker runs is
-- left out: its tasks wait for a worker, not for a capability. The distinct
-- sets are found one index probe each, and only the tasks of a set no
-- worker matches are counted, so a deep backlog that workers can run costs
-- a probe per set.
CREATE VIEW omnispindle.unclaimable_tasks AS
WITH RECURSIVE live AS (
    SELECT w.task_types, w.capabilities FROM omnispindle.workers w
    WHERE w.state = 'active'
      AND w.last_heartbeat_at
          > now() - make_interval(secs => coalesce(w.lease_timeout_seconds, 30))
), needs AS (
    (SELECT t.task_type, t.required_capabilities FROM omnispindle.tasks t
     WHERE t.state = 'pending' AND t.required_capabilities <> '{}'
     ORDER BY t.task_type, hash_array_extended(t.required_capabilities, 0)
     LIMIT 1)
    UNION ALL
    SELECT n.task_type, n.required_capabilities
    FROM needs p
    CROSS JOIN LATERAL (
        SELECT t.task_type, t.required_capabilities FROM omnispindle.tasks t
        WHERE t.state = 'pending' AND t.required_capabilities <> '{}'
          AND (t.task_type, hash_array_extended(t.required_capabilities, 0))
              > (p.task_type, hash_array_extended(p.required_capabilities, 0))
        ORDER BY t.task_type, hash_array_extended(t.required_capabilities, 0)
        LIMIT 1) n
), stuck AS MATERIALIZED (
    SELECT n.task_type, n.required_capabilities FROM needs n
    WHERE EXISTS (SELECT FROM live l WHERE n.task_type = ANY (l.task_types))
      AND NOT EXISTS (SELECT FROM live l
                      WHERE n.task_type = ANY (l.task_types)
                        AND n.required_capabilities <@ l.capabilities)
)
SELECT s.task_type, s.required_capabilities, r.ready,
       ARRAY(SELECT c FROM unnest(s.required_capabilities) c
             WHERE NOT EXISTS (SELECT FROM live l
                               WHERE s.task_type = ANY (l.task_types)
                                 AND c = ANY (l.capabilities))
             ORDER BY c) AS missing_capabilities
FROM stuck s
CROSS JOIN LATERAL (
    SELECT count(*) AS ready FROM omnispindle.tasks t
    WHERE t.state = 'pending' AND t.required_capabilities <> '{}'
      AND t.task_type = s.task_type
      AND hash_array_extended(t.required_capabilities, 0)
          = hash_array_extended(s.required_capabilities, 0)
      AND t.required_capabilities = s.required_capabilities
      AND t.run_after <= now()) r
WHERE r.ready > 0;

-- The worker processes a deployment should run now, for an autoscaler such as
-- KEDA's PostgreSQL scaler (one number; a target of 1 per replica): the
-- tasks that could run at once (worker_demand), divided by each process's
-- concurrency, rounded up, between min_workers and max_workers. task_types
-- limits it to the types a deployment runs (NULL: all). Ready tasks are
-- counted up to what max_workers could run, so a deep backlog costs no more
-- than that. It runs with the owner's rights, so that an observer role (a
-- scaler's) may call it without reading the tasks.
CREATE FUNCTION omnispindle.workers_needed(concurrency integer, min_workers integer DEFAULT 0,
                                           max_workers integer DEFAULT 100,
                                           task_types text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    demand bigint;
BEGIN
    IF workers_needed.concurrency IS NULL OR workers_needed.concurrency NOT BETWEEN 1 AND 1000
       OR workers_needed.min_workers IS NULL OR workers_needed.min_workers < 0
       OR workers_needed.max_workers IS NULL
       OR workers_needed.max_workers NOT BETWEEN workers_needed.min_workers AND 100000 THEN
        RAISE EXCEPTION 'concurrency must be 1 to 1000, and 0 <= min_workers <= max_workers <= 100000'
            USING ERRCODE = 'OS005';
    END IF;
    WITH ready AS (
        SELECT r.task_type FROM omnispindle.tasks r
        WHERE r.state = 'pending' AND r.run_after <= now()
          AND (workers_needed.task_types IS NULL OR r.task_type = ANY (workers_needed.task_types))
          AND r.task_type <> ALL (ARRAY(SELECT p.task_type FROM omnispindle.paused_task_types p))
        LIMIT workers_needed.concurrency::bigint * workers_needed.max_workers
    ), running AS (
        SELECT r.task_type FROM omnispindle.tasks r
        WHERE r.state = 'running'
          AND (workers_needed.task_types IS NULL OR r.task_type = ANY (workers_needed.task_types))
    ), by_type AS (
        SELECT u.task_type, count(*) AS n
        FROM (SELECT * FROM ready UNION ALL SELECT * FROM running) u
        GROUP BY u.task_type
    )
    SELECT coalesce(sum(least(b.n, l.max_running)), 0) INTO demand
    FROM by_type b
    LEFT JOIN omnispindle.task_type_limits l ON l.task_type = b.task_type;
    RETURN least(workers_needed.max_workers,
                 greatest(workers_needed.min_workers,
                          ceil(demand::numeric / workers_needed.concurrency)::integer));
END
$$;

-- Finished tasks' history: the tasks the sweeper moved out of the hot table
-- once finished (see archive_finished in sql/queries/history.sql), with the
-- same columns, in partitions by when they finished. Retention drops a whole
-- partition once its newest task is past the horizon, instead of deleting row
-- by row, so neither table nor its indexes grow with the rate. A finished task
-- is in exactly one of tasks and task_history; get_task, waits, the CLI and
-- the views read both. Its dependency edges and stream rows are gone.
CREATE TABLE omnispindle.task_history (LIKE omnispindle.tasks)
    PARTITION BY RANGE (finished_at);
ALTER TABLE omnispindle.task_history ALTER COLUMN finished_at SET NOT NULL;
CREATE INDEX task_history_id_idx ON omnispindle.task_history (id);
CREATE INDEX task_history_finished_idx ON omnispindle.task_history (finished_at);

-- task_history's partitions, one row each: [from_at, to_at) of finished_at.
-- They are contiguous: a task finished in [min(from_at), max(to_at)) has a
-- partition. Only the functions below write here.
CREATE TABLE omnispindle.history_partitions (
    name    text PRIMARY KEY,
    from_at timestamptz NOT NULL UNIQUE,
    to_at   timestamptz NOT NULL,
    CONSTRAINT history_partitions_range CHECK (from_at < to_at)
);

-- Creates the partition of task_history for [p_from, p_to) and records it.
-- Called with history_partitions locked (cover_history).
CREATE FUNCTION omnispindle.add_history_partition(p_from timestamptz, p_to timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    part text := 'task_history_' || to_char(p_from AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MISS');
BEGIN
    EXECUTE format('CREATE TABLE omnispindle.%I PARTITION OF omnispindle.task_history '
                   'FOR VALUES FROM (%L) TO (%L)', part, p_from, p_to);
    INSERT INTO omnispindle.history_partitions (name, from_at, to_at)
    VALUES (part, p_from, p_to);
END
$$;

-- Makes task_history's partitions reach from p_oldest (when not NULL, and
-- not further back than p_keep_seconds, the retention: drop_history would
-- drop such a partition at once) to one width past now(); returns how many it
-- made. A new partition is p_width_seconds wide and starts on a multiple of
-- the width (from 2000-01-01 UTC), except the two that fill a span in one:
-- the time since the newest partition ended (maintenance stopped for a while)
-- and the time before the oldest began. Creating a partition waits for
-- readers of task_history: the lock timeout keeps a long one from stalling
-- every reader queued behind. A partition recorded in history_partitions
-- that task_history does not have (its table dropped by hand, or the rows of
-- history_partitions copied without the tables, as pg_dump --data-only into
-- a migrated database does) is forgotten first, and a gap it leaves between
-- the others filled, so that a task finished in [min(from_at), max(to_at))
-- has a partition again.
CREATE FUNCTION omnispindle.cover_history(p_oldest timestamptz, p_width_seconds double precision,
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
    gap record;
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
    DELETE FROM omnispindle.history_partitions p
    WHERE NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = 'omnispindle.task_history'::regclass
                        AND c.relname = p.name);
    FOR gap IN SELECT g.gap_from, g.gap_to
               FROM (SELECT lag(p.to_at) OVER (ORDER BY p.from_at) AS gap_from,
                            p.from_at AS gap_to
                     FROM omnispindle.history_partitions p) g
               WHERE g.gap_from < g.gap_to
    LOOP
        PERFORM omnispindle.add_history_partition(gap.gap_from, gap.gap_to);
        made := made + 1;
    END LOOP;
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

-- Drops the partitions of task_history whose every task finished more than
-- p_keep_seconds ago; returns how many. Dropping waits for readers of
-- task_history as creating does, with the same bound.
CREATE FUNCTION omnispindle.drop_history(p_keep_seconds double precision)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
    part text;
    dropped integer := 0;
BEGIN
    IF p_keep_seconds IS NULL OR NOT p_keep_seconds > 0 THEN
        RAISE EXCEPTION 'a retention is a positive number of seconds, not %', p_keep_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOCK TABLE omnispindle.history_partitions IN EXCLUSIVE MODE;
    FOR part IN SELECT p.name FROM omnispindle.history_partitions p
                WHERE p.to_at <= now() - make_interval(secs => p_keep_seconds)
                ORDER BY p.from_at
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS omnispindle.%I', part);
        DELETE FROM omnispindle.history_partitions WHERE name = part;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

REVOKE EXECUTE ON FUNCTION omnispindle.add_history_partition(timestamptz, timestamptz),
    omnispindle.cover_history(timestamptz, double precision, double precision),
    omnispindle.drop_history(double precision)
    FROM PUBLIC;

-- The views that show finished tasks read them in both tables.
CREATE VIEW omnispindle.failed_tasks AS
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type'    AS error_type,
       errors -> -1 ->> 'message' AS error_message,
       finished_at
FROM omnispindle.tasks
WHERE state = 'failed'
UNION ALL
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type', errors -> -1 ->> 'message', finished_at
FROM omnispindle.task_history
WHERE state = 'failed';

-- Per task type: tasks in each state, throughput over the last minute and
-- hour, queue wait and run time percentiles and failure and retry rates over
-- the last hour, and how long the oldest ready task has waited. Times are in
-- seconds; rates are fractions of the tasks that finished in the last hour.
CREATE VIEW omnispindle.task_metrics AS
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
           -- A start before run_after is that of an earlier turn: a task that
           -- was made pending again (a retry's backoff, a release) and then
           -- cancelled before it started anew did not wait a negative time.
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - run_after))
               FILTER (WHERE started_at >= run_after) AS wait_quantiles,
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

-- Per worker: how full it is now, and what it finished lately.
CREATE VIEW omnispindle.worker_metrics AS
WITH running AS (
    SELECT worker_id, count(*) AS running_tasks
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY worker_id
), finished AS (
    SELECT worker_id, state, finished_at
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
    UNION ALL
    SELECT worker_id, state, finished_at
    FROM omnispindle.task_history
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
), recent AS (
    SELECT worker_id,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour
    FROM finished
    GROUP BY worker_id
)
SELECT w.id, w.name, w.host, w.pid, w.state, w.concurrency,
       coalesce(r.running_tasks, 0) AS running_tasks,
       coalesce(r.running_tasks, 0)::double precision / w.concurrency AS utilisation,
       coalesce(f.finished_last_minute, 0) AS finished_last_minute,
       coalesce(f.finished_last_hour, 0) AS finished_last_hour,
       coalesce(f.failed_last_hour, 0) AS failed_last_hour,
       extract(epoch FROM now() - w.last_heartbeat_at)::double precision
           AS heartbeat_age_seconds
FROM omnispindle.workers w
LEFT JOIN running r ON r.worker_id = w.id
LEFT JOIN recent f ON f.worker_id = w.id;

-- Failed and cancelled in the last minute, by task type (task_metrics splits
-- off only the succeeded ones).
CREATE VIEW omnispindle.outcomes_last_minute AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM (SELECT task_type, state FROM omnispindle.tasks
      WHERE finished_at > now() - interval '1 minute'
      UNION ALL
      SELECT task_type, state FROM omnispindle.task_history
      WHERE finished_at > now() - interval '1 minute') AS finished
GROUP BY task_type;

-- What read-only commands read, as views: a role that may only look needs
-- SELECT on the views and nothing on the tables. An archived task's
-- dependency edges went with it: its lists are empty, and no list names it.
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
                 WHERE d.depends_on = t.id), '[]'::jsonb) AS dependents,
       t.group_key
FROM (SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key, group_key
      FROM omnispindle.tasks
      UNION ALL
      SELECT id, task_type, state, priority, attempts, max_attempts, retry_backoff,
              timeout_seconds, required_capabilities, allow_failed_dependencies,
              pending_dependencies, parameters, result, errors, cancel_reason,
              cancel_requested_at, worker_id, created_at, started_at, finished_at, run_after,
              lease_expires_at, idempotency_key, group_key
      FROM omnispindle.task_history) t
LEFT JOIN omnispindle.workers w ON w.id = t.worker_id;

-- Grants p_role what one kind of access needs, and nothing more:
--   observer: SELECT on the views (status, tasks, metrics) and the paused types;
--   producer: submit, wait, stream, cancel, retry, schedule, pause and resume;
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
    -- A NULL role, or an oid no role has, would make the GRANTs below say
    -- "syntax error" (GRANT ... TO nothing, or TO -).
    IF p_role IS NULL OR NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = p_role) THEN
        RAISE EXCEPTION 'no role %: give an existing role', coalesce(p_role::text, 'NULL')
            USING ERRCODE = 'undefined_object';
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
                   'omnispindle.history_partitions, omnispindle.unclaimable_tasks TO %s',
                   p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.workers_needed(integer, integer, '
                   'integer, text[]) TO %s', p_role);
    IF p_access = 'observer' THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT SELECT ON omnispindle.tasks, omnispindle.task_dependencies, '
                   'omnispindle.task_stream, omnispindle.workers, omnispindle.periodic_tasks, '
                   'omnispindle.periodic_ticks, omnispindle.task_history TO %s', p_role);
    -- A row a producer inserts can only be a pending task: the state rules refuse
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
                               'free_narrower_workers',
                               'group_tokens_at', 'cover_history', 'drop_history',
                               'first_ready_task', 'walks_one_type', 'walked_by_type',
                               'ungrouped_type', 'dependents_reading', 'promote_due_tasks']
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
                   'cancel_requested_at, pending_dependencies, due_later), DELETE '
                   'ON omnispindle.tasks TO %s', p_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON omnispindle.workers TO %s', p_role);
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

-- The rules on what a task asks for and on what its attempts leave, each
-- checked when its column is written: on insert, and by an update that sets
-- the column. As CHECK constraints they were prepared again by every UPDATE
-- statement on tasks, also by the claims, completions and unblocking that
-- never write these columns (with the other checks, a third of a chain
-- link's time in Postgres). A trigger with a column list is prepared only by
-- a statement that sets one of its columns; its WHEN clause asks a function
-- below, whose call every insert prepares in place of the rules written out
-- (see omnispindle.broken_state_rule). A row that breaks one is refused as a
-- CHECK constraint would refuse it (check_violation, named by the rule). Rows
-- written before a rule was added stay as they are until their column is
-- written again.

-- What a submitter sets: the first rule broken, by name, or NULL. A rule
-- that comes out NULL holds, as in a CHECK constraint. The parameters come
-- as their size: the datum header makes reading it cheap. Operators and
-- functions are named with their schema (see omnispindle.legal_transition).
CREATE FUNCTION omnispindle.broken_request_rule(p_task_type text, p_priority integer,
                                                p_max_attempts integer,
                                                p_retry_backoff double precision,
                                                p_timeout_seconds double precision,
                                                p_idempotency_key text, p_group_key text,
                                                p_parameters_bytes integer,
                                                p_required_capabilities text[])
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    RETURN CASE
        WHEN NOT (p_task_type OPERATOR(pg_catalog.<>) ''
                  AND pg_catalog.length(p_task_type) OPERATOR(pg_catalog.<=) 200)
            THEN 'tasks_task_type_valid'
        WHEN NOT (p_priority OPERATOR(pg_catalog.>=) -1000
                  AND p_priority OPERATOR(pg_catalog.<=) 1000)
            THEN 'tasks_priority_range'
        WHEN NOT (p_max_attempts OPERATOR(pg_catalog.>=) 1
                  AND p_max_attempts OPERATOR(pg_catalog.<=) 101)
            THEN 'tasks_max_attempts_range'
        WHEN NOT (p_retry_backoff OPERATOR(pg_catalog.>=) 0) THEN 'tasks_retry_backoff_range'
        WHEN NOT (p_retry_backoff OPERATOR(pg_catalog.<=) 3600) THEN 'tasks_retry_backoff_bounded'
        WHEN NOT (p_timeout_seconds OPERATOR(pg_catalog.>) 0) THEN 'tasks_timeout_positive'
        -- 1e9 s (about 31 years) at most: far beyond, deadlines overflow a
        -- timestamp in the sweeper.
        WHEN NOT (p_timeout_seconds OPERATOR(pg_catalog.<=) 1e9) THEN 'tasks_timeout_bounded'
        WHEN NOT (p_idempotency_key OPERATOR(pg_catalog.<>) ''
                  AND pg_catalog.length(p_idempotency_key) OPERATOR(pg_catalog.<=) 200)
            THEN 'tasks_idempotency_key_valid'
        WHEN NOT (p_group_key OPERATOR(pg_catalog.<>) ''
                  AND pg_catalog.length(p_group_key) OPERATOR(pg_catalog.<=) 200)
            THEN 'tasks_group_key_valid'
        WHEN NOT (p_parameters_bytes OPERATOR(pg_catalog.<=) 67108864)
            THEN 'tasks_parameters_size'
        WHEN NOT (pg_catalog.cardinality(p_required_capabilities) OPERATOR(pg_catalog.<=) 1000
                  AND pg_catalog.octet_length(pg_catalog.array_to_string(p_required_capabilities,
                                                                         ''))
                      OPERATOR(pg_catalog.<=) 800000)
            THEN 'tasks_required_capabilities_size'
        -- Each a name a worker can declare: a NULL, an empty or a longer one
        -- matches no worker, and its task would wait for ever.
        WHEN pg_catalog.cardinality(p_required_capabilities) OPERATOR(pg_catalog.>) 0
             AND EXISTS (SELECT FROM pg_catalog.unnest(p_required_capabilities) AS c(name)
                         WHERE c.name IS NULL OR c.name OPERATOR(pg_catalog.=) ''
                            OR pg_catalog.length(c.name) OPERATOR(pg_catalog.>) 200)
            THEN 'tasks_required_capabilities_valid'
    END;
END
$$;

-- What attempts leave: the first rule broken, by name, or NULL.
CREATE FUNCTION omnispindle.broken_outcome_rule(p_result_bytes integer, p_errors_type text,
                                                p_cancel_reason text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    RETURN CASE
        WHEN NOT (p_result_bytes OPERATOR(pg_catalog.<=) 67108864) THEN 'tasks_result_size'
        WHEN NOT (p_errors_type OPERATOR(pg_catalog.=) 'array') THEN 'tasks_errors_is_array'
        WHEN NOT (pg_catalog.length(p_cancel_reason) OPERATOR(pg_catalog.<=) 1000)
            THEN 'tasks_cancel_reason_bounded'
    END;
END
$$;

-- Refuses a row as a CHECK constraint would, naming the first rule it breaks.
CREATE FUNCTION omnispindle.refuse_broken_rule()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    broken text := coalesce(
        omnispindle.broken_request_rule(NEW.task_type, NEW.priority, NEW.max_attempts,
                                        NEW.retry_backoff, NEW.timeout_seconds,
                                        NEW.idempotency_key, NEW.group_key,
                                        pg_catalog.pg_column_size(NEW.parameters),
                                        NEW.required_capabilities),
        omnispindle.broken_outcome_rule(pg_catalog.pg_column_size(NEW.result),
                                        pg_catalog.jsonb_typeof(NEW.errors), NEW.cancel_reason),
        TG_NAME);
BEGIN
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
    WHEN (omnispindle.broken_request_rule(NEW.task_type, NEW.priority, NEW.max_attempts,
                                          NEW.retry_backoff, NEW.timeout_seconds,
                                          NEW.idempotency_key, NEW.group_key,
                                          pg_column_size(NEW.parameters),
                                          NEW.required_capabilities) IS NOT NULL)
    EXECUTE FUNCTION omnispindle.refuse_broken_rule();

-- What attempts leave: a result, errors, a reason for a cancel.
CREATE TRIGGER tasks_check_outcome
    BEFORE INSERT OR UPDATE OF result, errors, cancel_reason ON omnispindle.tasks
    FOR EACH ROW
    WHEN (omnispindle.broken_outcome_rule(pg_column_size(NEW.result), jsonb_typeof(NEW.errors),
                                          NEW.cancel_reason) IS NOT NULL)
    EXECUTE FUNCTION omnispindle.refuse_broken_rule();

-- What a task's run_after asks of its row: the name of the rule it breaks
-- (a time within the years 1 to 9999 in UTC), 'due_later' when it is more
-- than ten seconds ahead (see due_later), or NULL. psycopg reads a timestamp
-- into a Python datetime, which ends there: a task due at 'infinity' or in
-- the year 10000 was stored, and every read of its record failed after (the
-- client refuses such a run_at itself). A task due sooner than ten seconds is
-- stepped over for those seconds at most, and is spared the write that
-- clears a mark (a drain's tasks, submitted a few seconds ahead so that all
-- are in before the first starts, among them).
CREATE FUNCTION omnispindle.run_after_rule(p_run_after timestamptz)
RETURNS text
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    RETURN CASE
        WHEN NOT (p_run_after OPERATOR(pg_catalog.>=)
                      '0001-01-01 00:00:00+00'::pg_catalog.timestamptz
                  AND p_run_after OPERATOR(pg_catalog.<)
                      '10000-01-01 00:00:00+00'::pg_catalog.timestamptz)
            THEN 'tasks_run_after_range'
        WHEN p_run_after OPERATOR(pg_catalog.>)
             (pg_catalog.now() OPERATOR(pg_catalog.+) '10 seconds'::pg_catalog.interval)
            THEN 'due_later'
    END;
END
$$;

-- Marks a task due later, and refuses a time outside the calendar as
-- refuse_broken_rule refuses a row. Failures, releases, retries and
-- unblocking write run_after again; one they leave as it was (stored before
-- the rule) is let be, so that no internal write fails on it. One trigger for
-- both: every insert prepares the WHEN clause of each of the table's row
-- triggers again, and a second trigger, with 683 characters of node text,
-- took an insert's past the 6,000 that test_task_rules allows (6,355 on
-- Postgres 16).
CREATE FUNCTION omnispindle.check_run_after()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    broken text := coalesce(omnispindle.run_after_rule(NEW.run_after), TG_NAME);
BEGIN
    IF broken OPERATOR(pg_catalog.=) 'due_later' THEN
        NEW.due_later := true;
        RETURN NEW;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE'
       AND NEW.run_after OPERATOR(pg_catalog.=) OLD.run_after THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', TG_TABLE_NAME, broken
        USING ERRCODE = 'check_violation', CONSTRAINT = broken, TABLE = TG_TABLE_NAME,
              SCHEMA = TG_TABLE_SCHEMA;
END
$$;

-- Only a statement that writes run_after prepares it, and a row in the
-- calendar costs one call.
CREATE TRIGGER tasks_check_run_after
    BEFORE INSERT OR UPDATE OF run_after ON omnispindle.tasks
    FOR EACH ROW
    WHEN (omnispindle.run_after_rule(NEW.run_after) IS NOT NULL)
    EXECUTE FUNCTION omnispindle.check_run_after();

-- The rules that tie a task's state to its other columns, by name: the first
-- one a row breaks, or NULL when it keeps them all (a rule that comes out
-- NULL holds, as in a CHECK constraint), in the order of their names, as
-- Postgres checks CHECK constraints. They were CHECK constraints, which
-- Postgres prepares again for every UPDATE statement on tasks: with the
-- transition rule, a fifth of a chain link's time in Postgres. The trigger
-- below asks this function instead, for under a microsecond a row.
-- Operators and functions are named with their schema (see
-- omnispindle.legal_transition).
-- tasks_waiting_has_attempt_left came after the others (0007): rows written
-- before it stay as they are until a column it reads is written again.
CREATE FUNCTION omnispindle.broken_state_rule(p_state omnispindle.task_state,
                                              p_attempts integer, p_max_attempts integer,
                                              p_pending_dependencies integer,
                                              p_lease_token uuid,
                                              p_lease_expires_at timestamptz,
                                              p_started_at timestamptz,
                                              p_finished_at timestamptz, p_has_result boolean,
                                              p_errors jsonb,
                                              p_cancel_requested_at timestamptz)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    RETURN CASE
        WHEN NOT (p_attempts OPERATOR(pg_catalog.>=) 0
                  AND p_attempts OPERATOR(pg_catalog.<=) p_max_attempts)
            THEN 'tasks_attempts_range'
        -- Only a blocked task waits for dependencies; a ready one waits for none.
        WHEN NOT ((p_state OPERATOR(pg_catalog.=) 'blocked')
                  OPERATOR(pg_catalog.=) (p_pending_dependencies OPERATOR(pg_catalog.>) 0)
                  OR p_state OPERATOR(pg_catalog.=) ANY ('{succeeded,failed,cancelled}'))
            THEN 'tasks_blocked_has_dependencies'
        -- Only a running task can be asked to stop; the request outlives it as a record.
        WHEN NOT (p_cancel_requested_at IS NULL
                  OR p_state OPERATOR(pg_catalog.=) ANY ('{running,cancelled}'))
            THEN 'tasks_cancel_request_matches_state'
        WHEN NOT (p_state OPERATOR(pg_catalog.<>) 'failed'
                  OR pg_catalog.jsonb_array_length(p_errors) OPERATOR(pg_catalog.>) 0)
            THEN 'tasks_failed_has_error'
        WHEN NOT ((p_state OPERATOR(pg_catalog.=) ANY ('{succeeded,failed,cancelled}'))
                  OPERATOR(pg_catalog.=) (p_finished_at IS NOT NULL))
            THEN 'tasks_finished_at_matches_state'
        -- A lease exists exactly while the task runs: fencing relies on it.
        WHEN NOT ((p_state OPERATOR(pg_catalog.=) 'running')
                  OPERATOR(pg_catalog.=) (p_lease_token IS NOT NULL
                                          AND p_lease_expires_at IS NOT NULL)
                  AND (p_lease_token IS NULL) OPERATOR(pg_catalog.=) (p_lease_expires_at IS NULL))
            THEN 'tasks_lease_matches_state'
        WHEN NOT (p_pending_dependencies OPERATOR(pg_catalog.>=) 0)
            THEN 'tasks_pending_dependencies_range'
        WHEN NOT (p_state OPERATOR(pg_catalog.<>) 'running'
                  OR (p_started_at IS NOT NULL AND p_attempts OPERATOR(pg_catalog.>) 0))
            THEN 'tasks_running_has_start'
        WHEN NOT (p_state OPERATOR(pg_catalog.<>) 'succeeded' OR p_has_result)
            THEN 'tasks_succeeded_has_result'
        -- A task that waits to run has an attempt left to run it with.
        WHEN NOT (NOT p_state OPERATOR(pg_catalog.=) ANY ('{blocked,pending}')
                  OR p_attempts OPERATOR(pg_catalog.<) p_max_attempts)
            THEN 'tasks_waiting_has_attempt_left'
    END;
END
$$;

-- Refuses a row that breaks a state rule as a CHECK constraint would refuse
-- it (check_violation, named by the rule).
CREATE FUNCTION omnispindle.refuse_broken_state()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    broken text := coalesce(omnispindle.broken_state_rule(
        NEW.state, NEW.attempts, NEW.max_attempts, NEW.pending_dependencies, NEW.lease_token,
        NEW.lease_expires_at, NEW.started_at, NEW.finished_at, NEW.result IS NOT NULL,
        NEW.errors, NEW.cancel_requested_at), TG_NAME);
BEGIN
    RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', TG_TABLE_NAME, broken
        USING ERRCODE = 'check_violation', CONSTRAINT = broken, TABLE = TG_TABLE_NAME,
              SCHEMA = TG_TABLE_SCHEMA;
END
$$;

-- On every column a state rule reads. Its name puts it after the other BEFORE
-- triggers, as CHECK constraints come after them all: an illegal transition
-- is refused as one first.
CREATE TRIGGER tasks_state_rules
    BEFORE INSERT OR UPDATE OF state, attempts, max_attempts, pending_dependencies, lease_token,
                               lease_expires_at, started_at, finished_at, result, errors,
                               cancel_requested_at
    ON omnispindle.tasks
    FOR EACH ROW
    WHEN (omnispindle.broken_state_rule(NEW.state, NEW.attempts, NEW.max_attempts,
                                        NEW.pending_dependencies, NEW.lease_token,
                                        NEW.lease_expires_at, NEW.started_at, NEW.finished_at,
                                        NEW.result IS NOT NULL, NEW.errors,
                                        NEW.cancel_requested_at) IS NOT NULL)
    EXECUTE FUNCTION omnispindle.refuse_broken_state();

-- Functions are executable by PUBLIC unless revoked; only granted roles (and
-- the owner) may call these.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA omnispindle FROM PUBLIC;

-- The rules the triggers' WHEN clauses ask run as whoever writes the row:
-- every role that may write a task may ask them. They read only their
-- arguments.
GRANT EXECUTE ON FUNCTION omnispindle.legal_transition(omnispindle.task_state,
    omnispindle.task_state, integer, integer, integer, integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION omnispindle.broken_state_rule(omnispindle.task_state, integer, integer,
    integer, uuid, timestamptz, timestamptz, timestamptz, boolean, jsonb, timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION omnispindle.broken_request_rule(text, integer, integer,
    double precision, double precision, text, text, integer, text[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION omnispindle.broken_outcome_rule(integer, text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION omnispindle.run_after_rule(timestamptz) TO PUBLIC;

-- Migration 0010_scheduling: limits on a task type, global across the workers
-- (at most N of its tasks running at once, at most R claims of them per
-- second), enforced by claim_tasks (and so complete_and_claim) under a lock on
-- the type's row; the aging and fair share strategies, with each task's
-- group_key for the latter; the scaling hint; and one runner at a time for
-- each maintenance duty. Producers set and clear limits and strategies (an
-- operator's action, like pause); every role may read them; workers take
-- from the buckets.

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
    CONSTRAINT task_type_limits_rate_range
        CHECK (starts_per_second > 0 AND starts_per_second <= 1000000),
    CONSTRAINT task_type_limits_burst_range CHECK (burst BETWEEN 1 AND 1000000),
    CONSTRAINT task_type_limits_per_group_range
        CHECK (max_running_per_group BETWEEN 1 AND 1000000),
    CONSTRAINT task_type_limits_group_rate_range
        CHECK (starts_per_second_per_group > 0 AND starts_per_second_per_group <= 1000000),
    -- A rate comes with its bucket, and a row limits something.
    CONSTRAINT task_type_limits_rate_has_bucket
        CHECK ((starts_per_second IS NULL) = (burst IS NULL)
               AND (burst IS NULL) = (tokens IS NULL)),
    CONSTRAINT task_type_limits_limit_something
        CHECK (max_running IS NOT NULL OR starts_per_second IS NOT NULL
               OR max_running_per_group IS NOT NULL
               OR starts_per_second_per_group IS NOT NULL)
);

-- claim_tasks counts a limited type's running tasks under its lock.
CREATE INDEX tasks_running_type_idx ON omnispindle.tasks (task_type) WHERE state = 'running';

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
-- group; it holds only pending tasks, as tasks_ready_idx does.
ALTER TABLE omnispindle.tasks
    ADD COLUMN group_key text,
    ADD CONSTRAINT tasks_group_key_valid
        CHECK (group_key <> '' AND length(group_key) <= 200) NOT VALID;
CREATE INDEX tasks_group_ready_idx ON omnispindle.tasks (task_type, group_key, priority DESC, id)
    WHERE state = 'pending';

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

-- claim_tasks as 0009 made it, claiming each limited type first, up to its limits.
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

-- grant_access() as 0009 made it: every role reads the limits, producers set and
-- clear them, workers take from their buckets.
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
                   'omnispindle.worker_demand, omnispindle.task_type_strategies TO %s', p_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.workers_needed(integer, integer, '
                   'integer, text[]) TO %s', p_role);
    IF p_access = 'observer' THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT SELECT ON omnispindle.tasks, omnispindle.task_dependencies, '
                   'omnispindle.task_stream, omnispindle.workers, omnispindle.periodic_tasks, '
                   'omnispindle.periodic_ticks TO %s', p_role);
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
                               'group_tokens_at']
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

REVOKE EXECUTE ON FUNCTION omnispindle.set_task_type_limit(text, integer, double precision,
                                                            integer, integer,
                                                            double precision),
    omnispindle.clear_task_type_limit(text),
    omnispindle.set_task_type_strategy(text, text, double precision),
    omnispindle.workers_needed(integer, integer, integer, text[]),
    omnispindle.left_to_a_narrower_worker(text, text[], timestamptz, text[], uuid),
    omnispindle.group_tokens_at(jsonb, text, double precision, double precision, timestamptz)
    FROM PUBLIC;

-- Roles granted access before this migration: every claim now reads the
-- limits, so a worker role without rights on them could claim nothing. Each
-- role that may read the views may read the limits, each that may pause may
-- set and clear them, and each that may claim may take from their buckets,
-- as grant_access now gives them.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = 'omnispindle.queue_summary'::regclass
                     AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT ON omnispindle.task_type_limits, '
                       'omnispindle.task_type_limit_summary, omnispindle.worker_demand, '
                       'omnispindle.task_type_strategies TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.workers_needed(integer, integer, '
                       'integer, text[]) TO %s', grantee);
    END LOOP;
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_proc p, aclexplode(p.proacl) a
                   WHERE p.oid = 'omnispindle.pause_task_type(text, text)'::regprocedure
                     AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.set_task_type_limit(text, integer, '
                       'double precision, integer, integer, double precision), '
                       'omnispindle.clear_task_type_limit(text), '
                       'omnispindle.set_task_type_strategy(text, text, double precision) '
                       'TO %s', grantee);
    END LOOP;
    FOR grantee IN SELECT DISTINCT a.grantee::regrole
                   FROM pg_proc p, aclexplode(p.proacl) a
                   WHERE p.oid = 'omnispindle.claim_tasks(text[], text[], integer, uuid, '
                                 'double precision, integer, bigint)'::regprocedure
                     AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
                     AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT SELECT, UPDATE (tokens, refilled_at, group_tokens) ON '
                       'omnispindle.task_type_limits TO %s', grantee);
        EXECUTE format('GRANT SELECT ON omnispindle.task_type_strategies TO %s', grantee);
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.left_to_a_narrower_worker(text, '
                       'text[], timestamptz, text[], uuid), omnispindle.group_tokens_at(jsonb, '
                       'text, double precision, double precision, timestamptz) TO %s', grantee);
    END LOOP;
END
$$;

-- submit_tasks and insert_tasks take each task's group_key (a last, optional
-- array): the old signatures go, with the rights granted on them, which the
-- new ones get back.
CREATE TEMPORARY TABLE submit_tasks_grantees AS
SELECT DISTINCT a.grantee::regrole AS grantee
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.oid = 'omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
                  double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[],
                  jsonb[])'::regprocedure
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;

DROP FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[]);
DROP FUNCTION omnispindle.insert_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
    bigint[]);

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
-- An entry whose idempotency key belongs to an unfinished task yields that task.
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

-- Cancels one task: a blocked or pending one at once (its descendants follow
-- through the trigger); a running one gets a request that its worker sees
-- through a notification or its next heartbeat; a finished one is left as it
-- is. Returns the state after the call and whether anything changed.


ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[], text[])
    SET lock_timeout = '10s';
ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[], text[])
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON FUNCTION
    omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
        double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
        text[]),
    omnispindle.insert_tasks(text[], jsonb[], integer[], integer[], double precision[],
        double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[],
        bigint[], text[])
    FROM PUBLIC;

-- The roles that could submit: submit_tasks again, and the group_key of the
-- tasks they insert directly (as grant_access now gives them).
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN SELECT g.grantee FROM submit_tasks_grantees g LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION omnispindle.submit_tasks(text[], jsonb[], '
                       'integer[], integer[], double precision[], double precision[], jsonb[], '
                       'jsonb[], jsonb[], boolean[], timestamptz[], text[], jsonb[], text[]) '
                       'TO %s', grantee);
        EXECUTE format('GRANT INSERT (group_key) ON omnispindle.tasks TO %s', grantee);
    END LOOP;
END
$$;
DROP TABLE submit_tasks_grantees;

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

-- Migration 0002_operations: frozen once released. Delayed tasks, idempotency
-- keys, trace context carried in the task, periodic tasks, and metrics views.

ALTER TABLE omnispindle.tasks
    ADD COLUMN idempotency_key text,
    ADD COLUMN trace_context jsonb,
    ADD CONSTRAINT tasks_idempotency_key_valid
        CHECK (idempotency_key <> '' AND length(idempotency_key) <= 200);

-- One unfinished task per key: a repeated submission finds the existing task.
-- Once it has finished, the key is free again.
CREATE UNIQUE INDEX tasks_idempotency_key_idx ON omnispindle.tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND state IN ('blocked', 'pending', 'running');
-- Metrics read recent outcomes by time.
CREATE INDEX tasks_finished_idx ON omnispindle.tasks (finished_at)
    WHERE finished_at IS NOT NULL;

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
    CONSTRAINT periodic_tasks_name_valid CHECK (name <> '' AND length(name) <= 200),
    CONSTRAINT periodic_tasks_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT periodic_tasks_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT periodic_tasks_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 101),
    CONSTRAINT periodic_tasks_retry_backoff_range CHECK (retry_backoff >= 0),
    CONSTRAINT periodic_tasks_timeout_positive CHECK (timeout_seconds > 0)
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
-- Returns the ticks this call enqueued, with their new task ids.
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

-- Workers wake on this notification. Tasks that are not due yet are announced
-- with the time the earliest of them is due (epoch seconds), so that a worker
-- can sleep until then.
CREATE OR REPLACE FUNCTION omnispindle.notify_inserted()
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

DROP FUNCTION omnispindle.claim_tasks(text[], text[], integer, uuid, double precision);

-- Claims up to p_limit ready tasks for a worker in one statement. SKIP LOCKED
-- lets any number of workers claim at once without waiting on each other; NO
-- KEY UPDATE does not conflict with the KEY SHARE locks that submitting
-- dependents take. Bitmap scans are off so that, even with stale statistics
-- (right after a bulk submit), the plan walks tasks_ready_idx in order and
-- stops after p_limit rows instead of sorting every ready task.
CREATE FUNCTION omnispindle.claim_tasks(p_task_types text[], p_capabilities text[],
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

DROP FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[],
    double precision[], double precision[], jsonb[], jsonb[], jsonb[], boolean[]);

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

    IF EXISTS (SELECT 1 FROM unnest(p_idempotency_keys) AS k WHERE k IS NOT NULL) THEN
        -- Submitters of one key queue behind each other, each taking its keys
        -- in sorted order (no deadlock between batches sharing keys), until
        -- the holder's transaction ends; the lookup below then sees its task.
        PERFORM pg_advisory_xact_lock(hashtext('omnispindle.idempotency_key'), hashtext(k))
        FROM (SELECT DISTINCT k FROM unnest(p_idempotency_keys) AS k
              WHERE k IS NOT NULL ORDER BY k) AS keys;
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
    END IF;

    ids := omnispindle.insert_tasks(
        p_task_types, p_parameters, p_priorities, p_max_attempts, p_retry_backoffs,
        p_timeouts, p_required_capabilities, p_dependencies, p_entry_dependencies,
        p_allow_failed, p_run_after, p_idempotency_keys, p_trace_contexts, existing);
    RETURN QUERY SELECT i FROM unnest(ids) AS i;
END
$$;

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
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour'
    GROUP BY task_type
)
SELECT s.task_type, s.blocked, s.pending, s.running, s.succeeded, s.failed, s.cancelled,
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
FROM states s
LEFT JOIN recent r ON r.task_type = s.task_type;

-- Per worker: how full it is now, and what it finished lately.
CREATE VIEW omnispindle.worker_metrics AS
WITH running AS (
    SELECT worker_id, count(*) AS running_tasks
    FROM omnispindle.tasks
    WHERE state = 'running'
    GROUP BY worker_id
), recent AS (
    SELECT worker_id,
           count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
               AS finished_last_minute,
           count(*) AS finished_last_hour,
           count(*) FILTER (WHERE state = 'failed') AS failed_last_hour
    FROM omnispindle.tasks
    WHERE finished_at > now() - interval '1 hour' AND worker_id IS NOT NULL
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

-- Schedules with their latest tick and the task it enqueued.
CREATE VIEW omnispindle.periodic_summary AS
SELECT p.name, p.cron, p.task_type, p.enabled, last.tick_at AS last_tick_at,
       last.task_id AS last_task_id, p.created_at, p.updated_at
FROM omnispindle.periodic_tasks p
LEFT JOIN LATERAL (SELECT k.tick_at, k.task_id FROM omnispindle.periodic_ticks k
                   WHERE k.periodic_name = p.name
                   ORDER BY k.tick_at DESC LIMIT 1) last ON true;

-- Runtime statements on tasks. Each block after `-- name:` is one statement,
-- run only through the typed functions of omnispindle._db.queries.

-- name: submit_tasks
-- One round trip for any batch size; the function validates dependencies and
-- inserts everything or nothing. WITH ORDINALITY keeps the callers' order.
-- With a submission key, the ids are recorded under it in the same statement.
WITH s AS (
    SELECT s.id, s.ord
    FROM omnispindle.submit_tasks(
        %(task_types)s::text[], %(parameters)s::jsonb[], %(priorities)s::integer[],
        %(max_attempts)s::integer[], %(retry_backoffs)s::double precision[],
        %(timeouts)s::double precision[], %(required_capabilities)s::jsonb[],
        %(dependencies)s::jsonb[], %(entry_dependencies)s::jsonb[], %(allow_failed)s::boolean[],
        %(run_after)s::timestamptz[], %(idempotency_keys)s::text[], %(trace_contexts)s::jsonb[],
        %(group_keys)s::text[]
    ) WITH ORDINALITY AS s(id, ord)
), recorded AS (
    INSERT INTO omnispindle.submissions (key, part, task_ids)
    SELECT %(submission)s::uuid, %(part)s::integer, array_agg(s.id ORDER BY s.ord)
    FROM s
    HAVING %(submission)s::uuid IS NOT NULL
)
SELECT s.id FROM s ORDER BY s.ord;

-- name: insert_tasks_bulk
-- Tasks without dependencies or idempotency keys, as one JSON array of
-- objects (omnispindle._client.submission builds it): one statement, one parameter,
-- any batch size. Identities are drawn in entry order, so sorted ids are the
-- entries' ids in order. One NOTIFY per statement, from the insert trigger.
-- An object leaves out the fields that hold their defaults, which the caller
-- passes once (omnispindle._core.defaults).
WITH inserted AS (
    INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts, retry_backoff,
                                   timeout_seconds, required_capabilities, state, run_after,
                                   trace_context, group_key)
    SELECT r.task_type, coalesce(r.parameters, '{}'),
           coalesce(r.priority, %(default_priority)s::integer),
           coalesce(r.max_attempts, %(default_max_attempts)s::integer),
           coalesce(r.retry_backoff, %(default_retry_backoff)s::double precision),
           r.timeout_seconds,
           coalesce(r.required_capabilities, '{}'), 'pending', coalesce(r.run_after, now()),
           %(trace_context)s::jsonb, r.group_key
    FROM ROWS FROM (
        jsonb_to_recordset(%(rows)s::jsonb) AS (
            task_type text, parameters jsonb, priority integer, max_attempts integer,
            retry_backoff double precision, timeout_seconds double precision,
            required_capabilities text[], run_after timestamptz, group_key text)
    ) WITH ORDINALITY AS r(task_type, parameters, priority, max_attempts, retry_backoff,
                           timeout_seconds, required_capabilities, run_after, group_key, ord)
    ORDER BY r.ord
    RETURNING id
), recorded AS (
    -- With a submission key, the ids are recorded under it in the same statement.
    INSERT INTO omnispindle.submissions (key, part, task_ids)
    SELECT %(submission)s::uuid, %(part)s::integer, array_agg(id ORDER BY id)
    FROM inserted
    HAVING %(submission)s::uuid IS NOT NULL
)
-- Runs of consecutive ids, two numbers each instead of a row per task: one run,
-- unless another session drew identities meanwhile.
SELECT min(id) AS first, max(id) AS last
FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS run FROM inserted) AS numbered
GROUP BY run
ORDER BY first;

-- name: insert_linked_bulk
-- Tasks whose dependencies are all entries of the same batch (a fan-out, a
-- chain), without idempotency keys, in the document of insert_tasks_bulk where
-- an object may also name its parents ("after": 0-based positions in the
-- batch) and allow them to fail. omnispindle.insert_linked_tasks inserts the
-- tasks and their edges in one statement, with the owner's rights: a producer
-- may insert neither edges nor a blocked task itself.
SELECT first_id AS first, last_id AS last
FROM omnispindle.insert_linked_tasks(
    %(rows)s::jsonb, %(trace_context)s::jsonb, %(default_priority)s::integer,
    %(default_max_attempts)s::integer, %(default_retry_backoff)s::double precision,
    %(submission)s::uuid, %(part)s::integer);

-- name: claim_tasks
-- The claim lives in omnispindle.claim_tasks (sql/schema.sql), which pins the
-- plan that walks the ready index in order.
SELECT id, task_type, parameters, attempts, max_attempts, timeout_seconds, lease_token,
       dependency_results, dependency_failures, trace_context
FROM omnispindle.claim_tasks(%(task_types)s::text[], %(capabilities)s::text[], %(limit)s::integer,
                             %(worker_id)s::uuid, %(lease_seconds)s::double precision);

-- name: complete_tasks
-- omnispindle.complete_attempts fences each row by its lease token: a worker
-- whose lease was taken over gets no row back and its result is dropped.
SELECT id, state::text AS state
FROM omnispindle.complete_attempts(%(ids)s::bigint[], %(tokens)s::uuid[], %(results)s::jsonb[]);

-- name: complete_and_claim
-- A worker's step: its results stored and its free slots claimed in one
-- statement (see omnispindle.complete_and_claim in sql/schema.sql). The
-- lease token comes back as text: the worker only hands it back, and a Python
-- UUID per claimed task costs more than the rest of its row.
SELECT id, task_type, parameters, attempts, max_attempts, timeout_seconds,
       lease_token::text AS lease_token,
       dependency_results, dependency_failures, trace_context, priority, dropped
FROM omnispindle.complete_and_claim(
    %(ids)s::bigint[], %(tokens)s::uuid[], %(results)s::jsonb[],
    %(task_types)s::text[], %(capabilities)s::text[], %(limit)s::integer,
    %(worker_id)s::uuid, %(lease_seconds)s::double precision,
    %(after_priority)s::integer, %(after_id)s::bigint);

-- name: fail_tasks
SELECT id, state::text AS state, retry_in
FROM omnispindle.fail_attempts(%(ids)s::bigint[], %(tokens)s::uuid[], %(errors)s::jsonb[]);

-- name: submitted
-- What a submit call recorded under its key, in the order it inserted; none
-- when nothing it sent committed.
SELECT task_ids FROM omnispindle.submissions WHERE key = %(submission)s ORDER BY part;

-- name: forget_submissions
-- Submission records older than an hour: a retry comes within seconds.
DELETE FROM omnispindle.submissions
WHERE (key, part) IN (SELECT key, part FROM omnispindle.submissions
                      WHERE created_at < now() - interval '1 hour'
                      ORDER BY created_at
                      LIMIT %(limit)s);

-- name: release_unheld
-- After a step whose reply was lost, a worker hands back the running tasks it
-- holds in the database but not in memory (that step claimed them): back to
-- pending at once, their attempt not counted, since none of them started;
-- cancelled, if a cancel was asked for meanwhile (a task with a cancel
-- request may not wait to run again).
UPDATE omnispindle.tasks t
SET state = CASE WHEN t.cancel_requested_at IS NULL
                 THEN 'pending' ELSE 'cancelled' END::omnispindle.task_state,
    attempts = t.attempts - 1,
    run_after = now(),
    finished_at = CASE WHEN t.cancel_requested_at IS NULL THEN NULL ELSE now() END,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE t.worker_id = %(worker_id)s AND t.state = 'running'
  AND NOT t.id = ANY (%(held)s::bigint[])
RETURNING t.id;

-- name: stored_results
-- Of the given tasks, those that succeeded under this worker: a result it
-- stores again after a lost reply was stored the first time.
SELECT id FROM omnispindle.tasks
WHERE id = ANY (%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'succeeded';

-- name: release_tasks
-- A worker shutting down hands back what it could not finish; the attempt it
-- started does not count against the task's retries. A task asked to cancel
-- ends cancelled instead: it may not wait to run again.
UPDATE omnispindle.tasks t
SET state = CASE WHEN t.cancel_requested_at IS NULL
                 THEN 'pending' ELSE 'cancelled' END::omnispindle.task_state,
    attempts = t.attempts - 1,
    run_after = now(),
    finished_at = CASE WHEN t.cancel_requested_at IS NULL THEN NULL ELSE now() END,
    lease_token = NULL,
    lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS r(id, token)
-- The token alone fences: only a running task has one (see fail_attempts).
WHERE t.id = r.id AND t.lease_token = r.token
RETURNING t.id;

-- name: recover_expired_leases
-- A lease expires when its holder stopped heartbeating, or when the attempt ran
-- past the task's timeout (leases never reach beyond it). Either way the
-- attempt ends as failed: back to pending after a backoff, or failed when none
-- are left. SKIP LOCKED makes any number of concurrent sweepers safe.
WITH expired AS (
    SELECT t.id, t.lease_token,
           -- Capped as in heartbeat: an old row's huge timeout must not fail the sweep.
           CASE WHEN t.started_at + make_interval(secs => LEAST(t.timeout_seconds, 1e9)) <= now()
                THEN jsonb_build_object(
                    'type', 'TaskTimeout',
                    'message', 'attempt ran past its timeout of ' || t.timeout_seconds || ' s')
                ELSE jsonb_build_object(
                    'type', 'LeaseExpired',
                    'message', 'lease expired: worker '
                               || coalesce(w.name, t.worker_id::text, 'unknown')
                               || ' stopped heartbeating')
           END || jsonb_build_object('traceback', NULL, 'attempt', t.attempts) AS error
    FROM omnispindle.tasks t
    LEFT JOIN omnispindle.workers w ON w.id = t.worker_id
    WHERE t.state = 'running' AND t.lease_expires_at < now()
    ORDER BY t.lease_expires_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF t SKIP LOCKED
), batch AS (
    SELECT array_agg(id) AS ids, array_agg(lease_token) AS tokens, array_agg(error) AS errors
    FROM expired
)
SELECT f.id, f.state::text AS state, f.retry_in
FROM batch, omnispindle.fail_attempts(batch.ids, batch.tokens, batch.errors) AS f;

-- name: get_tasks
-- finished_only lets waiters fetch just the tasks that are done. An id not in
-- tasks is looked up in task_history (an archived task has no dependencies
-- left); only those, so that a fetch of hot tasks never probes its partitions.
SELECT t.id AS task_id, t.task_type, t.parameters, t.priority, t.state::text AS state,
       t.attempts, t.max_attempts, t.result, t.errors -> -1 AS error, t.cancel_reason,
       t.cancel_requested_at,
       t.worker_id, t.created_at, t.started_at, t.finished_at, t.run_after, t.idempotency_key,
       t.group_key,
       ARRAY(SELECT d.depends_on FROM omnispindle.task_dependencies d
             WHERE d.task_id = t.id ORDER BY d.depends_on) AS dependencies
FROM omnispindle.tasks t
WHERE t.id = ANY (%(ids)s::bigint[])
  AND (NOT %(finished_only)s OR t.state IN ('succeeded', 'failed', 'cancelled'))
UNION ALL
SELECT h.id, h.task_type, h.parameters, h.priority, h.state::text,
       h.attempts, h.max_attempts, h.result, h.errors -> -1, h.cancel_reason,
       h.cancel_requested_at,
       h.worker_id, h.created_at, h.started_at, h.finished_at, h.run_after, h.idempotency_key,
       h.group_key,
       '{}'::bigint[]
FROM omnispindle.task_history h
WHERE h.id = ANY (ARRAY(SELECT i FROM unnest(%(ids)s::bigint[]) AS i
                        WHERE NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = i)));

-- name: count_tasks_by_state
SELECT state::text AS state, count(*) AS count
FROM omnispindle.tasks
GROUP BY state
ORDER BY state;

-- name: next_lease_expiry
-- Lets a sweeper wake just as the first lease lapses instead of a fixed tick.
SELECT extract(epoch FROM min(lease_expires_at) - now())::double precision AS seconds
FROM omnispindle.tasks
WHERE state = 'running';

-- name: cancel_task
SELECT state, changed FROM omnispindle.cancel_task(%(id)s, %(reason)s);

-- name: cancel_requests
-- Which of a worker's running tasks have been asked to stop: by primary key,
-- fenced by the lease tokens, as the heartbeat finds them.
SELECT id
FROM omnispindle.tasks
WHERE id = ANY (%(ids)s::bigint[])
  AND lease_token = ANY (%(tokens)s::uuid[])
  AND cancel_requested_at IS NOT NULL;

-- name: emit_partial
-- Appends one partial result, fenced by the lease like every write of a
-- running attempt; no row back means the lease is gone. The task's row is
-- held until the partial commits, so that the attempt's end (which updates
-- the row) comes after it: a stream that reads the task finished reads every
-- partial stored, and an emit that waited for the end finds the lease gone.
INSERT INTO omnispindle.task_stream (task_id, seq, attempt, payload)
SELECT t.id,
       coalesce((SELECT max(s.seq) FROM omnispindle.task_stream s WHERE s.task_id = t.id), 0) + 1,
       t.attempts, %(payload)s::jsonb
FROM omnispindle.tasks t
WHERE t.id = %(id)s AND t.lease_token = %(token)s::uuid  -- only a running task has one
FOR SHARE OF t
RETURNING seq;

-- name: read_stream
SELECT seq, attempt, payload, created_at
FROM omnispindle.task_stream
WHERE task_id = %(id)s AND seq > %(after)s
ORDER BY seq;

-- name: reconcile_blocked
-- Repairs blocked tasks whose parents all finished while the task's own
-- submission was still uncommitted (the parents' trigger could not see it):
-- ready when every parent is done for it, cancelled when one failed for it.
-- Only tasks older than a second: younger ones may still be in flight. The
-- verdict comes before the LIMIT, so a repair is found wherever it sits. A
-- blocked task left with no edge at all (written so by SQL, or from before
-- edges were guarded) waits for nothing and is ready.
WITH parents AS (
    SELECT t.id, t.allow_failed_dependencies AS tolerant, d.depends_on,
           (SELECT p.state FROM omnispindle.tasks p WHERE p.id = d.depends_on) AS parent_state
    FROM omnispindle.tasks t
    LEFT JOIN omnispindle.task_dependencies d ON d.task_id = t.id
    WHERE t.state = 'blocked' AND t.created_at < now() - interval '1 second'
), verdict AS (
    SELECT id,
           bool_and(depends_on IS NULL
                    OR parent_state = 'succeeded'
                    OR (tolerant AND parent_state IN ('failed', 'cancelled'))) AS ready,
           min(depends_on) FILTER (WHERE NOT tolerant
                                   AND parent_state IN ('failed', 'cancelled')) AS broken
    FROM parents
    GROUP BY id
), stranded AS (
    SELECT t.id, v.broken
    FROM verdict v
    JOIN omnispindle.tasks t ON t.id = v.id
    WHERE v.ready OR v.broken IS NOT NULL
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF t SKIP LOCKED
)
UPDATE omnispindle.tasks t
SET state = CASE WHEN s.broken IS NOT NULL THEN 'cancelled'
                 ELSE 'pending' END::omnispindle.task_state,
    pending_dependencies = CASE WHEN s.broken IS NOT NULL THEN t.pending_dependencies ELSE 0 END,
    finished_at = CASE WHEN s.broken IS NOT NULL THEN now() END,
    cancel_reason = CASE WHEN s.broken IS NOT NULL
                         THEN 'dependency ' || s.broken || ' ' || (
                             SELECT p.state::text FROM omnispindle.tasks p WHERE p.id = s.broken)
                    END,
    run_after = greatest(t.run_after, now())
FROM stranded s
WHERE t.id = s.id AND t.state = 'blocked'
RETURNING t.id;

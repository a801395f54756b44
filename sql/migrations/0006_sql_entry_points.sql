-- Migration 0006_sql_entry_points: frozen once released. Entry points for
-- plain SQL and liveness one can see: enqueue() with named, defaulted
-- arguments; retry_task() and retry_tasks(), which can bring back the
-- dependents a failure cancelled; a bare INSERT of a task type gets a state;
-- a refused transition says what to do instead; workers record their lease,
-- so that the views show workers that stopped heartbeating (lost) and leases
-- that expired; a periodic schedule runs in a time zone of its own.

ALTER TABLE omnispindle.tasks ALTER COLUMN state SET DEFAULT 'pending';

ALTER TABLE omnispindle.workers ADD COLUMN lease_timeout_seconds double precision;

-- The IANA time zone a schedule's cron fields are read in.
ALTER TABLE omnispindle.periodic_tasks ADD COLUMN timezone text NOT NULL DEFAULT 'UTC'
    CONSTRAINT periodic_tasks_timezone_valid CHECK (timezone <> '' AND length(timezone) <= 200);

-- Schedules with their latest tick and the task it enqueued.
CREATE OR REPLACE VIEW omnispindle.periodic_summary AS
SELECT p.name, p.cron, p.task_type, p.enabled, last.tick_at AS last_tick_at,
       last.task_id AS last_task_id, p.created_at, p.updated_at, p.timezone
FROM omnispindle.periodic_tasks p
LEFT JOIN LATERAL (SELECT k.tick_at, k.task_id FROM omnispindle.periodic_ticks k
                   WHERE k.periodic_name = p.name
                   ORDER BY k.tick_at DESC LIMIT 1) last ON true;

-- Refuses a state transition; the trigger below calls it only for illegal ones.
-- The hint says what does what the update tried.
CREATE OR REPLACE FUNCTION omnispindle.check_transition()
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

-- The legal state transitions; anything else is refused, also from plain SQL.
-- The rule is the WHEN clause, which the executor evaluates itself: a legal
-- update (every claim and completion) calls no PL/pgSQL for its rows.
DROP TRIGGER tasks_check_transition ON omnispindle.tasks;
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

-- Runs failed tasks again, all or nothing: each goes back to pending now, with
-- one more attempt if it had none left; its error history stays. Every task is
-- locked (in id order) and checked before any changes. With p_with_dependents,
-- the tasks that a retried task's failure cancelled (and theirs, transitively)
-- wait for it again, unless another of their dependencies failed or was
-- cancelled for another reason. Returns one row per retried task, in the order
-- given, with the dependents it brought back.
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

-- Every task downstream of p_id, following dependency edges.
CREATE FUNCTION omnispindle.dependents_of(p_id bigint)
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

-- Brings back the tasks cancelled because one of p_ids failed (and those
-- cancelled because of them): blocked again, waiting for every dependency that
-- has not succeeded. One whose other dependency failed or was cancelled for
-- another reason could never run, and stays cancelled. Grows the set until
-- nothing more qualifies, since a task may wait on several of the set.
CREATE FUNCTION omnispindle.revive_dependents(p_ids bigint[])
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

-- Views for people at a psql prompt. A lease past its expiry is one nothing
-- has swept yet: with every sweeper (and worker) gone, the count only grows.
CREATE OR REPLACE VIEW omnispindle.queue_summary AS
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
CREATE OR REPLACE VIEW omnispindle.worker_summary AS
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

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
    CONSTRAINT workers_stopped_at_matches_state
        CHECK ((state = 'active') = (stopped_at IS NULL))
);

CREATE TABLE omnispindle.tasks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_type            text NOT NULL,
    parameters           jsonb NOT NULL DEFAULT '{}',
    priority             integer NOT NULL DEFAULT 0,
    required_capabilities text[] NOT NULL DEFAULT '{}',
    state                omnispindle.task_state NOT NULL,
    attempts             integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL DEFAULT 4,
    retry_backoff        double precision NOT NULL DEFAULT 1.0,
    timeout_seconds      double precision,
    pending_dependencies integer NOT NULL DEFAULT 0,
    run_after            timestamptz NOT NULL DEFAULT now(),
    result               jsonb,
    errors               jsonb NOT NULL DEFAULT '[]',
    cancel_reason        text,
    worker_id            uuid,
    lease_token          uuid,
    lease_expires_at     timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    CONSTRAINT tasks_task_type_valid
        CHECK (task_type <> '' AND length(task_type) <= 200),
    CONSTRAINT tasks_priority_range CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT tasks_attempts_range CHECK (attempts >= 0 AND attempts <= max_attempts),
    CONSTRAINT tasks_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 101),
    CONSTRAINT tasks_retry_backoff_range CHECK (retry_backoff >= 0),
    CONSTRAINT tasks_timeout_positive CHECK (timeout_seconds > 0),
    CONSTRAINT tasks_pending_dependencies_range CHECK (pending_dependencies >= 0),
    CONSTRAINT tasks_errors_is_array CHECK (jsonb_typeof(errors) = 'array'),
    -- Only a blocked task waits for dependencies; a ready one waits for none.
    CONSTRAINT tasks_blocked_has_dependencies
        CHECK ((state = 'blocked') = (pending_dependencies > 0)
               OR state IN ('succeeded', 'failed', 'cancelled')),
    -- A lease exists exactly while the task runs: fencing relies on it.
    CONSTRAINT tasks_lease_matches_state
        CHECK ((state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
               AND (lease_token IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT tasks_running_has_start
        CHECK (state <> 'running' OR (started_at IS NOT NULL AND attempts > 0)),
    CONSTRAINT tasks_finished_at_matches_state
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT tasks_succeeded_has_result CHECK (state <> 'succeeded' OR result IS NOT NULL),
    CONSTRAINT tasks_failed_has_error CHECK (state <> 'failed' OR jsonb_array_length(errors) > 0)
);

-- Frequent updates: leave room on each page for HOT updates and vacuum often.
ALTER TABLE omnispindle.tasks SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim query reads only ready rows, in priority then FIFO order.
CREATE INDEX tasks_ready_idx ON omnispindle.tasks (priority DESC, id)
    WHERE state = 'pending';
-- Heartbeats and inspection find a worker's running tasks.
CREATE INDEX tasks_running_idx ON omnispindle.tasks (worker_id)
    WHERE state = 'running';
CREATE INDEX tasks_type_state_idx ON omnispindle.tasks (task_type, state);

CREATE TABLE omnispindle.task_dependencies (
    task_id    bigint NOT NULL REFERENCES omnispindle.tasks (id) ON DELETE CASCADE,
    depends_on bigint NOT NULL REFERENCES omnispindle.tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on),
    CONSTRAINT task_dependencies_not_self CHECK (task_id <> depends_on)
);

CREATE INDEX task_dependencies_depends_on_idx
    ON omnispindle.task_dependencies (depends_on);

-- Exponential backoff with equal jitter, capped at an hour.
CREATE FUNCTION omnispindle.retry_delay(attempt integer, base double precision)
RETURNS interval
LANGUAGE sql VOLATILE
AS $$
    SELECT make_interval(secs => least(3600.0, base * 2 ^ greatest(attempt - 1, 0))
                                 * (0.5 + random() * 0.5))
$$;

-- Ends one attempt of each given task with an error: back to pending after a
-- backoff while attempts are left, else failed. Only rows whose lease token
-- still matches change (fencing). Shared by workers and lease recovery.
CREATE FUNCTION omnispindle.fail_attempts(ids bigint[], tokens uuid[], failures jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state, retry_in double precision)
LANGUAGE sql
AS $$
    WITH attempt AS (
        SELECT f.id, f.token, f.error,
               t.attempts < t.max_attempts AS will_retry,
               omnispindle.retry_delay(t.attempts, t.retry_backoff) AS delay
        FROM unnest(ids, tokens, failures) AS f(id, token, error)
        JOIN omnispindle.tasks t ON t.id = f.id
    )
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN a.will_retry THEN 'pending' ELSE 'failed' END::omnispindle.task_state,
        run_after = CASE WHEN a.will_retry THEN now() + a.delay ELSE t.run_after END,
        finished_at = CASE WHEN a.will_retry THEN NULL ELSE now() END,
        errors = t.errors || jsonb_build_array(a.error),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM attempt a
    WHERE t.id = a.id AND t.lease_token = a.token AND t.state = 'running'
    RETURNING t.id, t.state,
              CASE WHEN a.will_retry THEN extract(epoch FROM a.delay)::double precision END
$$;

-- The legal state transitions; anything else is refused, also from plain SQL.
CREATE FUNCTION omnispindle.check_transition()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.state = OLD.state
       OR (OLD.state = 'blocked' AND NEW.state IN ('pending', 'cancelled'))
       OR (OLD.state = 'pending' AND NEW.state IN ('running', 'cancelled'))
       OR (OLD.state = 'running' AND NEW.state IN ('pending', 'succeeded', 'failed', 'cancelled'))
       OR (OLD.state = 'failed' AND NEW.state = 'pending') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'illegal task state transition % -> % for task %',
        OLD.state, NEW.state, OLD.id
        USING ERRCODE = 'OS002';
END
$$;

CREATE TRIGGER tasks_check_transition
    BEFORE UPDATE OF state ON omnispindle.tasks
    FOR EACH ROW EXECUTE FUNCTION omnispindle.check_transition();

-- One notification per statement that makes work ready.
CREATE FUNCTION omnispindle.notify_inserted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'pending') THEN
        PERFORM pg_notify('omnispindle_ready', '');
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
CREATE FUNCTION omnispindle.after_tasks_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Statement triggers fire even for zero rows, so every nested UPDATE below
    -- runs only when there is work: that is what ends the recursion.
    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.state = 'succeeded' AND o.state <> 'succeeded') THEN
        WITH finished_parents AS (
            SELECT d.task_id, count(*)::integer AS done
            FROM new_rows n
            JOIN old_rows o ON o.id = n.id
            JOIN omnispindle.task_dependencies d ON d.depends_on = n.id
            WHERE n.state = 'succeeded' AND o.state <> 'succeeded'
            GROUP BY d.task_id
        )
        UPDATE omnispindle.tasks t
        SET pending_dependencies = t.pending_dependencies - f.done,
            state = CASE WHEN t.pending_dependencies = f.done
                         THEN 'pending' ELSE 'blocked' END::omnispindle.task_state,
            run_after = greatest(t.run_after, now())
        FROM finished_parents f
        WHERE t.id = f.task_id AND t.state = 'blocked';
    END IF;

    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               JOIN omnispindle.task_dependencies d ON d.depends_on = n.id
               WHERE n.state IN ('failed', 'cancelled') AND o.state <> n.state) THEN
        WITH RECURSIVE doomed (id, ancestor, ancestor_state) AS (
            SELECT d.task_id, n.id, n.state
            FROM new_rows n
            JOIN old_rows o ON o.id = n.id
            JOIN omnispindle.task_dependencies d ON d.depends_on = n.id
            WHERE n.state IN ('failed', 'cancelled') AND o.state <> n.state
            UNION
            SELECT d.task_id, x.ancestor, x.ancestor_state
            FROM omnispindle.task_dependencies d JOIN doomed x ON x.id = d.depends_on
        ), first_cause AS (
            SELECT DISTINCT ON (id) id, ancestor, ancestor_state
            FROM doomed ORDER BY id, ancestor
        )
        UPDATE omnispindle.tasks t
        SET state = 'cancelled',
            finished_at = now(),
            cancel_reason = format('dependency %s %s', c.ancestor, c.ancestor_state)
        FROM first_cause c
        WHERE t.id = c.id AND t.state IN ('blocked', 'pending');
    END IF;

    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.state = 'pending' AND o.state <> 'pending'
                 AND n.run_after <= now()) THEN
        PERFORM pg_notify('omnispindle_ready', '');
    END IF;

    IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
               WHERE n.state IN ('succeeded', 'failed', 'cancelled')
                 AND o.state <> n.state) THEN
        PERFORM pg_notify('omnispindle_finished', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_after_update
    AFTER UPDATE ON omnispindle.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION omnispindle.after_tasks_update();

-- Inserts a batch of tasks in one statement, all or nothing. Arrays are
-- parallel, one element per task; dependencies[i] is a jsonb array of ids.
-- Parents are locked FOR SHARE so that a parent finishing concurrently either
-- is seen as succeeded here or sees the new dependency rows in its trigger.
CREATE FUNCTION omnispindle.submit_tasks(
    p_task_types text[],
    p_parameters jsonb[],
    p_priorities integer[],
    p_max_attempts integer[],
    p_retry_backoffs double precision[],
    p_timeouts double precision[],
    p_required_capabilities jsonb[],
    p_dependencies jsonb[]
)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
DECLARE
    wanted bigint[];
    missing bigint;
    broken record;
BEGIN
    SELECT coalesce(array_agg(DISTINCT d.value::bigint), '{}') INTO wanted
    FROM unnest(p_dependencies) AS deps(list),
         jsonb_array_elements_text(deps.list) AS d(value);

    PERFORM 1 FROM omnispindle.tasks WHERE id = ANY (wanted) ORDER BY id FOR SHARE;

    SELECT w INTO missing FROM unnest(wanted) AS w
    WHERE NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = w) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unknown dependency: task % does not exist', missing
            USING ERRCODE = 'OS001';
    END IF;

    SELECT id, state INTO broken FROM omnispindle.tasks
    WHERE id = ANY (wanted) AND state IN ('failed', 'cancelled') ORDER BY id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dependency task % is %: its dependents could never run',
            broken.id, broken.state
            USING ERRCODE = 'OS003';
    END IF;

    RETURN QUERY
    WITH spec AS (
        SELECT s.*, (
            SELECT count(DISTINCT t.id)::integer
            FROM jsonb_array_elements_text(s.deps) AS d(value)
            JOIN omnispindle.tasks t ON t.id = d.value::bigint
            WHERE t.state <> 'succeeded'
        ) AS unfinished
        FROM unnest(p_task_types, p_parameters, p_priorities, p_max_attempts,
                    p_retry_backoffs, p_timeouts, p_required_capabilities, p_dependencies)
             WITH ORDINALITY AS s(task_type, parameters, priority, max_attempts,
                                  retry_backoff, timeout_seconds, caps, deps, ord)
    ), inserted AS (
        INSERT INTO omnispindle.tasks (task_type, parameters, priority, max_attempts,
                                       retry_backoff, timeout_seconds,
                                       required_capabilities, state, pending_dependencies)
        SELECT task_type, parameters, priority, max_attempts, retry_backoff,
               timeout_seconds,
               ARRAY(SELECT jsonb_array_elements_text(caps)),
               CASE WHEN unfinished > 0 THEN 'blocked' ELSE 'pending' END::omnispindle.task_state,
               unfinished
        FROM spec ORDER BY ord
        RETURNING id
    ), numbered AS (
        SELECT id, row_number() OVER (ORDER BY id) AS ord FROM inserted
    ), edges AS (
        INSERT INTO omnispindle.task_dependencies (task_id, depends_on)
        SELECT DISTINCT n.id, d.value::bigint
        FROM numbered n JOIN spec s ON s.ord = n.ord,
             jsonb_array_elements_text(s.deps) AS d(value)
    )
    SELECT id FROM numbered ORDER BY ord;
END
$$;

-- Views for people at a psql prompt.
CREATE VIEW omnispindle.queue_summary AS
SELECT task_type,
       count(*) FILTER (WHERE state = 'blocked')   AS blocked,
       count(*) FILTER (WHERE state = 'pending')   AS pending,
       count(*) FILTER (WHERE state = 'running')   AS running,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'failed')    AS failed,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       now() - min(run_after) FILTER (WHERE state = 'pending' AND run_after <= now())
           AS oldest_ready_age
FROM omnispindle.tasks
GROUP BY task_type;

CREATE VIEW omnispindle.worker_summary AS
SELECT w.id, w.name, w.host, w.pid, w.state, w.capabilities, w.concurrency,
       count(t.id) AS running_tasks,
       now() - w.last_heartbeat_at AS heartbeat_age,
       w.started_at, w.stopped_at
FROM omnispindle.workers w
LEFT JOIN omnispindle.tasks t ON t.worker_id = w.id AND t.state = 'running'
GROUP BY w.id;

CREATE VIEW omnispindle.failed_tasks AS
SELECT id, task_type, attempts, max_attempts,
       errors -> -1 ->> 'type'    AS error_type,
       errors -> -1 ->> 'message' AS error_message,
       finished_at
FROM omnispindle.tasks
WHERE state = 'failed';

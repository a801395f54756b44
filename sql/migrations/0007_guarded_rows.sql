-- Migration 0007_guarded_rows: frozen once released. Rows that plain SQL
-- could write and no worker could serve: a parent deleted from under a
-- dependent that still waits for it, numbers the API refuses (NaN, Infinity),
-- a waiting task with no attempt left, a lease that outlives any worker.

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
    ADD CONSTRAINT tasks_timeout_finite CHECK (timeout_seconds < 'Infinity') NOT VALID,
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

-- A submitter waits for another's idempotency key for at most ten seconds,
-- then fails (lock_not_available) instead of hanging: any role that can
-- connect can hold an advisory key.
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

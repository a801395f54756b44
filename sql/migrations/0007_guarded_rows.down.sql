-- Undo 0007_guarded_rows.

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA omnispindle TO PUBLIC;
DROP FUNCTION omnispindle.grant_access(regrole, text);
DROP TABLE omnispindle.maintenance_locks;
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'omnispindle'::regnamespace
                AND p.proname IN ('submit_tasks', 'enqueue', 'cancel_task', 'retry_tasks',
                                  'retry_task')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER RESET search_path', fn);
    END LOOP;
END
$$;
DROP VIEW omnispindle.outcomes_last_minute;
DROP VIEW omnispindle.task_details;

ALTER TABLE omnispindle.task_stream
    DROP CONSTRAINT task_stream_payload_size,
    DROP CONSTRAINT task_stream_length;
ALTER TABLE omnispindle.tasks
    DROP CONSTRAINT tasks_parameters_size,
    DROP CONSTRAINT tasks_result_size,
    DROP CONSTRAINT tasks_required_capabilities_size;

ALTER FUNCTION omnispindle.submit_tasks(text[], jsonb[], integer[], integer[], double precision[],
    double precision[], jsonb[], jsonb[], jsonb[], boolean[], timestamp with time zone[], text[],
    jsonb[])
    RESET lock_timeout;

DROP TRIGGER tasks_lease_bounded ON omnispindle.tasks;
DROP FUNCTION omnispindle.refuse_long_lease();
ALTER TABLE omnispindle.tasks
    DROP CONSTRAINT tasks_timeout_bounded,
    DROP CONSTRAINT tasks_retry_backoff_bounded,
    DROP CONSTRAINT tasks_cancel_reason_bounded,
    DROP CONSTRAINT tasks_waiting_has_attempt_left;
DROP TRIGGER task_dependencies_guard_delete ON omnispindle.task_dependencies;
DROP FUNCTION omnispindle.guard_dependency_delete();

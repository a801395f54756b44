-- Undo 0001_initial: remove everything but the schema itself, which also
-- holds Alembic's version table.
DROP VIEW IF EXISTS omnispindle.failed_tasks, omnispindle.worker_summary,
    omnispindle.queue_summary;
DROP TABLE IF EXISTS omnispindle.task_stream, omnispindle.task_dependencies,
    omnispindle.tasks, omnispindle.workers;
DROP FUNCTION IF EXISTS omnispindle.submit_tasks(text[], jsonb[], integer[], integer[],
    double precision[], double precision[], jsonb[], jsonb[], jsonb[], boolean[]);
DROP FUNCTION IF EXISTS omnispindle.cancel_task(bigint, text);
DROP FUNCTION IF EXISTS omnispindle.claim_tasks(text[], text[], integer, uuid, double precision);
DROP FUNCTION IF EXISTS omnispindle.notify_streamed();
DROP FUNCTION IF EXISTS omnispindle.after_tasks_update();
DROP FUNCTION IF EXISTS omnispindle.notify_inserted();
DROP FUNCTION IF EXISTS omnispindle.check_transition();
DROP FUNCTION IF EXISTS omnispindle.fail_attempts(bigint[], uuid[], jsonb[]);
DROP FUNCTION IF EXISTS omnispindle.retry_delay(integer, double precision);
DROP TYPE IF EXISTS omnispindle.worker_state, omnispindle.task_state;

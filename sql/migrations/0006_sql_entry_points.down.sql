-- Undo 0006_sql_entry_points: the views, the transition rule and its message
-- as 0005 left them; the SQL entry points and the workers' lease gone.

DROP FUNCTION omnispindle.enqueue(text, jsonb, integer, integer, double precision, bigint[],
    timestamptz, interval, double precision, text[], boolean, text);
DROP FUNCTION omnispindle.retry_task(bigint, boolean);
DROP FUNCTION omnispindle.retry_tasks(bigint[], boolean);
DROP FUNCTION omnispindle.revive_dependents(bigint[]);
DROP FUNCTION omnispindle.dependents_of(bigint);

DROP VIEW omnispindle.queue_summary;
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

DROP VIEW omnispindle.worker_summary;
CREATE VIEW omnispindle.worker_summary AS
SELECT w.id, w.name, w.host, w.pid, w.state, w.capabilities, w.concurrency,
       count(t.id) AS running_tasks,
       now() - w.last_heartbeat_at AS heartbeat_age,
       w.started_at, w.stopped_at
FROM omnispindle.workers w
LEFT JOIN omnispindle.tasks t ON t.worker_id = w.id AND t.state = 'running'
GROUP BY w.id;

ALTER TABLE omnispindle.workers DROP COLUMN lease_timeout_seconds;

DROP VIEW omnispindle.periodic_summary;
CREATE VIEW omnispindle.periodic_summary AS
SELECT p.name, p.cron, p.task_type, p.enabled, last.tick_at AS last_tick_at,
       last.task_id AS last_task_id, p.created_at, p.updated_at
FROM omnispindle.periodic_tasks p
LEFT JOIN LATERAL (SELECT k.tick_at, k.task_id FROM omnispindle.periodic_ticks k
                   WHERE k.periodic_name = p.name
                   ORDER BY k.tick_at DESC LIMIT 1) last ON true;

ALTER TABLE omnispindle.periodic_tasks DROP COLUMN timezone;

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
                   AND NEW.attempts < NEW.max_attempts)))
    EXECUTE FUNCTION omnispindle.check_transition();

CREATE OR REPLACE FUNCTION omnispindle.check_transition()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'illegal task state transition % -> % for task %',
        OLD.state, NEW.state, OLD.id
        USING ERRCODE = 'OS002';
END
$$;

ALTER TABLE omnispindle.tasks ALTER COLUMN state DROP DEFAULT;

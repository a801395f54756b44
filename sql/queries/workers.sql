-- Runtime statements on workers.

-- name: register_worker
INSERT INTO omnispindle.workers (name, host, pid, capabilities, task_types, concurrency, version,
                                 lease_timeout_seconds)
VALUES (%(name)s, %(host)s, %(pid)s, %(capabilities)s::text[], %(task_types)s::text[],
        %(concurrency)s, %(version)s, %(lease_timeout)s)
RETURNING id;

-- name: database_clock
-- The database's clock, in seconds since the epoch: a notice's due time is
-- read by it, whatever the worker's host clock says.
SELECT extract(epoch FROM clock_timestamp())::double precision AS epoch;

-- name: heartbeat
-- One statement per beat: the worker's own row and every lease it still holds
-- (the ids returned). A worker wrongly declared dead is active again. Leases
-- are found by primary key and fenced by their tokens (only a running attempt
-- has one): a walk of the running index by worker would step over an entry
-- for every attempt an old snapshot keeps alive. The concurrency is the
-- worker's current one: an auto-scaled worker's changes as it scales.
WITH beat AS (
    UPDATE omnispindle.workers
    SET last_heartbeat_at = now(), state = 'active', stopped_at = NULL,
        concurrency = %(concurrency)s
    WHERE id = %(worker_id)s AND state <> 'stopped'
)
UPDATE omnispindle.tasks
-- The timeout is capped as the API caps it: a row written before that CHECK
-- must not overflow the timestamp and fail every beat.
SET lease_expires_at = LEAST(now() + make_interval(secs => %(lease_seconds)s),
                             started_at + make_interval(secs => LEAST(timeout_seconds, 1e9)))
WHERE id = ANY (%(ids)s::bigint[])
  AND lease_token = ANY (%(tokens)s::uuid[])
RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested;

-- name: stop_worker
UPDATE omnispindle.workers
SET state = 'stopped', stopped_at = now()
WHERE id = %(worker_id)s AND state = 'active';

-- name: mark_dead_workers
-- Workers silent for longer than the threshold are declared dead; their
-- leases expire on their own and the sweeper hands their tasks on.
WITH silent AS (
    SELECT id
    FROM omnispindle.workers
    WHERE state = 'active'
      AND last_heartbeat_at < now() - make_interval(secs => %(dead_after)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE omnispindle.workers w
SET state = 'dead', stopped_at = now()
FROM silent
WHERE w.id = silent.id
RETURNING w.id;

-- name: forget_stopped_workers
-- Rows of workers stopped or declared dead longer ago than keep_seconds go:
-- every start of a worker adds one, and the views of workers read them all.
WITH gone AS (
    SELECT id
    FROM omnispindle.workers
    WHERE state <> 'active'
      AND stopped_at < now() - make_interval(secs => %(keep_seconds)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM omnispindle.workers w
USING gone
WHERE w.id = gone.id
RETURNING w.id;

-- name: list_workers
SELECT id, name, host, pid, state::text AS state, capabilities, concurrency, running_tasks,
       extract(epoch FROM heartbeat_age)::double precision AS heartbeat_age_seconds,
       started_at, stopped_at, lost
FROM omnispindle.worker_summary
ORDER BY started_at, name;

-- name: process_backlog
-- What a supervisor of worker processes scales on: the ready tasks its
-- children could claim, counted up to a limit, and the tasks they run. Its
-- children are the active workers on its host with its children's pids;
-- their registrations say what they claim. Each of their task types not
-- paused is a walk of the ready index in its order, stopping at the limit
-- however long the queue (per type, the planner expects many rows, and walks
-- the index rather than sort the table); only the tasks it found are read,
-- to check the capabilities they require. The pids of the children that run
-- a task tell the supervisor which ones a scale-down must spare.
WITH children AS (
    SELECT id, pid, task_types, capabilities
    FROM omnispindle.workers
    WHERE state = 'active' AND host = %(host)s AND pid = ANY (%(pids)s::integer[])
), types AS (
    SELECT unnest(task_types) AS task_type FROM children
    EXCEPT
    SELECT task_type FROM omnispindle.paused_task_types
), offer AS (
    SELECT ARRAY(SELECT DISTINCT unnest(capabilities) FROM children) AS capabilities
)
SELECT
    (SELECT LEAST(count(*), %(limit)s)
     FROM types y
     CROSS JOIN LATERAL (SELECT r.id
                         FROM omnispindle.tasks r
                         WHERE r.state = 'pending'
                           AND r.run_after <= now()
                           AND r.task_type = y.task_type
                         ORDER BY r.priority DESC, r.id
                         LIMIT %(limit)s) AS typed
     JOIN omnispindle.tasks c ON c.id = typed.id
     CROSS JOIN offer o
     WHERE c.required_capabilities <@ o.capabilities)::integer AS ready,
    (SELECT count(*)
     FROM omnispindle.tasks t
     WHERE t.state = 'running' AND t.worker_id IN (SELECT id FROM children))::integer AS running,
    ARRAY(SELECT DISTINCT w.pid
          FROM children w
          JOIN omnispindle.tasks t ON t.worker_id = w.id AND t.state = 'running') AS busy_pids;

-- name: take_maintenance
-- Takes or renews a maintenance duty's lease for this process: whether it
-- holds the duty now. A lease another process holds and has not let lapse is
-- only read, never locked: the processes that do not hold it ask once an
-- interval, and a hundred of them must cost little. Two that find it free at
-- once meet on the row; the second then sees the first's fresh lease.
WITH held_elsewhere AS (
    SELECT FROM omnispindle.maintenance_leases m
    WHERE m.duty = %(duty)s AND m.holder <> %(holder)s AND m.expires_at >= clock_timestamp()
), taken AS (
    INSERT INTO omnispindle.maintenance_leases AS m (duty, holder, host, pid, expires_at)
    SELECT %(duty)s, %(holder)s, %(host)s, %(pid)s,
           clock_timestamp() + make_interval(secs => %(seconds)s)
    WHERE NOT EXISTS (SELECT FROM held_elsewhere)
    ON CONFLICT (duty) DO UPDATE
    SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,
        expires_at = excluded.expires_at
    WHERE m.holder = excluded.holder OR m.expires_at < clock_timestamp()
    RETURNING 1
)
SELECT EXISTS (SELECT FROM taken) AS held;

-- name: give_up_maintenance
-- A stopping process hands its duties on at once instead of at its leases' end.
DELETE FROM omnispindle.maintenance_leases WHERE holder = %(holder)s;

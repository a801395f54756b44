-- Retention: deleting finished tasks once they are older than a horizon.
--
-- A batch is one short transaction: try_lock_pruning (or lock_pruning),
-- lock_prunable_tasks, then prune_finished. Deleting a task takes its
-- dependency edges and stream rows with it (ON DELETE CASCADE) and clears
-- periodic_ticks.task_id (ON DELETE SET NULL). A task past the horizon is kept
-- while a dependent may still read its result (see dependents_reading in
-- sql/schema.sql).

-- name: try_lock_pruning
-- One pruner at a time: two pruners deleting a parent and its child each
-- wait on the other's cascade to their shared edge, and can deadlock. A
-- sweeper that finds the lock taken skips pruning for this pass. The lock is
-- a row of the schema's own, which only roles that may prune can take (an
-- advisory key can be held by any role that can connect).
SELECT count(*) > 0 AS acquired
FROM (SELECT 1 FROM omnispindle.maintenance_locks
      WHERE name = 'prune' FOR UPDATE SKIP LOCKED) AS taken;

-- name: lock_pruning
-- The same lock, waited for: an explicit prune queues behind a sweeper's
-- batch, for at most the timeout.
WITH bounded AS (SELECT set_config('lock_timeout', %(timeout_ms)s::text, true))
SELECT m.name
FROM omnispindle.maintenance_locks m, bounded
WHERE m.name = 'prune'
FOR UPDATE OF m;

-- name: lock_prunable_tasks
-- The oldest finished tasks past the horizon, locked, in tasks_finished_idx
-- order from ``after`` (a prune cursor, NULL for the oldest: see
-- omnispindle._maintenance.retention); the function pins the ordered walk.
SELECT id, finished_at
FROM omnispindle.lock_prunable_tasks(%(keep_seconds)s::double precision, %(limit)s::integer,
                                     %(after)s::timestamptz);

-- name: prune_finished
-- Deletes the tasks lock_prunable_tasks locked, checking their dependents
-- again: this statement's snapshot is taken after the locks, so it sees every
-- dependent committed by a submitter that held a parent before we did.
DELETE FROM omnispindle.tasks t
WHERE t.id = ANY (%(ids)s::bigint[])
  AND NOT EXISTS (SELECT FROM omnispindle.dependents_reading(
                      t.id, %(keep_seconds)s::double precision))
RETURNING t.id;

-- name: count_prunable_tasks
-- What a prune with this horizon would delete now (a dry run).
SELECT count(*) AS prunable
FROM omnispindle.tasks t
WHERE t.finished_at < now() - make_interval(secs => %(keep_seconds)s)
  AND NOT EXISTS (SELECT FROM omnispindle.dependents_reading(
                      t.id, %(keep_seconds)s::double precision));

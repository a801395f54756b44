-- Retention: deleting finished tasks once they are older than a horizon.
--
-- A batch is one short transaction: try_lock_pruning (or lock_pruning),
-- lock_prunable_tasks, then prune_finished. Deleting a task takes its
-- dependency edges and stream rows with it (ON DELETE CASCADE) and clears
-- periodic_ticks.task_id (ON DELETE SET NULL). A task past the horizon is kept
-- while a dependent may still read its result: one that is blocked, pending
-- or running, or one that failed within the horizon and may be retried by hand.

-- name: try_lock_pruning
-- One pruner at a time: two pruners deleting a parent and its child each
-- wait on the other's cascade to their shared edge, and can deadlock. A
-- sweeper that finds the lock taken skips pruning for this pass.
SELECT pg_try_advisory_xact_lock(hashtext('omnispindle.prune')) AS acquired;

-- name: lock_pruning
-- The same lock, waited for: an explicit prune queues behind a sweeper's batch.
SELECT pg_advisory_xact_lock(hashtext('omnispindle.prune'));

-- name: lock_prunable_tasks
-- The oldest finished tasks past the horizon, in tasks_finished_idx order,
-- stopping after the limit. Only finished tasks have a finished_at (CHECK
-- tasks_finished_at_matches_state); a filter on state as well would make the
-- planner, without statistics, expect too few rows to reach the limit and
-- sort the whole range instead. The dependents check stays a per-row subplan
-- (OFFSET 0 keeps it from becoming a join over every dependency): index
-- lookups only. SKIP LOCKED passes over rows another transaction holds, such
-- as a parent that a submitter is adding a dependent to (it holds KEY SHARE
-- until it commits).
SELECT t.id
FROM omnispindle.tasks t
WHERE t.finished_at < now() - make_interval(secs => %(keep_seconds)s)
  AND NOT EXISTS (
      SELECT 1
      FROM omnispindle.task_dependencies d
      WHERE d.depends_on = t.id
        AND (SELECT c.state IN ('blocked', 'pending', 'running')
                    OR (c.state = 'failed'
                        AND c.finished_at >= now() - make_interval(secs => %(keep_seconds)s))
             FROM omnispindle.tasks c WHERE c.id = d.task_id)
      OFFSET 0)
ORDER BY t.finished_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: prune_finished
-- Deletes the tasks lock_prunable_tasks locked, checking their dependents
-- again: this statement's snapshot is taken after the locks, so it sees every
-- dependent committed by a submitter that held a parent before we did.
DELETE FROM omnispindle.tasks t
WHERE t.id = ANY (%(ids)s::bigint[])
  AND NOT EXISTS (
      SELECT 1
      FROM omnispindle.task_dependencies d
      WHERE d.depends_on = t.id
        AND (SELECT c.state IN ('blocked', 'pending', 'running')
                    OR (c.state = 'failed'
                        AND c.finished_at >= now() - make_interval(secs => %(keep_seconds)s))
             FROM omnispindle.tasks c WHERE c.id = d.task_id)
      OFFSET 0)
RETURNING t.id;

-- name: count_prunable_tasks
-- What a prune with this horizon would delete now (a dry run).
SELECT count(*) AS prunable
FROM omnispindle.tasks t
WHERE t.finished_at < now() - make_interval(secs => %(keep_seconds)s)
  AND NOT EXISTS (
      SELECT 1
      FROM omnispindle.task_dependencies d
      WHERE d.depends_on = t.id
        AND (SELECT c.state IN ('blocked', 'pending', 'running')
                    OR (c.state = 'failed'
                        AND c.finished_at >= now() - make_interval(secs => %(keep_seconds)s))
             FROM omnispindle.tasks c WHERE c.id = d.task_id)
      OFFSET 0);

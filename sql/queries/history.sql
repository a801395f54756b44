-- History: finished tasks moved out of the hot table into task_history,
-- whose partitions retention drops whole (see migration 0011).
--
-- A sweeper's pass runs cover_history, then archive batches (each one short
-- transaction: try_lock_pruning, lock_prunable_tasks with the archive
-- horizon, archive_finished), then drop_history when a retention is set.

-- name: cover_history
-- Partitions from `oldest` (NULL: none needed before the newest; never past
-- the retention, keep_seconds) to one width past now(); how many were made.
SELECT omnispindle.cover_history(%(oldest)s::timestamptz, %(width_seconds)s::double precision,
                                 %(keep_seconds)s::double precision) AS made;

-- name: archive_finished
-- Moves the tasks lock_prunable_tasks locked, unchanged, into task_history;
-- the ids moved. A task stays while a dependent may still read its result
-- (checked again, as prune_finished does, with retry_window_seconds, the
-- retention, as the horizon: see dependents_reading in sql/schema.sql),
-- while the rollup has not counted it yet (the dashboard's figures read
-- tasks up to its watermark), and while no partition covers its finish
-- (cover_history makes one, then the archiver tries again).
WITH moved AS (
    DELETE FROM omnispindle.tasks t
    WHERE t.id = ANY (%(ids)s::bigint[])
      AND t.finished_at < (SELECT r.counted_until FROM omnispindle.outcome_rollup r)
      AND t.finished_at >= (SELECT min(p.from_at) FROM omnispindle.history_partitions p)
      AND t.finished_at < (SELECT max(p.to_at) FROM omnispindle.history_partitions p)
      AND NOT EXISTS (SELECT FROM omnispindle.dependents_reading(
                          t.id, %(retry_window_seconds)s::double precision))
    RETURNING t.*
)
INSERT INTO omnispindle.task_history
SELECT * FROM moved
RETURNING id;

-- name: drop_history
-- Drops the partitions whose every task finished more than keep_seconds ago.
SELECT omnispindle.drop_history(%(keep_seconds)s::double precision) AS dropped;

-- name: history_bytes
-- What task_history takes now: its partitions with their indexes.
SELECT coalesce(sum(pg_total_relation_size(to_regclass('omnispindle.' || p.name))), 0)::bigint
           AS bytes
FROM omnispindle.history_partitions p;

-- Statements of clients waiting for tasks to finish.
--
-- A wait names its tasks compactly: runs of consecutive ids as ranges
-- lo[i]..hi[i] (inclusive, every id in them waited for), the ids outside a
-- long run one by one in ids. A batch submitted in one call is a single
-- range, so a check sends a few numbers instead of every id and walks the
-- primary key range by range instead of looking each id up. The arrays
-- travel in binary (%b), which the server reads faster than text.
--
-- OFFSET 0 keeps each per-range subquery a parameterized index scan: joined
-- flat, the planner guesses a range's size blindly and may scan the table.

-- name: missing_task_ids
-- Ids without a task in tasks or task_history. A range is counted first, so
-- only one with a gap is walked id by id.
SELECT s.id AS task_id
FROM unnest(%(ids)b::bigint[]) AS s(id)
WHERE NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = s.id)
  AND NOT EXISTS (SELECT 1 FROM omnispindle.task_history h WHERE h.id = s.id OFFSET 0)
UNION ALL
SELECT s.id
FROM unnest(%(lo)b::bigint[], %(hi)b::bigint[]) AS r(lo, hi)
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM omnispindle.tasks t WHERE t.id BETWEEN r.lo AND r.hi)
           + (SELECT count(*) FROM omnispindle.task_history h
              WHERE h.id BETWEEN r.lo AND r.hi) AS found
) AS c
CROSS JOIN LATERAL generate_series(r.lo, r.hi) AS s(id)
WHERE c.found < r.hi - r.lo + 1
  AND NOT EXISTS (SELECT 1 FROM omnispindle.tasks t WHERE t.id = s.id)
  AND NOT EXISTS (SELECT 1 FROM omnispindle.task_history h WHERE h.id = s.id OFFSET 0);

-- name: finished_task_ids
-- Just the ids of the finished tasks: records are fetched once, with
-- get_tasks. An archived task is finished; each id is in one table only.
SELECT t.id AS task_id
FROM omnispindle.tasks t
WHERE t.id = ANY (%(ids)b::bigint[])
  AND t.state IN ('succeeded', 'failed', 'cancelled')
UNION ALL
SELECT f.task_id
FROM unnest(%(lo)b::bigint[], %(hi)b::bigint[]) AS r(lo, hi)
CROSS JOIN LATERAL (
    SELECT t.id AS task_id
    FROM omnispindle.tasks t
    WHERE t.id BETWEEN r.lo AND r.hi
      AND t.state IN ('succeeded', 'failed', 'cancelled')
    OFFSET 0
) AS f
UNION ALL
SELECT h.id
FROM omnispindle.task_history h
WHERE h.id = ANY (%(ids)b::bigint[])
UNION ALL
SELECT f.task_id
FROM unnest(%(lo)b::bigint[], %(hi)b::bigint[]) AS r(lo, hi)
CROSS JOIN LATERAL (
    SELECT h.id AS task_id
    FROM omnispindle.task_history h
    WHERE h.id BETWEEN r.lo AND r.hi
    OFFSET 0
) AS f;

-- name: wal_position
-- Where the primary's WAL ends as a wait starts: every change committed before
-- the wait lies before it. The insert position, not the flushed one, so that
-- an asynchronous commit counts too.
SELECT pg_current_wal_insert_lsn()::text AS position;

-- name: replayed_to
-- Whether this server shows every change up to a wal_position: a replica once
-- it has replayed that far; a primary (or a replica promoted since) always.
SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %(position)s::pg_lsn AS replayed;

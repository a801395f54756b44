-- The outcome rollup (see omnispindle.outcome_minutes in migration 0008): one
-- pass is one transaction of lock_rollup, count_outcomes when the span is not
-- empty, then advance_rollup and trim_outcome_minutes.

-- name: lock_rollup
-- The span this pass counts, with the watermark row locked for the rest of
-- the transaction; no row while another pass holds it (that pass counts).
-- The span starts no earlier than the first minute the views show: after a
-- long pause of every sweeper, older minutes are skipped, not counted late.
-- It ends a settle lag before now(), so that a task finishing now, whose
-- transaction has not committed yet, falls in a later pass's span.
SELECT greatest(counted_until, date_trunc('minute', now()) - interval '59 minutes') AS since,
       now() - make_interval(secs => %(settle_seconds)s::double precision) AS until
FROM omnispindle.outcome_rollup
FOR UPDATE SKIP LOCKED;

-- name: count_outcomes
-- Adds the tasks finished in [since, until) to their minutes; read through
-- tasks_finished_idx. This statement's snapshot is taken after lock_rollup's
-- lock, so it sees every task an earlier pass could not.
WITH finished AS (
    SELECT date_trunc('minute', t.finished_at) AS minute, t.task_type,
           count(*) FILTER (WHERE t.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE t.state = 'failed') AS failed,
           count(*) FILTER (WHERE t.state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE t.attempts > 1) AS retried
    FROM omnispindle.tasks t
    WHERE t.finished_at >= %(since)s::timestamptz AND t.finished_at < %(until)s::timestamptz
    GROUP BY 1, 2
), added AS (
    INSERT INTO omnispindle.outcome_minutes AS o
        (minute, task_type, succeeded, failed, cancelled, retried)
    SELECT minute, task_type, succeeded, failed, cancelled, retried FROM finished
    ON CONFLICT (minute, task_type) DO UPDATE
    SET succeeded = o.succeeded + excluded.succeeded,
        failed = o.failed + excluded.failed,
        cancelled = o.cancelled + excluded.cancelled,
        retried = o.retried + excluded.retried
)
SELECT coalesce(sum(succeeded + failed + cancelled), 0)::bigint AS tasks FROM finished;

-- name: advance_rollup
-- The watermark never moves back: a pass whose span was empty leaves it.
UPDATE omnispindle.outcome_rollup
SET counted_until = %(until)s::timestamptz
WHERE counted_until < %(until)s::timestamptz;

-- name: trim_outcome_minutes
-- Minutes older than the views show are kept for a while (for a look at a
-- psql prompt), then deleted: the table stays small.
DELETE FROM omnispindle.outcome_minutes
WHERE minute < now() - make_interval(secs => %(keep_seconds)s::double precision);

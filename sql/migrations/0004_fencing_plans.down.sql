-- Reverts 0004_fencing_plans: the functions as 0003_speed left them.

-- Ends one attempt of each given task with an error: back to pending after a
-- backoff while attempts are left, else failed; cancelled when a cancel was
-- requested. Only rows whose lease token still matches change (fencing).
-- Shared by workers and lease recovery.
CREATE OR REPLACE FUNCTION omnispindle.fail_attempts(ids bigint[], tokens uuid[], failures jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state, retry_in double precision)
LANGUAGE sql
AS $$
    WITH attempt AS (
        SELECT f.id, f.token, f.error,
               t.cancel_requested_at IS NOT NULL AS cancelling,
               t.attempts < t.max_attempts AND t.cancel_requested_at IS NULL AS will_retry,
               omnispindle.retry_delay(t.attempts, t.retry_backoff) AS delay
        FROM unnest(ids, tokens, failures) AS f(id, token, error)
        JOIN omnispindle.tasks t ON t.id = f.id
    )
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN a.cancelling THEN 'cancelled'
                     WHEN a.will_retry THEN 'pending'
                     ELSE 'failed' END::omnispindle.task_state,
        run_after = CASE WHEN a.will_retry THEN now() + a.delay ELSE t.run_after END,
        finished_at = CASE WHEN a.will_retry THEN NULL ELSE now() END,
        errors = t.errors || jsonb_build_array(a.error),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM attempt a
    WHERE t.id = a.id AND t.lease_token = a.token AND t.state = 'running'
    RETURNING t.id, t.state,
              CASE WHEN a.will_retry THEN extract(epoch FROM a.delay)::double precision END
$$;

-- Ends attempts that returned: succeeded with their result, or cancelled
-- when a cancel was requested meanwhile. Fencing: a row changes only while
-- the caller still holds its lease, so a worker whose lease was taken over
-- gets no row back and its result is dropped.
CREATE OR REPLACE FUNCTION omnispindle.complete_attempts(ids bigint[], tokens uuid[], results jsonb[])
RETURNS TABLE (id bigint, state omnispindle.task_state)
LANGUAGE sql
AS $$
    UPDATE omnispindle.tasks t
    SET state = CASE WHEN t.cancel_requested_at IS NULL
                     THEN 'succeeded' ELSE 'cancelled' END::omnispindle.task_state,
        result = CASE WHEN t.cancel_requested_at IS NULL THEN c.result END,
        finished_at = now(),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM unnest(ids, tokens, results) AS c(id, token, result)
    WHERE t.id = c.id AND t.lease_token = c.token AND t.state = 'running'
    RETURNING t.id, t.state
$$;

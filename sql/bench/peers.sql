-- Statements of the peer benchmarks (omnispindle.bench_peers): each peer runs in
-- a database of its own, and these read the peer's own tables there. Omnispindle's
-- schema is not involved.

-- name: peer_database_exists
SELECT EXISTS (SELECT FROM pg_database WHERE datname = %(name)s) AS found;

-- name: peer_create_database
CREATE DATABASE {database};

-- name: peer_drop_public_schema
-- Every run starts from nothing: the peer's tables, types and functions live in public.
DROP SCHEMA IF EXISTS public CASCADE;

-- name: peer_create_public_schema
CREATE SCHEMA public;

-- name: peer_create_latency_table
-- The latency probe task writes the moment it started here, keyed by sample.
CREATE TABLE bench_latency (
    id integer PRIMARY KEY,
    started double precision NOT NULL
);

-- name: peer_record_latency
INSERT INTO bench_latency (id, started) VALUES (%(id)s, %(started)s);

-- name: peer_latency_started
SELECT started FROM bench_latency WHERE id = %(id)s;

-- name: peer_latency_samples
SELECT count(*) AS samples FROM bench_latency;

-- name: peer_backend_pid
-- Its parent is the postmaster, whose process tree is the server's CPU.
SELECT pg_backend_pid() AS pid;

-- name: peer_listening_workers
-- A worker whose notification connection has run LISTEN and waits: its last
-- statement stays the LISTEN until the next keep-alive, many seconds later.
SELECT count(*) AS ready
FROM pg_stat_activity
WHERE datname = current_database()
  AND application_name = %(application)s
  AND starts_with(query, 'LISTEN');

-- name: peer_create_steady_run
-- Each task of a steady run, as the peer's own stamps tell it (filled by the
-- peer's <peer>_steady_run); it lasts as long as the session.
CREATE TEMPORARY TABLE steady_run (
    created_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz
);

-- name: peer_steady_figures
-- A steady run's figures from steady_run: how many finished by the end of the
-- feed and a grace, over how long the feed lasted, and the delay from each
-- task's enqueue to its start.
WITH fed AS (
    SELECT min(created_at) AS fed_from, max(created_at) AS fed_until FROM steady_run
)
SELECT count(*) AS tasks,
       count(*) FILTER (WHERE r.finished_at <= f.fed_until + make_interval(secs => %(grace)s))
           AS finished_in_time,
       extract(epoch FROM f.fed_until - f.fed_from)::double precision AS fed_seconds,
       (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.started_at - r.created_at))
        * 1000)::double precision AS p50_ms,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.started_at - r.created_at))
        * 1000)::double precision AS p99_ms,
       (extract(epoch FROM max(r.started_at - r.created_at)) * 1000)::double precision AS max_ms
FROM steady_run r CROSS JOIN fed f
GROUP BY f.fed_from, f.fed_until;

-- name: procrastinate_remaining
SELECT EXISTS (
    SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
) AS remaining;

-- name: procrastinate_queued
SELECT count(*) AS queued FROM procrastinate_jobs WHERE status = 'todo';

-- name: procrastinate_done
SELECT count(*) AS done
FROM procrastinate_jobs
WHERE task_name = ANY(%(tasks)s::text[]) AND status = 'succeeded';

-- name: procrastinate_drain_seconds
-- From the first start to the last success, both stamped by procrastinate's triggers.
SELECT extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')
                        - min(e.at) FILTER (WHERE e.type = 'started'))::double precision AS seconds
FROM procrastinate_events e
JOIN procrastinate_jobs j ON j.id = e.job_id
WHERE j.task_name = %(task)s;

-- name: procrastinate_steady_run
-- A steady run's naps as procrastinate's triggers stamped them: deferred,
-- started (fetched by a worker) and succeeded.
INSERT INTO steady_run (created_at, started_at, finished_at)
SELECT min(e.at) FILTER (WHERE e.type = 'deferred'),
       min(e.at) FILTER (WHERE e.type = 'started'),
       max(e.at) FILTER (WHERE e.type = 'succeeded')
FROM procrastinate_events e
JOIN procrastinate_jobs j ON j.id = e.job_id
WHERE j.task_name = %(task)s
GROUP BY e.job_id;

-- name: procrastinate_table_bytes
-- Its jobs and their events, with indexes and TOAST.
SELECT pg_total_relation_size('procrastinate_jobs')
       + pg_total_relation_size('procrastinate_events') AS bytes;

-- name: pgqueuer_remaining
SELECT EXISTS (
    SELECT FROM pgqueuer WHERE status IN ('queued', 'picked')
) AS remaining;

-- name: pgqueuer_queued
SELECT count(*) AS queued FROM pgqueuer WHERE status = 'queued';

-- name: pgqueuer_done
SELECT count(*) AS done
FROM pgqueuer_log
WHERE entrypoint = ANY(%(tasks)s::text[]) AND status = 'successful';

-- name: pgqueuer_drain_seconds
-- From the first pick to the last success, both stamped in pgqueuer's log.
SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                        - min(created) FILTER (WHERE status = 'picked'))::double precision AS seconds
FROM pgqueuer_log
WHERE entrypoint = %(task)s;

-- name: pgqueuer_steady_run
-- A steady run's naps as pgqueuer's log stamped them: queued, picked by a
-- worker and successful.
INSERT INTO steady_run (created_at, started_at, finished_at)
SELECT min(created) FILTER (WHERE status = 'queued'),
       min(created) FILTER (WHERE status = 'picked'),
       max(created) FILTER (WHERE status = 'successful')
FROM pgqueuer_log
WHERE entrypoint = %(task)s
GROUP BY job_id;

-- name: pgqueuer_table_bytes
-- Its queue and its log, with indexes and TOAST.
SELECT pg_total_relation_size('pgqueuer') + pg_total_relation_size('pgqueuer_log') AS bytes;

-- name: peer_lock
-- Two runs on one peer share its database: the second waits for the first.
SELECT pg_advisory_lock(hashtext('omnispindle.bench_peer'), hashtext(%(peer)s));

"""Every default and every range, defined once.

Signatures, validation, the CLI's options and the statements that fill in a
field left out all read them from here. The schema's column defaults, its
CHECK constraints and the rules of ``omnispindle.broken_request_rule`` say
the same for plain SQL; a test holds the catalog to these values
(tests/migrations/test_defaults.py).
"""

from __future__ import annotations

# A task.
PRIORITY = 0
PRIORITY_RANGE = (-1000, 1000)  # higher runs first
MAX_RETRIES = 3  # further attempts after a failed one: 4 attempts in all
MAX_RETRIES_RANGE = (0, 100)
RETRY_BACKOFF = 1.0  # seconds: base of the exponential backoff between attempts
MAX_RETRY_BACKOFF = 3600.0
MAX_TASK_TYPE_LENGTH = 200
MAX_KEY_LENGTH = 200  # idempotency keys, group keys and schedule names
# Lists and objects within lists and objects: Python decodes far deeper, but a
# worker decodes on a stack already in use.
MAX_JSON_DEPTH = 200
MAX_REASON_LENGTH = 1000  # a cancel reason
SCHEMA = "omnispindle"  # the schema a queue lives in unless told otherwise
# A queue's notification channels are its schema's name and a suffix such as
# "_finished"; Postgres names hold 63 bytes.
MAX_SCHEMA_NAME_BYTES = 63 - len("_finished")
# The longest timeout, interval or wait, in seconds (about 31 years): far longer
# ones overflow timestamps, a thread's wait (OverflowError) or a Postgres interval.
MAX_SECONDS = 1e9

# A client.
POLL_INTERVAL = 1.0  # seconds between checks while no notification comes
POOL_SIZE = 10
# Seconds a pooled connection beyond the first may stay idle before it is closed:
# a burst's extra connections are not held for the psycopg default of 10 minutes.
POOL_MAX_IDLE = 60.0
POOL_SIZE_RANGE = (1, 1000)
# Seconds a call waits for a pooled connection: during an outage, a caller
# learns of it this soon, as a DatabaseUnavailableError.
POOL_TIMEOUT = 5.0
# Seconds one run of a pool's reconnect attempts lasts before it starts afresh:
# bounds the pause between attempts, so a pool is back soon after the database.
RECONNECT_WINDOW = 5.0
# Seconds a migration or an explicit prune waits for a lock; advisory keys can
# be held by any role that can connect.
LOCK_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5  # seconds; a database slower to answer counts as unreachable
# A TCP connection whose sent data goes unacknowledged this long (milliseconds),
# or that answers no keepalive probe for idle + interval x count seconds, is
# given up: a link cut off is an outage within seconds, not the kernel's
# quarter of an hour. libpq's names; a DSN that sets one keeps its own.
TCP_SETTINGS = {
    "tcp_user_timeout": 15_000,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

# The metrics endpoint: this host only, one read of the tables per five
# seconds however many scrape, and series for the 100 busiest task types.
METRICS_ADDRESS = "127.0.0.1"
METRICS_CACHE_SECONDS = 5.0
METRICS_MAX_TASK_TYPES = 100
METRICS_MAX_TASK_TYPES_RANGE = (1, 100_000)

# A worker.
CONCURRENCY = 1
# Seconds between notified claims that find nothing: at most 50 a second however
# many notifications come, at the cost of up to this much latency for a task
# announced right after such a claim (another worker took the last one).
IDLE_STEP_GAP = 0.02
CONCURRENCY_RANGE = (1, 1000)
LEASE_TIMEOUT = 30.0
MAX_LEASE_TIMEOUT = 86400.0  # heartbeats renew a lease; none reaches further
HEARTBEAT_SHARE = 1 / 3  # of the lease, unless heartbeat_interval is given
SHUTDOWN_TIMEOUT = 30.0
SWEEP_INTERVAL = 1.0
DEAD_WORKER_AFTER = 60.0
# Seconds a stopped or dead worker's row is kept for the views, then deleted.
STOPPED_WORKER_KEPT = 7 * 24 * 3600.0
SCHEDULE_INTERVAL = 1.0
# Auto-scaling (a worker's executors, a supervisor's processes): a pool short of
# room grows a step after this many seconds, and one with room unused for
# SCALE_DOWN_AFTER seconds shrinks. Processes cost more to start: they grow
# more slowly, on the backlog read every PROCESS_BACKLOG_READ seconds.
SCALE_UP_AFTER = 1.0
SCALE_DOWN_AFTER = 30.0
PROCESS_SCALE_UP_AFTER = 5.0
PROCESS_BACKLOG_READ = 2.0

# The sweeper and retention.
SWEEP_BATCH_SIZE = 500
RETENTION = 7 * 86400.0  # seconds: a week of history, then pruned
PRUNE_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000
MAX_RETENTION = 100 * 365 * 86400.0  # far longer horizons overflow Postgres intervals
# The outcome rollup: a pass counts tasks finished at least this long ago (a
# finishing transaction open longer may be missed), and keeps a day of minutes.
ROLLUP_SETTLE = 5.0
ROLLUP_KEEP = 86400.0


def max_attempts(max_retries: int) -> int:
    """Attempts in all for a task allowed ``max_retries`` further ones."""
    return max_retries + 1


MAX_ATTEMPTS = max_attempts(MAX_RETRIES)
MAX_ATTEMPTS_RANGE = (max_attempts(MAX_RETRIES_RANGE[0]), max_attempts(MAX_RETRIES_RANGE[1]))

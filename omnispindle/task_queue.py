"""``TaskQueue``: a handle on the one database that holds the queue."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from typing_extensions import Self

from omnispindle._core import defaults, validation
from omnispindle._db import embedded, migrations
from omnispindle._db import queries as q
from omnispindle._db.connecting import check_other_dsns
from omnispindle._db.namespace import Namespace
from omnispindle._db.notifier import Listens, Notifier
from omnispindle._db.pool import Database
from omnispindle._db.query import Query
from omnispindle._db.replica import Replica
from omnispindle._db.rows import WorkerRow
from omnispindle._maintenance import retention
from omnispindle._maintenance.sweeper import Sweeper, SweeperConfig
from omnispindle._observe import metrics
from omnispindle.errors import ConfigurationError

T = TypeVar("T")
log = logging.getLogger("omnispindle")

RECOVERY_BATCH = 1000


class TaskQueue:
    """The queue: a database connection pool, its notifications and, by default, the database.

    Args:
        dsn: a Postgres connection string. Without it, ``$OMNISPINDLE_DSN`` is
            used; without that, an embedded Postgres is started.
        persistence_path: directory of the embedded database (default
            ``.omnispindle/pgdata``); the queue's state lives there and
            survives restarts. Only for the embedded database.
        migrate: bring the schema to the latest version on start (safe to
            run from many processes at once; a database already at the
            latest version is only read). By default only the embedded
            database is migrated; a database given by DSN is checked, and one
            without the latest schema refused: migrate it with ``omnispindle
            migrate``, your own Alembic history, or ``migrate=True``.
        pool_size: most connections this process opens.
        pool_timeout: seconds a call waits for a connection before it raises
            ``DatabaseUnavailableError`` (the database is down, or every
            connection is busy); 5 by default, so that an outage is known in
            seconds. The connect timeout is the DSN's ``connect_timeout``
            (5 s unless it sets one).
        schema: the schema the queue lives in (default ``$OMNISPINDLE_SCHEMA``,
            else ``omnispindle``). Each schema of a database is a queue of its
            own: its tasks, workers, sweeper, locks and notifications see no
            other's. A lowercase name of letters, digits and underscores.
        pooler: the DSN leads to a pooler that hands each transaction to any
            server connection (PgBouncer in transaction mode, Supavisor, RDS
            Proxy): no statement is prepared, and LISTEN goes to ``listen_dsn``.
        listen_dsn: a direct connection to the database (not through the
            pooler) for LISTEN. Without one, behind a pooler, nothing listens:
            workers and waits wake by their poll intervals alone.
        read_dsn: a streaming replica of the database, for what only reads:
            ``get_task``, waits' checks, inspection, metrics, ``status`` and the
            dashboard's pages. Its pool opens on first use. Writes, claims and
            LISTEN stay on ``dsn``. A replica lags: a task it has not replayed
            yet is read from ``dsn`` instead; a wait checks on ``dsn`` until
            the replica has replayed the wait's start, so it returns no record
            older than that (a task retried just before is waited for anew),
            and one woken by a notification checks again soon while the
            replica catches up.
            ``stream_task`` reads ``dsn``; an ``AsyncTaskQueueClient`` given
            this queue reads the replica too.

    Raises:
        ConfigurationError: ``persistence_path`` given together with a DSN.
        ValidationError: ``schema`` is not a name a queue may use.
        EmbeddedServerUnavailable: no DSN and pgserver not installed.
        DatabaseUnavailableError: the database cannot be reached within the
            connect timeout (5 s unless the DSN sets ``connect_timeout``), or
            refused the connection; the server's reason is in the message.
        SchemaMissingError: not migrating, and the schema is not installed.
        SchemaOutdatedError: not migrating, and the schema is older than this
            version needs (or records no revision).

    Example:
        >>> queue = TaskQueue()            # embedded Postgres  # doctest: +SKIP
        >>> queue = TaskQueue(dsn="postgresql://app@db/app")   # doctest: +SKIP
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        persistence_path: str | os.PathLike[str] | None = None,
        migrate: bool | None = None,
        pool_size: int = defaults.POOL_SIZE,
        pool_timeout: float = defaults.POOL_TIMEOUT,
        schema: str | None = None,
        pooler: bool = False,
        listen_dsn: str | None = None,
        read_dsn: str | None = None,
    ) -> None:
        self.namespace = Namespace.chosen(schema)
        check_other_dsns(listen_dsn, read_dsn)
        dsn = dsn or os.environ.get(embedded.DSN_VARIABLE)
        if dsn and persistence_path is not None:
            raise ConfigurationError(
                "persistence_path selects the embedded database's directory; with a DSN "
                "the queue's state already persists in that database"
            )
        self._server: embedded.Server | None = None
        if not dsn:
            self._server = embedded.start_server(persistence_path)
            dsn = self._server.get_uri()
        self.dsn: str = dsn
        self.pooler = pooler
        self.listen_dsn = listening_dsn(dsn, pooler, listen_dsn)
        self._migrate = self.embedded if migrate is None else migrate
        self.read_dsn = read_dsn
        self._pool_size = pool_size
        self._replica: Replica | None = None
        self._replica_lock = threading.Lock()
        self._notifier: Listens | None = None
        self._notifier_pid = os.getpid()  # of the process _notifier hears for
        self._notifier_lock = threading.Lock()
        # Called first by shutdown(): the stops of the workers running on this queue,
        # which need its pool to hand their tasks back.
        self._stops_first: list[Callable[[], None]] = []
        try:
            # Before the pool opens: a database that cannot be reached, or
            # cannot be used, fails here once with its reason.
            self._prepare_schema()
            self.db = Database(
                dsn,
                max_size=pool_size,
                namespace=self.namespace,
                timeout=validation.positive_number("pool_timeout", pool_timeout),
                pooler=pooler,
            )
        except BaseException:
            self.shutdown()
            raise

    @property
    def embedded(self) -> bool:
        """True when this queue started its own embedded Postgres."""
        return self._server is not None

    @property
    def notifier(self) -> Listens:
        """The process's LISTEN connection for this queue, started on first use, and
        again in a process forked from this one: the parent's listening thread does
        not run there, and its connection is the parent's.

        Raises:
            ConfigurationError: the queue was shut down.
        """
        with self._notifier_lock:
            self.db.refuse_if_closed()
            if self._notifier is None or self._notifier_pid != os.getpid():
                notifier = Notifier(self.listen_dsn, namespace=self.namespace)
                # Its thread holds the notifier, not the queue: a queue (or the
                # client that opened it) let go without shutdown() stops it
                # as its pool's connections close.
                weakref.finalize(self, notifier.stop_soon)
                self._notifier = notifier
                self._notifier_pid = os.getpid()
            return self._notifier

    def listen_through(self, notifier: Listens) -> None:
        """Hear notifications through ``notifier`` rather than a LISTEN connection of
        this queue's own: a worker process whose supervisor relays them."""
        with self._notifier_lock:
            self._close_notifier()
            self._notifier = notifier
            self._notifier_pid = os.getpid()

    @property
    def reads(self) -> Database:
        """Where what only reads runs: the replica's pool (opened on first use), else
        ``db``. The replica hands to ``db`` what it cannot answer yet (see ``Replica``).

        Raises:
            ConfigurationError: the queue was shut down.
        """
        self.db.refuse_if_closed()
        if self.read_dsn is None:
            return self.db
        with self._replica_lock:
            if self._replica is None:
                self._replica = Replica(
                    self.read_dsn, self.db, max_size=self._pool_size, pooler=self.pooler
                )
            return self._replica

    def read(self, query: Query[T]) -> T:
        """Run a query that only reads: on the replica, else on the primary.

        A task the replica has not replayed yet, or a read that replay cancelled,
        is read from the primary: a task just submitted is found at once.
        """
        return self.reads.read(query)

    def load_state(self) -> dict[str, int]:
        """Re-attach to the stored queue and recover work left by a crash.

        Tasks still marked running whose lease has expired go back to
        pending (or to failed when no attempts are left).

        Returns:
            The number of tasks in each state, after recovery.
        """
        self._prepare_schema()
        sweeper = Sweeper(self.db, SweeperConfig(batch_size=RECOVERY_BATCH))
        while sweeper.run_once().changed >= RECOVERY_BATCH:
            pass
        return {row["state"]: row["count"] for row in self.db.run(q.tasks.count_tasks_by_state())}

    def prune(self, older_than: float, batch_size: int = defaults.PRUNE_BATCH_SIZE) -> int:
        """Delete finished tasks that finished more than ``older_than`` seconds ago.

        Their dependency edges and streamed results go with them. A task is
        kept while a dependent still needs its result: one that is blocked,
        pending or running, or that failed within the horizon (it may be
        retried by hand). Deletes in batches of ``batch_size``, each its own
        short transaction, until none is left.

        Returns:
            The number of tasks deleted.

        Raises:
            ValidationError: ``older_than`` is not a positive number of seconds
                (at most a century) or ``batch_size`` not an int from 1 to
                100,000; nothing is deleted.

        Example:
            >>> queue.prune(older_than=7 * 86400)  # doctest: +SKIP
            1250
        """
        return retention.prune(self.db, older_than, batch_size)

    def list_workers(self) -> list[WorkerRow]:
        """Every registered worker with its health: ``state`` is active, stopped or dead.

        Also gives capabilities, concurrency, running task count, the age of
        the last heartbeat in seconds, and ``lost``: an active worker silent
        for longer than its lease (its leases have expired; a sweeper will
        declare it dead).
        """
        return self.read(q.workers.list_workers())

    def get_metrics(self) -> metrics.Snapshot:
        """Figures on the queue and its workers, read in one consistent snapshot.

        Times are in seconds, rates are fractions from 0 to 1, and "last
        minute" and "last hour" windows end at ``collected_at`` (the database
        clock). A figure with nothing to measure (a rate or percentile without
        finished tasks, the age when nothing is ready) is None.

        Returns:
            ``task_types``: a row per task type of the ``task_metrics`` view:
            counts per state (``blocked`` ... ``cancelled``); ``finished_``,
            ``succeeded_``, ``failed_`` and ``cancelled_last_minute``; the same
            and ``retried_last_hour`` (finished after more than one attempt);
            ``failure_rate_last_hour`` (failed / (succeeded + failed)),
            ``retry_rate_last_hour`` (retried / finished); ``wait_p50_seconds``,
            ``_p95``, ``_p99`` (start minus ``run_after``) and ``run_p50_seconds``
            ... (finish minus start) over tasks finished in the last hour; and
            ``oldest_ready_seconds``.
            ``workers``: a row per registered worker of the ``worker_metrics``
            view: ``id``, ``name``, ``host``, ``pid``, ``state``,
            ``concurrency``, ``running_tasks``, ``utilisation`` (running /
            concurrency), ``finished_last_minute``, ``finished_last_hour``,
            ``failed_last_hour``, ``heartbeat_age_seconds``.
            ``limits``: a row per limited task type, as ``task_type_limits()``
            returns them (its running and ready tasks, tokens, ``held_back``).
            ``paused``: the paused task types, by name.
            ``unclaimable``: a row per task type and set of capabilities its
            ready tasks need that no live worker of the type declares all of
            (the ``unclaimable_tasks`` view): ``task_type``,
            ``required_capabilities``, ``ready``, ``missing_capabilities``.
            ``totals``: the counts summed over task types, their rates, the
            largest ``oldest_ready_seconds``, ``workers``: the number of
            workers in each state, ``demand``: the tasks that could run at
            once now (running and ready, within limits; see ``workers_needed``),
            and ``unclaimable``: the ready tasks no live worker can run.
            ``collected_at``: when the snapshot was read (a ``datetime``).
        """
        return self.reads.run(metrics.snapshot())

    def stop_first(self, stop: Callable[[], None]) -> Callable[[], None]:
        """Have :meth:`shutdown` call ``stop`` before it closes anything; returns
        what takes it back. A worker running on this queue stops so, while it can
        still hand its tasks back and mark itself stopped."""
        self._stops_first.append(stop)
        return lambda: self._stops_first.remove(stop)

    def shutdown(self) -> None:
        """Close connections, and stop the embedded server if this queue started it.

        A worker still running on the queue is stopped first, as
        ``stop(now=True)`` stops it: its running tasks are handed back. Later
        calls on the queue, or on a client using it, raise
        ``ConfigurationError`` and open no connection.
        """
        for stop in list(self._stops_first):
            stop()
        if self._replica is not None:
            self._replica.close()
            self._replica = None
        if hasattr(self, "db"):  # a queue that failed to start has no pool
            self.db.close()
        # After the pool: the waits it wakes find the queue shut down.
        self._close_notifier()
        self._notifier = None
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def _close_notifier(self) -> None:
        """Close this process's notifier; a forked child leaves its parent's alone."""
        if self._notifier is not None and self._notifier_pid == os.getpid():
            self._notifier.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _prepare_schema(self) -> None:
        migrations.prepare(
            self.dsn, migrate=self._migrate, namespace=self.namespace, pooler=self.pooler
        )


def listening_dsn(dsn: str, pooler: bool, listen_dsn: str | None) -> str | None:
    """Where LISTEN connects: a pooler would lose its session, so behind one only
    a direct DSN, else nowhere."""
    return listen_dsn or (None if pooler else dsn)


def open_queue(
    local_queue: TaskQueue | None,
    dsn: str | None,
    pool_size: int | None = None,
    schema: str | None = None,
    *,
    pooler: bool = False,
    listen_dsn: str | None = None,
    read_dsn: str | None = None,
) -> tuple[TaskQueue, bool]:
    """The queue a client or worker uses, and whether it owns it (and must shut it down).

    ``pooler``, ``listen_dsn`` and ``read_dsn`` are those of a queue it opens,
    as ``TaskQueue`` takes them.

    Raises:
        ConfigurationError: both a queue and a DSN were given, the queue is no
            TaskQueue, or a setting of the queue comes with one (which keeps its
            own pool, schema, pooler, LISTEN DSN and replica).
    """
    given = given_queue(local_queue, dsn)
    if given is None:
        size = defaults.POOL_SIZE if pool_size is None else pool_size
        queue = TaskQueue(
            dsn,
            pool_size=size,
            schema=schema,
            pooler=pooler,
            listen_dsn=listen_dsn,
            read_dsn=read_dsn,
        )
        return queue, True
    refuse_queue_settings(
        pool_size=pool_size,
        schema=schema,
        pooler=pooler or None,  # False asks for nothing of the queue
        listen_dsn=listen_dsn,
        read_dsn=read_dsn,
    )
    return given, False


def refuse_queue_settings(**settings: object) -> None:
    """Refuse settings of a queue that come with a TaskQueue given as local_queue,
    which has them already.

    Raises:
        ConfigurationError: one of ``settings`` is not None.
    """
    for setting, value in settings.items():
        if value is not None:
            raise ConfigurationError(
                f"{setting} is a setting of the queue a client opens itself; pass it to the "
                f"TaskQueue given as local_queue (TaskQueue(..., {setting}=...))"
            )


def given_queue(local_queue: Any, dsn: str | None) -> TaskQueue | None:
    """The caller's own TaskQueue, checked, or None when it gave none.

    Raises:
        ConfigurationError: both a queue and a DSN were given, or the queue is no TaskQueue.
    """
    if local_queue is not None and dsn is not None:
        raise ConfigurationError("give either local_queue or dsn, not both")
    if local_queue is not None and not isinstance(local_queue, TaskQueue):
        hint = "; pass a database as dsn=..." if isinstance(local_queue, str) else ""
        raise ConfigurationError(
            f"local_queue must be a TaskQueue, got {type(local_queue).__name__}{hint}"
        )
    return local_queue

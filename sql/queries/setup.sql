-- Statements for set-up: migrations, the schema check, and LISTEN.

-- name: pin_session
-- Run on every connection this package opens, before its first statement:
-- the settings its statements and their reading depend on, whatever the
-- database or role sets by default. psycopg reads a time only in the ISO
-- DateStyle: German, SQL or Postgres made every read of a task fail. Its
-- statements are written for read committed: under a default of serializable
-- or repeatable read, concurrent submits and claims failed with
-- serialization_failure. (A caller's own transaction, given as connection=,
-- keeps its level.) Its triggers keep the queue's state: with
-- session_replication_role = replica (a default a replication tool may leave)
-- none fired, so that a dependent of a failed task stayed blocked and no
-- submission woke a worker. Set only when it differs, as only a superuser may
-- set it: another role given that default is refused here, at its first
-- connection, rather than left to corrupt the queue.
SELECT set_config('DateStyle', 'ISO', false),
       set_config('default_transaction_isolation', 'read committed', false),
       CASE WHEN current_setting('session_replication_role') <> 'origin'
            THEN set_config('session_replication_role', 'origin', false) END;

-- name: pin_pooled_session
-- pin_session behind a pooler that hands each transaction to any server
-- connection (PgBouncer in transaction mode): only what the pooler carries
-- over to the server connection it hands (DateStyle). Any other setting would
-- stay on the one server connection that ran this, for whichever client it
-- serves next.
SELECT set_config('DateStyle', 'ISO', false);

-- name: bound_lock_waits
-- Every lock wait of the rest of the transaction (a migrator's lock, its DDL
-- behind long transactions) ends after the timeout.
SELECT set_config('lock_timeout', %(timeout_ms)s::text, true);

-- name: lock_first_install
-- Serialises the migrators of a schema that has no version table yet, until
-- their transaction ends. Any role that can connect can hold this key, but it
-- only guards the first install, and the wait for it is bounded.
SELECT pg_advisory_xact_lock(hashtext('omnispindle.migrate'));

-- name: lock_version_table
-- Serialises the migrators of an installed schema, until their transaction
-- ends: this mode conflicts with itself, and taking it needs rights on the
-- table that only the schema's owner has.
LOCK TABLE omnispindle.alembic_version IN SHARE ROW EXCLUSIVE MODE;

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS omnispindle;

-- name: schema_installed
SELECT to_regclass('omnispindle.tasks') IS NOT NULL AS installed;

-- name: listen_ready
LISTEN omnispindle_ready;

-- name: listen_finished
LISTEN omnispindle_finished;

-- name: listen_cancel
LISTEN omnispindle_cancel;

-- name: listen_stream
LISTEN omnispindle_stream;

-- name: listen_probe
LISTEN omnispindle_probe;

-- name: notify_probe
-- A listener that has heard nothing for a while sends this from another
-- connection: if it does not come back, the listening connection is dead.
SELECT pg_notify('omnispindle_probe', %(token)s);

-- name: version_table_exists
SELECT to_regclass('omnispindle.alembic_version') IS NOT NULL AS present;

-- name: schema_version
-- The revision Alembic recorded; asked before migrating, so that a database
-- already at the latest one is only read.
SELECT version_num FROM omnispindle.alembic_version;

-- name: create_version_table
-- Alembic's own version table, for a schema that an application's Alembic
-- history installs (apply_migration records each revision it applies here).
CREATE TABLE IF NOT EXISTS omnispindle.alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- name: forget_other_revisions
DELETE FROM omnispindle.alembic_version WHERE version_num IS DISTINCT FROM %(revision)s;

-- name: record_revision
INSERT INTO omnispindle.alembic_version (version_num) VALUES (%(revision)s)
ON CONFLICT DO NOTHING;

-- name: seed_maintenance_locks
-- The rows of the maintenance locks (migration 0007), which a copy of the
-- schema without its rows (pg_dump --schema-only, or without the queue's
-- data) lacks: stamping puts them back, or no sweeper would ever prune or
-- archive (each takes a missing lock for one another pruner holds).
INSERT INTO omnispindle.maintenance_locks (name) VALUES ('prune'), ('idempotency')
ON CONFLICT DO NOTHING;

-- name: seed_outcome_rollup
-- The rollup's watermark row (migration 0008), put back the same way: without
-- it no pass counts an outcome, and none is ever archived.
INSERT INTO omnispindle.outcome_rollup (counted_until) VALUES ('-infinity')
ON CONFLICT DO NOTHING;

-- name: grant_access
-- Gives an existing role one kind of access (see omnispindle.grant_access).
-- The role is given by its name, as createuser takes it: quoted here, so that
-- capitals, dots and other characters are the name's own (unquoted, regrole
-- folds them to lowercase, and a dot splits the name). A name no role has is
-- refused (undefined_object).
SELECT omnispindle.grant_access(pg_catalog.quote_ident(%(role)s::text)::regrole, %(access)s);

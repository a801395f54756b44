-- Statements for set-up: migrations, the schema check, and LISTEN.

-- name: lock_migrations
-- Serialises concurrent migrators for the rest of their transaction.
SELECT pg_advisory_xact_lock(hashtext('omnispindle.migrate'));

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

-- name: version_table_exists
SELECT to_regclass('omnispindle.alembic_version') IS NOT NULL AS present;

-- name: schema_version
-- The revision Alembic recorded; asked before migrating, so that a database
-- already at the latest one is only read.
SELECT version_num FROM omnispindle.alembic_version;

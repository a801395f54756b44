-- Statements of the test suite: each test gets a database of its own.
-- Identifiers are filled in with psycopg.sql.Identifier.

-- name: create_database
CREATE DATABASE {database} TEMPLATE {template};

-- name: drop_database
DROP DATABASE IF EXISTS {database} WITH (FORCE);

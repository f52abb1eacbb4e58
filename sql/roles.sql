-- Least-privilege roles for indexd, for one managed database. Idempotent: run it again after a change.
--
-- Run as a superuser, connected to the managed database (psql 15 or later):
--
--   INDEXD_LOGIN_PASSWORD='...' psql -d app -v app_owner=app -f sql/roles.sql
--
-- Variables (psql -v NAME=VALUE):
--   app_owner     required: the role that owns the application's tables
--   group_role    NOLOGIN role holding every privilege below          (default: indexd_group)
--   login_role    LOGIN role indexd connects as, member of group_role (default: indexd, as in the DSN
--                 postgresql://indexd@db1:5432/app)
--   state_schema  indexd's own schema, owned by group_role          (default: indexd)
-- The password is read from the environment variable INDEXD_LOGIN_PASSWORD (never from the command line,
-- where `ps` would show it); without it the role gets no password: set one later with \password.
--
-- What the roles may do, and why:
--   * pg_monitor (which includes pg_read_all_stats): read pg_stat_statements with the query text of every
--     user's statements, pg_stat_activity, pg_stat_progress_create_index and the settings the guards check.
--   * own the state schema and CREATE on the database: `indexd migrate` runs CREATE SCHEMA IF NOT EXISTS, which
--     PostgreSQL checks against the database's CREATE privilege even when the schema already exists. The same
--     privilege would let indexd create other schemas; it has no other use for it.
--   * membership in app_owner: PostgreSQL lets only the OWNER of a table (or a member of the owning role) run
--     CREATE INDEX or DROP INDEX on it; there is no GRANT for it (the index also lands in the table's schema,
--     so the owner needs CREATE on that schema, as it normally has: it created its tables there). This is the price of automatic index builds:
--     a member of the owning role can also read and write every row of the application's tables, ALTER,
--     TRUNCATE and DROP them. Nothing smaller exists in PostgreSQL 15. If that is too much:
--       - run with -v app_owner= (empty): no membership; keep indexd in mode `advise` and apply its
--         CREATE INDEX CONCURRENTLY statements yourself as the owner;
--       - or, on PostgreSQL 16+, grant the membership WITH INHERIT FALSE, SET TRUE so the owner's rights are
--         used only by sessions that SET ROLE to it explicitly (indexd's builds would have to do so).
--   * nothing else: the roles cannot read schemas or tables that neither they nor app_owner own unless granted,
--     are not superusers, cannot create roles or databases, and cannot bypass row security.
--
-- Sessions of login_role start as group_role (ALTER ROLE ... SET role), so every object indexd creates (state
-- tables, ...) belongs to group_role, whichever login made it: several indexd hosts may use several logins.

\set ON_ERROR_STOP on

\if :{?app_owner}
\else
  \echo 'sql/roles.sql: set the owner of the application tables: psql -v app_owner=ROLE -f sql/roles.sql'
  \quit
\endif
\if :{?group_role}
\else
  \set group_role indexd_group
\endif
\if :{?login_role}
\else
  \set login_role indexd
\endif
\if :{?state_schema}
\else
  \set state_schema indexd
\endif
\getenv login_password INDEXD_LOGIN_PASSWORD

BEGIN;

SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'group_role') AS need_group,
       NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login_role') AS need_login,
       :'app_owner' <> '' AS with_owner
\gset
\if :need_group
  CREATE ROLE :"group_role" NOLOGIN;
\endif
\if :need_login
  CREATE ROLE :"login_role" LOGIN;
\endif
ALTER ROLE :"group_role" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"login_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
\if :{?login_password}
  ALTER ROLE :"login_role" PASSWORD :'login_password';
\endif

GRANT :"group_role" TO :"login_role";
ALTER ROLE :"login_role" SET role = :'group_role';
GRANT pg_monitor TO :"group_role";

GRANT CONNECT, CREATE ON DATABASE :"DBNAME" TO :"group_role";
CREATE SCHEMA IF NOT EXISTS :"state_schema" AUTHORIZATION :"group_role";
ALTER SCHEMA :"state_schema" OWNER TO :"group_role";

\if :with_owner
  GRANT :"app_owner" TO :"group_role";
\endif

COMMIT;

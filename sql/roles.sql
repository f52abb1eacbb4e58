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
--   createdb      on | off: CREATEDB for test restores (below)       (default: on)
-- The password is read from the environment variable INDEXD_LOGIN_PASSWORD (never from the command line,
-- where `ps` would show it); without it the role gets no password: set one later with \password.
--
-- What the roles may do, and why (`indexd check` tests each of these as the role indexd connects as):
--   * pg_monitor (which includes pg_read_all_stats and pg_read_all_settings): read pg_stat_statements with the
--     query text of every user's statements, pg_stat_activity, pg_stat_progress_create_index, and the settings
--     the guards and `indexd check` read (shared_preload_libraries among them).
--   * pg_signal_backend: at stop, the daemon cancels its own running index builds; a build session belongs to
--     the login role, so cancelling it from another session (or another indexd host's login) needs this role.
--     It cannot signal superusers' sessions.
--   * EXECUTE on HypoPG's functions and SELECT on its views (hypopg(), hypopg_create_index, hypopg_drop_index,
--     hypopg_reset, hypopg_relation_size, hypopg_get_indexdef, the view hypopg_list_indexes): the advisor's
--     what-if costing. Hypothetical indexes live in the session's own memory; nothing is written. The view is
--     not readable by PUBLIC, so without this grant the advisor loses candidate sets. CREATE EXTENSION hypopg
--     (as a superuser) must come first: when the extension is created (or re-created) after this file ran,
--     run this file again.
--   * CREATEDB (-v createdb=on, the default): the scheduled test restores create a scratch database
--     (indexd_verify_...) on this server, restore the newest backup into it, compare row counts and drop it.
--     With -v createdb=off the group role gets NOCREATEDB; then point backups.verify.restore_dsn at another
--     server where the role may create databases, or set backups.enabled: false (no backups, no test restores).
--     A test restore as a non-superuser leaves out the extensions only a superuser may create (HypoPG,
--     pg_stat_statements: indexd's own tools, no data of the application).
--   * own the state schema, created here: `indexd migrate` creates its tables in it, as the group role. The
--     tables belong to the schema's owner whoever runs the migration (a superuser's run does SET LOCAL ROLE to
--     it), and this file gives the group role any state table another role owns (ALTER TABLE ... OWNER TO).
--     CREATE on the database is granted too, for a state schema indexd must create itself (another name).
--   * membership in app_owner: PostgreSQL lets only the OWNER of a table (or a member of the owning role) run
--     CREATE INDEX or DROP INDEX on it; there is no GRANT for it (the index also lands in the table's schema,
--     so the owner needs CREATE on that schema, as it normally has: it created its tables there). This is the price of automatic index builds:
--     a member of the owning role can also read and write every row of the application's tables, ALTER,
--     TRUNCATE and DROP them. Nothing smaller exists in PostgreSQL 15. If that is too much:
--       - run with -v app_owner= (empty): no membership; keep indexd in mode `advise` and apply its
--         CREATE INDEX CONCURRENTLY statements yourself as the owner;
--       - or, on PostgreSQL 16+, grant the membership WITH INHERIT FALSE, SET TRUE so the owner's rights are
--         used only by sessions that SET ROLE to it explicitly (indexd's builds would have to do so).
--     Tables of several owners: run this file once per owner (-v app_owner=OTHER); each run adds a membership.
--   * nothing else: the roles cannot read schemas or tables that neither they nor app_owner own unless granted,
--     are not superusers, cannot create roles, and cannot bypass row security.
--
-- Re-running this file never takes away what indexd needs: it grants, and only resets the role attributes
-- indexd must not have (SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS).
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
\if :{?createdb}
\else
  \set createdb on
\endif
\getenv login_password INDEXD_LOGIN_PASSWORD

BEGIN;

SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'group_role') AS need_group,
       NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login_role') AS need_login,
       :'app_owner' <> '' AS with_owner,
       lower(:'createdb') IN ('on', 'true', 'yes', '1') AS with_createdb,
       EXISTS (SELECT FROM pg_extension WHERE extname = 'hypopg') AS with_hypopg
\gset
\if :need_group
  CREATE ROLE :"group_role" NOLOGIN;
\endif
\if :need_login
  CREATE ROLE :"login_role" LOGIN;
\endif
ALTER ROLE :"group_role" NOLOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"login_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
\if :with_createdb
  ALTER ROLE :"group_role" CREATEDB;
\else
  ALTER ROLE :"group_role" NOCREATEDB;
\endif
\if :{?login_password}
  ALTER ROLE :"login_role" PASSWORD :'login_password';
\endif

GRANT :"group_role" TO :"login_role";
ALTER ROLE :"login_role" SET role = :'group_role';
GRANT pg_monitor TO :"group_role";
GRANT pg_signal_backend TO :"group_role";

GRANT CONNECT, CREATE ON DATABASE :"DBNAME" TO :"group_role";
CREATE SCHEMA IF NOT EXISTS :"state_schema" AUTHORIZATION :"group_role";
ALTER SCHEMA :"state_schema" OWNER TO :"group_role";
-- State tables another role made (a superuser's first run of an older indexd) go to the group role.
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             ELSE 'TABLE' END, n.nspname, c.relname, :'group_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :'state_schema' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
   AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'group_role')
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
\gexec

\if :with_hypopg
  -- Every function and view of the HypoPG extension, wherever it was created.
  SELECT format('GRANT %s ON %s %I.%s TO %I',
                CASE WHEN d.classid = 'pg_proc'::regclass THEN 'EXECUTE' ELSE 'SELECT' END,
                CASE WHEN d.classid = 'pg_proc'::regclass THEN 'FUNCTION' ELSE 'TABLE' END,
                n.nspname,
                CASE WHEN d.classid = 'pg_proc'::regclass
                     THEN format('%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
                     ELSE quote_ident(c.relname) END,
                :'group_role')
    FROM pg_depend d
    JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hypopg'
    LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
    LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid AND c.relkind = 'v'
    JOIN pg_namespace n ON n.oid = coalesce(p.pronamespace, c.relnamespace)
   WHERE d.deptype = 'e' AND (p.oid IS NOT NULL OR c.oid IS NOT NULL)
  \gexec
\else
  \echo 'sql/roles.sql: HypoPG is not created in this database yet: as a superuser run CREATE EXTENSION hypopg, then this file again (it grants HypoPG''s functions and view)'
\endif

\if :with_owner
  GRANT :"app_owner" TO :"group_role";
\endif

COMMIT;

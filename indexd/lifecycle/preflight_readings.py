"""The catalog readings `preflight.decide` judges, taken on one connection as the role indexd connects as, and
the one call the commands make: `preflight(db, needs)` (read, then decide). Reads only; changes nothing."""

from __future__ import annotations

import logging

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database, PgConnection
from indexd.dsn import redact_dsn
from indexd.lifecycle.preflight import (
    HYPOPG,
    HYPOPG_FUNCTIONS,
    HYPOPG_VIEWS,
    QUALSTATS,
    STATS,
    Check,
    HypoObject,
    Needs,
    QualstatsRoom,
    Readings,
    decide,
)
from indexd.state.ownership import read_ownership

log = logging.getLogger(__name__)

_SERVER = """
SELECT current_database(), current_setting('server_version'), current_setting('server_version_num')::int,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
       pg_is_in_recovery(), session_user, r.rolsuper, r.rolcreatedb,
       r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       r.rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),
       has_database_privilege(current_database(), 'CREATE')
  FROM pg_roles r WHERE r.rolname = current_user
"""
_EXTENSIONS = """
SELECT a.name, e.extname IS NOT NULL, n.nspname
  FROM pg_available_extensions a FULL JOIN pg_extension e ON e.extname = a.name
  LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE coalesce(a.name, e.extname) = ANY(%s)
"""
_HYPOPG = """
SELECT 'function', p.proname, format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       has_function_privilege(p.oid, 'EXECUTE')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hypopg'
 WHERE p.proname = ANY(%s)
UNION ALL
SELECT 'view', c.relname, format('%%I.%%I', n.nspname, c.relname), has_table_privilege(c.oid, 'SELECT')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hypopg'
 WHERE c.relname = ANY(%s)
 ORDER BY 1, 2
"""
# Tables advice may target: the user's own (not catalogs, not the state schema, not an extension's), partitions
# through their parent. A partitioned table counts as indexable only when every partition's owner is usable too:
# its build indexes each partition (ON ONLY the parent, then CONCURRENTLY per partition), as its owner.
_TABLES = """
WITH t AS (
  SELECT c.oid, c.relowner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> %s
     AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype = 'e')),
owner AS (
  SELECT t.oid, t.relowner AS role FROM t
  UNION
  SELECT t.oid, p.relowner FROM t, pg_partition_tree(t.oid) tree JOIN pg_class p ON p.oid = tree.relid),
usable AS (SELECT oid, role, pg_has_role(current_user, role, 'USAGE') AS mine FROM owner)
SELECT (SELECT count(*) FROM t),
       (SELECT count(*) FROM t WHERE NOT EXISTS (SELECT 1 FROM usable u WHERE u.oid = t.oid AND NOT u.mine)),
       coalesce((SELECT array_agg(DISTINCT pg_get_userbyid(role)) FROM usable WHERE NOT mine), '{}'),
       coalesce((SELECT array_agg(DISTINCT pg_get_userbyid(role)) FROM usable JOIN pg_roles r ON r.oid = role
                  WHERE NOT mine AND r.rolsuper), '{}')
"""


def _stats_loaded(conn: PgConnection, schema: str | None) -> bool | None:
    """Whether pg_stat_statements answers (it refuses when not preloaded); None when it is not created."""
    if schema is None:
        return None
    with conn.cursor() as cur:
        try:
            cur.execute(sql.SQL("SELECT 1 FROM {}.pg_stat_statements_info").format(sql.Identifier(schema)))
        except psycopg2.errors.ObjectNotInPrerequisiteState:
            return False
        except psycopg2.Error:
            return None  # not ours to judge here (a privilege, say): the other checks name it
    return True


_QUALSTATS_ROOM = """
SELECT current_setting('pg_qualstats.max')::int, current_setting('pg_qualstats.track_constants')::bool,
       current_setting('pg_qualstats.sample_rate')::float8, current_setting('max_connections')::int,
       (SELECT count(*) FROM {schema}.pg_qualstats()), (SELECT count(*) FROM {schema}.pg_qualstats_example_queries())
"""


def _qualstats_room(conn: PgConnection, schema: str | None) -> QualstatsRoom | None:
    """How full pg_qualstats' tables are; None when it is not created, not loaded or not readable."""
    if schema is None:
        return None
    with conn.cursor() as cur:
        try:
            cur.execute(sql.SQL(_QUALSTATS_ROOM).format(schema=sql.Identifier(schema)))
        except psycopg2.Error:
            return None  # not preloaded (its settings are unknown) or not allowed: the other checks name it
        max_entries, track, rate, connections, predicates, examples = cur.fetchone()
    sample = 1.0 / max(int(connections), 1) if float(rate) < 0 else float(rate)
    return QualstatsRoom(int(max_entries), int(predicates), int(examples), bool(track), min(sample, 1.0))


def read_readings(conn: PgConnection, state_schema: str) -> Readings:
    """Every reading of the preflight, on an autocommit connection (a refused probe must not abort the rest)."""
    with conn.cursor() as cur:
        cur.execute(_SERVER)
        (dbname, version, version_num, preload, standby, login, superuser, createdb, read_stats, signal,
         create_db) = cur.fetchone()
        cur.execute(_EXTENSIONS, ([STATS, HYPOPG, QUALSTATS, "pg_trgm"],))
        ext_rows = cur.fetchall()
        cur.execute(_HYPOPG, (list(HYPOPG_FUNCTIONS), list(HYPOPG_VIEWS)))
        hypo = tuple(HypoObject(r[0], r[1], r[2], bool(r[3])) for r in cur.fetchall())
        cur.execute(_TABLES, (state_schema,))
        tables, indexable, owners, superusers = cur.fetchone()
    created = {r[0]: r[2] for r in ext_rows if r[1]}
    libraries = None if preload is None else tuple(x.strip().strip('"') for x in preload.split(",") if x.strip())
    return Readings(
        database=dbname, server_version=version, server_version_num=int(version_num), preload=libraries,
        stats_loaded=_stats_loaded(conn, created.get(STATS)), available=frozenset(r[0] for r in ext_rows if r[0]),
        created=frozenset(created), standby=bool(standby), login=login, superuser=bool(superuser),
        read_all_stats=bool(read_stats), signal_backend=bool(signal), createdb=bool(createdb or superuser),
        create_on_database=bool(create_db), hypopg=hypo, tables=int(tables), indexable=int(indexable),
        table_owners=tuple(sorted(owners)), superuser_owners=frozenset(superusers),
        state=read_ownership(conn, state_schema), qualstats=_qualstats_room(conn, created.get(QUALSTATS)))


def needs_of(db: DatabaseSettings) -> Needs:
    """What this database's configuration asks of the server."""
    ix = db.indexing
    target = db.backups.verify.restore_dsn
    return Needs(builds=ix.mode != "advise" or ix.drop_unused.enabled, test_restores=db.backups.enabled,
                 restore_target=redact_dsn(target) if target else None)


def preflight(db: Database) -> list[Check]:
    """Read and judge one database as the role indexd connects as."""
    conn = db.dedicated_connection(autocommit=True)
    try:
        readings = read_readings(conn, db.settings.state_schema)
    finally:
        conn.close()
    return decide(readings, needs_of(db.settings))


def log_missing(db: Database) -> list[Check]:
    """Run the preflight and log each missing piece once: a WARNING for a required one, INFO for an optional
    one. Never raises for what it finds (the commands that call it go on); a failed reading is one WARNING."""
    try:
        checks = preflight(db)
    except psycopg2.Error as exc:
        log.warning("%s: preflight checks could not run: %s", db.name, str(exc).strip().splitlines()[0])
        return []
    for c in checks:
        if c.ok:
            continue
        fix = f"; fix: {' / '.join(c.fix)}" if c.fix else ""
        log.log(logging.WARNING if c.required else logging.INFO, "%s: missing %s: %s%s", db.name, c.name,
                c.detail, fix)
    return checks

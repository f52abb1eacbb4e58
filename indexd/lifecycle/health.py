"""Index health of a managed database: read every index from the catalog, classify (findings.py), estimate
bloat (bloat.py), and put it together in one report; `drop_unused` and `render_text` act on that report.
Reads the catalog only, changes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database, PgConnection
from indexd.lifecycle import bloat
from indexd.lifecycle.ddl import OWN_PREFIX
from indexd.lifecycle.findings import (
    HealthReport,
    IndexInfo,
    bloat_findings,
    find_duplicates,
    find_invalid,
    find_unused,
    quote_ident,
)
from indexd.lifecycle.replica_scans import combine, read_replicas
from indexd.state.recommendation_rows import own_index_builds

log = logging.getLogger(__name__)

# ---- catalog ---------------------------------------------------------------------------------------------------

_INDEXES = """
SELECT c.oid::bigint, n.nspname, t.relname, c.relname, am.amname,
       ARRAY(SELECT pg_get_indexdef(c.oid, k, true) FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT pg_get_indexdef(c.oid, k, true) FROM generate_series(i.indnkeyatts + 1, i.indnatts) k
             ORDER BY k),
       i.indclass::text, i.indcollation::text, i.indoption::text,
       pg_get_expr(i.indpred, i.indrelid, true), pg_get_indexdef(c.oid),
       i.indisunique, i.indisprimary, i.indisvalid, i.indisready, con.conname, con.contype::text,
       CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                                         FROM pg_partition_tree(c.oid) t)
            ELSE pg_relation_size(c.oid) END,
       CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_stat_get_numscans(t.relid)), 0)
                                         FROM pg_partition_tree(c.oid) t)
            ELSE coalesce(pg_stat_get_numscans(c.oid), 0) END,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid), c.relkind = 'I'
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid AND c.relkind IN ('i', 'I')
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am am ON am.oid = c.relam
  LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.contype IN ('p', 'u', 'x')
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> %s
   AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
 ORDER BY n.nspname, t.relname, c.relname
"""


def _own_indexes(conn: PgConnection, state_schema: str) -> dict[tuple[str, str], datetime | None]:
    """indexd's indexes by (schema, name), with their build time: recommendations that name them."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)",
                    (f"{quote_ident(state_schema)}.recommendations", f"{quote_ident(state_schema)}.mutation_log"))
        if None in cur.fetchone():
            return {}
    return own_index_builds(conn, state_schema)


def _vector(text: str | None) -> tuple[str, ...]:
    return tuple((text or "").split())


def read_indexes(conn: PgConnection, state_schema: str) -> list[IndexInfo]:
    """Every index of the database's own schemas (not the catalogs, not indexd's state schema)."""
    own = _own_indexes(conn, state_schema)
    with conn.cursor() as cur:
        cur.execute(_INDEXES, (state_schema,))
        rows = cur.fetchall()
    found = []
    for r in rows:
        key = (r[1], r[3])
        mine = key in own and r[3].startswith(OWN_PREFIX)
        found.append(IndexInfo(
            oid=int(r[0]), schema=r[1], table=r[2], name=r[3], method=r[4], keys=tuple(r[5]), include=tuple(r[6]),
            opclasses=_vector(r[7]), collations=_vector(r[8]), options=_vector(r[9]), predicate=r[10],
            definition=r[11], is_unique=r[12], is_primary=r[13], is_valid=r[14], is_ready=r[15], constraint=r[16],
            constraint_type=r[17], size_bytes=int(r[18]), scans=int(r[19]), building=r[20],
            partition_child=r[21], partitioned=r[22],
            own=mine, built_at=own.get(key) if mine else None))
    return found


def read_stats_since(conn: PgConnection) -> tuple[datetime | None, int]:
    """The start of the time index scan counters surely cover: the later of the last statistics reset and
    the server's start (a crash restart discards them; a clean one keeps them, so this errs on the safe side);
    and the number of standbys streaming from this server."""
    with conn.cursor() as cur:
        cur.execute("SELECT greatest(d.stats_reset, pg_postmaster_start_time()),"
                    " (SELECT count(*) FROM pg_stat_replication)"
                    " FROM pg_stat_database d WHERE d.datname = current_database()")
        row = cur.fetchone()
    return (row[0], int(row[1])) if row else (None, 0)


def report(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    now: datetime | None = None,
    *,
    min_bloat_ratio: float = bloat.MIN_BLOAT_RATIO,
    min_bloat_bytes: int = bloat.MIN_BLOAT_BYTES,
) -> HealthReport:
    """The health of one database's indexes; reads the catalog only, changes nothing."""
    del settings  # the global settings hold nothing health needs beyond the database's own
    now = now or utcnow()
    with db.connection() as conn:
        indexes = read_indexes(conn, db.settings.state_schema)
        stats_since, streaming = read_stats_since(conn)
        block_size, inputs = bloat.read_inputs(conn, [ix.oid for ix in indexes if ix.is_valid and not ix.partitioned])
        estimates = bloat.estimates(conn, inputs, block_size, min_bloat_ratio, min_bloat_bytes)
    # Scans on the configured replicas count too: an index only a read replica uses is not unused.
    seen = combine(indexes, stats_since, streaming, read_replicas(db_settings))
    result = HealthReport(
        database=db_settings.name,
        generated_at=now,
        stats_since=seen.stats_since,
        unused=find_unused(seen.indexes, seen.stats_since, now, db_settings.indexing.drop_unused.unused_for,
                           seen.uncounted),
        duplicate=find_duplicates(seen.indexes),
        invalid=find_invalid(indexes),
        bloated=bloat_findings(indexes, estimates, min_bloat_ratio, min_bloat_bytes),
        indexes_checked=len(indexes),
    )
    log.info("index health of %s: %d indexes, %d unused, %d duplicate or redundant, %d invalid, %d bloated",
             db_settings.name, len(indexes), len(result.unused), len(result.duplicate), len(result.invalid),
             len(result.bloated))
    return result


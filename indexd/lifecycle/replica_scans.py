"""Index scans on the database's streaming replicas (`databases[].replicas`), counted with the primary's.

A standby keeps its own statistics: an index a read replica scans all day shows 0 scans on the primary. The
health report adds every configured replica's scans to the primary's and starts the statistics' coverage at the
latest of their starts, so such an index is never "unused". A standby streaming from the primary that is not
configured, or a configured replica that cannot be read, leaves nothing droppable (the findings say why).

`read_replica` does the I/O; `combine` decides from the readings alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg2

from indexd.config.schema import DatabaseSettings
from indexd.db.conninfo import connect_kwargs
from indexd.dsn import redact_dsn
from indexd.errors import first_line
from indexd.lifecycle.findings import IndexInfo

log = logging.getLogger(__name__)

REPLICA_CONNECT_TIMEOUT_S = 5
Key = tuple[str, str]  # (schema, index name): a physical replica has the primary's catalog

_SCANS = """
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_stat_get_numscans(t.relid)), 0)
                                         FROM pg_partition_tree(c.oid) t)
            ELSE coalesce(pg_stat_get_numscans(c.oid), 0) END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('i', 'I') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%%'
"""
_SINCE = """
SELECT greatest(d.stats_reset, pg_postmaster_start_time()), pg_is_in_recovery()
  FROM pg_stat_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class ReplicaScans:
    """One replica's index scan counters, and since when they count."""

    replica: str  # its DSN, password-free
    scans: dict[Key, int] = field(default_factory=dict)
    stats_since: datetime | None = None
    error: str | None = None  # it could not be read: nothing may be judged unused
    standby: bool = True


@dataclass(frozen=True)
class Combined:
    indexes: list[IndexInfo]
    stats_since: datetime | None
    uncounted: int  # standbys whose scans are not in `indexes` (streaming but not configured, or unreadable)
    counted: int  # replicas whose scans are in


def read_replica(db: DatabaseSettings, dsn: str) -> ReplicaScans:
    """The scan counters of one replica of `db` (its password_file applies); an error reading it is returned."""
    shown = redact_dsn(dsn)
    kwargs = connect_kwargs(replace(db, dsn=dsn))
    kwargs["connect_timeout"] = str(REPLICA_CONNECT_TIMEOUT_S)
    try:
        conn = psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        return ReplicaScans(shown, error=redact_dsn(first_line(exc)))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(_SINCE)
            since, standby = cur.fetchone() or (None, True)
            cur.execute(_SCANS)
            scans = {(r[0], r[1]): int(r[2]) for r in cur.fetchall()}
    except psycopg2.Error as exc:
        return ReplicaScans(shown, error=redact_dsn(first_line(exc)))
    finally:
        conn.close()
    if not standby:
        log.warning("%s: replica %s is not in recovery: is it a standby of this database?", db.name, shown)
    return ReplicaScans(shown, scans, since, standby=bool(standby))


def read_replicas(db: DatabaseSettings) -> list[ReplicaScans]:
    found = [read_replica(db, dsn) for dsn in db.replicas]
    for r in found:
        if r.error:
            log.warning("%s: index scans of replica %s not counted (nothing is judged droppable): %s", db.name,
                        r.replica, r.error)
    return found


def combine(indexes: Iterable[IndexInfo], stats_since: datetime | None, streaming: int,
            replicas: Sequence[ReplicaScans]) -> Combined:
    """The primary's indexes with every readable replica's scans added, the statistics' start as the latest of
    all, and how many standbys remain uncounted (streaming ones beyond the configured, unreadable ones)."""
    readable = [r for r in replicas if r.error is None]
    merged = [replace(ix, scans=ix.scans + sum(r.scans.get((ix.schema, ix.name), 0) for r in readable))
              for ix in indexes]
    starts = [stats_since] + [r.stats_since for r in readable]
    since = None if any(s is None for s in starts) else max(s for s in starts if s is not None)
    uncounted = max(streaming - len(readable), len(replicas) - len(readable), 0)
    return Combined(merged, since, uncounted, len(readable))

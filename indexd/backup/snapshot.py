"""The source side of a backup: one repeatable-read transaction whose snapshot pg_dump imports.

Inside it we read the server version and database size (for the free-space check) and count the rows of
small tables, so the counts recorded in the manifest describe exactly the data in the dump.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings
from indexd.db.dsn import connect_kwargs

log = logging.getLogger(__name__)

# Tables up to this size get an exact count(*) at backup time; larger ones are not compared.
EXACT_COUNT_MAX_BYTES = 64 * 1024**2

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND pg_relation_size(c.oid) <= %s AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1, 2
"""


@dataclass
class SourceSnapshot:
    dbname: str
    server_version: str
    database_size: int
    snapshot_id: str
    row_counts: list[list[object]] = field(default_factory=list)  # [schema, table, count]


def count_rows(cur: psycopg2.extensions.cursor, max_bytes: int = EXACT_COUNT_MAX_BYTES) -> list[list[object]]:
    """Exact row counts of every readable ordinary table up to `max_bytes`, as [schema, table, count]."""
    cur.execute(_TABLES, (max_bytes,))
    tables = cur.fetchall()
    counts: list[list[object]] = []
    for schema, table in tables:
        cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        counts.append([schema, table, int(cur.fetchone()[0])])
    return counts


@contextlib.contextmanager
def open_snapshot(db: DatabaseSettings, *, count: bool = True) -> Iterator[SourceSnapshot]:
    """Hold a repeatable-read snapshot of `db` open (exported for pg_dump) for the duration of the block."""
    kwargs = connect_kwargs(db)
    kwargs.pop("options", None)  # no idle-in-transaction timeout: this session idles while pg_dump runs
    conn = psycopg2.connect(**kwargs)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            cur.execute("SELECT current_database(), current_setting('server_version'), "
                        "pg_database_size(current_database())")
            dbname, version, size = cur.fetchone()
            # Export the snapshot before anything else reads data: pg_dump will see exactly what we count.
            cur.execute("SELECT pg_export_snapshot()")
            snapshot_id = cur.fetchone()[0]
            snap = SourceSnapshot(dbname, version, int(size), snapshot_id)
            if count:
                snap.row_counts = count_rows(cur)
        yield snap
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        conn.close()

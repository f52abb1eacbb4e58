"""The source side of a backup: one repeatable-read transaction whose snapshot pg_dump imports.

Inside it we read the server version and database size (for the free-space check) and count the rows of
small tables, so the counts recorded in the manifest describe exactly the data in the dump. Just before it we
read each table's insert and delete counters: a test restore compares a table counted at neither time within
what those counters say changed since (see backup/counts.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from indexd.config.schema import DatabaseSettings
from indexd.db.conninfo import connect_kwargs

log = logging.getLogger(__name__)

# Tables up to this size get an exact count(*) at backup time, smallest first, until the budget is spent;
# larger ones are not compared by a test restore.
EXACT_COUNT_MAX_BYTES = 64 * 1024**2
EXACT_COUNT_BUDGET_BYTES = 512 * 1024**2

_TABLES = """
SELECT n.nspname, c.relname, pg_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND pg_relation_size(c.oid) <= %s AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 3, 1, 2
"""


_COUNTERS = """
SELECT (SELECT pg_postmaster_start_time())::text,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())::text,
       coalesce((SELECT json_agg(json_build_array(schemaname, relname, n_tup_ins, n_tup_del)
                                 ORDER BY schemaname, relname)
                   FROM pg_stat_user_tables), '[]')
"""


@dataclass
class SourceSnapshot:
    dbname: str
    server_version: str
    database_size: int
    snapshot_id: str | None
    conn: psycopg2.extensions.connection = field(repr=False)
    counters: dict[str, object] = field(default_factory=dict)  # table_counters() read just before the snapshot


def table_counters(cur: psycopg2.extensions.cursor) -> dict[str, object]:
    """Each user table's cumulative insert and delete counters, with what tells whether they are still
    comparable later (the server's start time: a crash loses them; the database's statistics reset)."""
    cur.execute(_COUNTERS)
    started, reset, tables = cur.fetchone()
    return {"postmaster_start": started, "stats_reset": reset, "tables": tables}


def count_rows(cur: psycopg2.extensions.cursor, max_bytes: int = EXACT_COUNT_MAX_BYTES,
               budget: int | None = EXACT_COUNT_BUDGET_BYTES) -> list[list[object]]:
    """Exact row counts of readable ordinary tables up to `max_bytes` each (smallest first, at most `budget`
    bytes in all), as [schema, table, count] sorted by schema and table. Each count runs in a savepoint, so
    a failing one (permissions, timeout) neither aborts the transaction nor loses its snapshot."""
    cur.execute(_TABLES, (max_bytes,))
    tables = cur.fetchall()
    counts: list[list[object]] = []
    spent = 0
    for schema, table, size in tables:
        spent += int(size)
        if budget is not None and spent > budget:
            break
        cur.execute("SAVEPOINT count_rows")
        try:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            counts.append([schema, table, int(cur.fetchone()[0])])
            cur.execute("RELEASE SAVEPOINT count_rows")
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT count_rows")
            log.warning("row count of %s.%s skipped: %s", schema, table, str(exc).strip())
    return sorted(counts, key=lambda c: (str(c[0]), str(c[1])))


class RowCounter(threading.Thread):
    """Counts rows in the snapshot's own session while pg_dump runs, so the counts cost no wall time."""

    def __init__(self, snap: SourceSnapshot) -> None:
        super().__init__(name="indexd-row-counts", daemon=True)
        self.snap = snap
        self.counts: list[list[object]] = []

    def run(self) -> None:
        if self.snap.snapshot_id is None:
            return  # counts from another snapshot than the dump's would not describe the dump
        try:
            with self.snap.conn.cursor() as cur:
                self.counts = count_rows(cur)
        except psycopg2.Error as exc:
            log.warning("row counts of %s skipped: %s", self.snap.dbname, str(exc).strip())

    def stop(self) -> None:
        """Cancel a count still running (the dump failed) and wait for the thread."""
        if self.is_alive():
            with contextlib.suppress(psycopg2.Error):
                self.snap.conn.cancel()
        self.join()


@contextlib.contextmanager
def open_snapshot(db: DatabaseSettings) -> Iterator[SourceSnapshot]:
    """Hold a repeatable-read snapshot of `db` open (exported for pg_dump) for the duration of the block."""
    kwargs = connect_kwargs(db)
    kwargs.pop("options", None)  # no idle-in-transaction timeout: this session idles while pg_dump runs
    conn = psycopg2.connect(**kwargs)
    try:
        # Read before the snapshot exists: rows counted as inserted later may then be in the dump, never the
        # other way round (a test restore's bound stays on the safe side).
        conn.autocommit = True
        counters: dict[str, object] = {}
        with conn.cursor() as cur:
            try:
                counters = table_counters(cur)
            except psycopg2.Error as exc:
                log.warning("table counters of %s not recorded: %s", db.name, str(exc).strip())
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            # Export the snapshot before anything reads data: pg_dump then sees exactly what we count.
            try:
                cur.execute("SELECT pg_export_snapshot()")
                snapshot_id: str | None = cur.fetchone()[0]
            except psycopg2.Error as exc:  # a server that cannot export one: pg_dump takes its own, no counts
                log.warning("no shared snapshot for the backup of %s (%s): row counts skipped",
                            db.name, str(exc).strip())
                conn.rollback()
                snapshot_id = None
            cur.execute("SELECT current_database(), current_setting('server_version'), "
                        "pg_database_size(current_database())")
            dbname, version, size = cur.fetchone()
        yield SourceSnapshot(dbname, version, int(size), snapshot_id, conn, counters)
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        conn.close()

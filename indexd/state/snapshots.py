"""The tables `snapshots` and `statement_snapshots`: pg_stat_statements' cumulative counters, copied at each
capture. Pruned by age (retention.statement_snapshots) in `state/history.py`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from indexd.db.pool import PgConnection

# The counters of one statement, in this order, as each row of `statements` gives them.
STATEMENT_COLUMNS = ("queryid", "userid", "toplevel", "query", "calls", "total_exec_time", "mean_exec_time", "rows",
                     "shared_blks_hit", "shared_blks_read")


def insert_snapshot(conn: PgConnection, schema: str, *, taken_at: datetime, stats_reset: datetime | None,
                    dealloc: int | None, statements: Sequence[Sequence[Any]]) -> int:
    """One snapshot with the counters of its statements (not committed: the caller's transaction takes the
    counters and writes them as one); returns the snapshot's id."""
    state = sql.Identifier(schema)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {}.snapshots (taken_at, stats_reset, dealloc, statements) VALUES (%s, %s, %s, %s)"
                    " RETURNING id").format(state),
            (taken_at, stats_reset, dealloc, len(statements)),
        )
        snapshot_id = int(cur.fetchone()[0])
        execute_values(
            cur,
            sql.SQL("INSERT INTO {}.statement_snapshots (snapshot_id, {}) VALUES %s").format(
                state, sql.SQL(", ").join(map(sql.Identifier, STATEMENT_COLUMNS))).as_string(conn),
            [(snapshot_id, *row) for row in statements],
            page_size=1000,
        )
    return snapshot_id

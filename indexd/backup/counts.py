"""Row counts of a test restore, compared with the source's.

Exact first: the counts taken at backup time in the dump's own snapshot (backup/snapshot.py) must equal the
restored tables' counts. A table counted then (too large for the budget, or an older manifest) is counted on
both sides now, within a byte budget, and compared within what the source's cumulative insert counter says
changed since the backup (recorded just before the dump's snapshot). Only a lower bound is checked: nothing but
inserts adds rows to a table, while a TRUNCATE removes rows without counting them as deletes. The source is
counted before its counters are read, and backends report their counters up to a minute late, so the bound
allows the table's average insert rate over STATS_LAG_S more. Counters are not comparable after the source
server restarted (a crash loses them) or its statistics were reset: such a table is not compared.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from indexd.backup.snapshot import table_counters

log = logging.getLogger(__name__)

BOUNDED_COUNT_BUDGET_BYTES = 1024**3  # tables counted on both sides at test time, smallest first
COUNT_TIMEOUT_MS = 600_000  # one count(*) may take this long
STATS_LAG_S = 120.0  # backends report counters at least every 60 s while busy: twice that as a margin

PgConn: TypeAlias = psycopg2.extensions.connection
Excuse = Callable[[str, str], str | None]  # (schema, table) -> why it is not in the restored database, if known

_TABLES = """
SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
 ORDER BY 3, 1, 2
"""


@dataclass
class CountCheck:
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)  # data problems
    not_compared: list[str] = field(default_factory=list)  # with why


def restored_tables(conn: PgConn) -> list[tuple[str, str, int]]:
    """(schema, table, bytes) of every ordinary table in the restored database, smallest first."""
    with conn.cursor() as cur:
        cur.execute(_TABLES)
        return [(str(s), str(t), int(b)) for s, t, b in cur.fetchall()]


def count(conn: PgConn, schema: str, table: str) -> int | None:
    """count(*) of a table under a statement timeout; None when it cannot be counted."""
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT indexd_count")
        try:
            cur.execute("SET LOCAL statement_timeout = %s", (str(COUNT_TIMEOUT_MS),))
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            value = int(cur.fetchone()[0])
            cur.execute("RELEASE SAVEPOINT indexd_count")
            return value
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT indexd_count")
            log.warning("count of %s.%s failed: %s", schema, table, str(exc).strip())
            return None


def compare_exact(expected: Sequence[Sequence[Any]], conn: PgConn, present: set[tuple[str, str]],
                  excuse: Excuse, check: CountCheck) -> None:
    """The counts recorded in the dump's snapshot against the restored tables'."""
    for schema, table, recorded in expected:
        key = (str(schema), str(table))
        if key not in present:
            why = excuse(*key)
            if why:
                check.not_compared.append(f"{schema}.{table} ({why})")
            else:
                check.mismatches.append(f"{schema}.{table}: {recorded} rows at backup time, missing from the restore")
            continue
        got = count(conn, *key)
        if got is None:
            check.not_compared.append(f"{schema}.{table} (could not be counted in the restore)")
            continue
        check.compared += 1
        if got != recorded:
            check.mismatches.append(f"{schema}.{table}: {recorded} rows at backup time, {got} restored")


def explain_difference(restored: int, source_now: int, inserted_since: int, elapsed_s: float) -> str | None:
    """Why `restored` rows cannot be the table at backup time, when the source has `source_now` rows after
    `inserted_since` inserts in `elapsed_s` seconds (None when they can be). Pure."""
    margin = int(inserted_since / max(elapsed_s, 1.0) * STATS_LAG_S + 0.999)
    if restored + inserted_since + margin < source_now:
        return (f"{restored} rows restored, but the source has {source_now} now and only {inserted_since} rows "
                f"were inserted since the backup (+{margin} for counters reported late)")
    return None


def _counters_now(source: PgConn, then: dict[str, Any]) -> dict[tuple[str, str], int] | None:
    """Rows inserted since the backup per table, or None when the counters are not comparable."""
    with source.cursor() as cur:
        now = table_counters(cur)
    if not then or now["postmaster_start"] != then.get("postmaster_start") \
            or now["stats_reset"] != then.get("stats_reset"):
        return None
    before = {(str(s), str(t)): int(i) for s, t, i, _d in then.get("tables") or []}
    since = {}
    tables: list[list[Any]] = now["tables"]  # type: ignore[assignment]
    for s, t, ins, _del in tables:
        key = (str(s), str(t))
        if key in before and int(ins) >= before[key]:
            since[key] = int(ins) - before[key]
    return since


def compare_bounded(conn: PgConn, source: PgConn | None, tables: Sequence[tuple[str, str, int]],
                    then: dict[str, Any], elapsed_s: float, check: CountCheck,
                    budget: int = BOUNDED_COUNT_BUDGET_BYTES) -> None:
    """Tables without a count at backup time (smallest first): counted on both sides now, then compared within
    the inserts since the backup, `elapsed_s` ago. The counters are read after the counts, so every insert a
    count saw is in them (give or take a late report: the margin)."""
    counted: list[tuple[str, str, int, int]] = []
    spent = 0
    for schema, table, size in tables:
        spent += size
        got = now = None
        if source is not None and spent <= budget:
            got, now = count(conn, schema, table), count(source, schema, table)
        if got is not None and now is not None:
            counted.append((schema, table, got, now))
            continue
        why = ("no source to count against" if source is None else "over the counting budget" if spent > budget
               else "could not be counted")
        check.not_compared.append(f"{schema}.{table} ({why})")
    since = None
    if counted and source is not None:
        with contextlib.suppress(psycopg2.Error):
            since = _counters_now(source, then)
    for schema, table, got, now in counted:
        if since is None or (schema, table) not in since:
            why = "no insert counter for it" if since is not None else \
                "the source's counters are not comparable (restarted, reset or not recorded)"
            check.not_compared.append(f"{schema}.{table} ({why})")
            continue
        check.compared += 1
        problem = explain_difference(got, now, since[(schema, table)], elapsed_s)
        if problem:
            check.mismatches.append(f"{schema}.{table}: {problem}")

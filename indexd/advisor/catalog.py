"""The catalog snapshot the advisor reasons on: user relations, their columns and statistics, existing indexes.

Read in one transaction from pg_class, pg_attribute, pg_stats, pg_index and the statistics views. System schemas,
TOAST, temporary schemas, objects that belong to an extension and indexd's own state schema are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from indexd.advisor.model import Catalog, Column, ExistingIndex, Table
from indexd.db.pool import PgConnection

log = logging.getLogger(__name__)

DEFAULT_STATE_SCHEMA = "indexd"

# The relations the advisor may see; %(state)s is indexd's own schema.
_USER_RELATIONS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', %(state)s)
    AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
"""

_RELATIONS = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.reltuples, c.relpages, c.reloptions,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS view_definition,
       (SELECT pn.nspname || '.' || pc.relname FROM pg_inherits i
          JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE i.inhrelid = c.oid AND c.relispartition) AS parent,
       coalesce(s.n_live_tup, 0), coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0),
       coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0), c.relallvisible
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_RELATIONS}
"""

_COLUMNS = f"""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), st.avg_width, st.n_distinct, st.null_frac,
       CASE WHEN t.typdelim = ',' THEN st.most_common_vals::text::text[] END, st.most_common_freqs,
       CASE WHEN a.attcollation = 0 THEN NULL ELSE co.collname END
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = c.relname AND st.attname = a.attname
                       AND st.inherited = (c.relkind = 'p')
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_RELATIONS}
 ORDER BY a.attrelid, a.attnum
"""

_INDEXES = f"""
SELECT n.nspname, ic.relname, c.relname, am.amname, pg_get_expr(i.indpred, i.indrelid), i.indisunique,
       i.indisprimary, i.indisvalid, pg_relation_size(ic.oid), pg_get_indexdef(ic.oid), i.indnkeyatts,
       array(SELECT CASE WHEN i.indkey[k - 1] = 0 THEN pg_get_indexdef(ic.oid, k, true) ELSE
                         (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = i.indkey[k - 1]) END
               FROM generate_series(1, i.indnatts) k ORDER BY k)
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am am ON am.oid = ic.relam
 WHERE c.relkind IN ('r', 'p', 'm') AND {_USER_RELATIONS}
 ORDER BY n.nspname, c.relname, ic.relname
"""


def load_catalog(conn: PgConnection, state_schema: str = DEFAULT_STATE_SCHEMA) -> Catalog:
    """Everything the advisor needs to know of this database's relations, read now."""
    params = {"state": state_schema}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM now() - coalesce(d.stats_reset, pg_postmaster_start_time())),"
            " to_jsonb(db.*), current_schemas(false)"
            " FROM pg_stat_database d JOIN pg_database db ON db.oid = d.datid WHERE d.datname = current_database()"
        )
        stats_age, database_row, search_path = cur.fetchone()
        cur.execute(_RELATIONS, params)
        relations = cur.fetchall()
        cur.execute(_COLUMNS, params)
        columns = cur.fetchall()
        cur.execute(_INDEXES, params)
        indexes = [_index(row) for row in cur.fetchall()]
    default_collation = database_collation(database_row)
    by_oid = _columns_by_relation(columns, default_collation)
    seconds = max(float(stats_age or 0.0), 1.0)
    tables = {
        f"{r[1]}.{r[2]}": _table(r, by_oid.get(r[0], ()), seconds) for r in relations
    }
    tables = sum_partitions(tables, {f"{r[1]}.{r[2]}": float(r[10]) / seconds for r in relations})
    log.debug("catalog: %d relations, %d indexes", len(tables), len(indexes))
    return Catalog(tables=tables, indexes=tuple(indexes), search_path=tuple(search_path))


def database_collation(row: dict[str, Any]) -> str:
    """The collation a column with the "default" collation gets, across PostgreSQL versions' providers."""
    provider = row.get("datlocprovider", "c")
    if provider == "i":
        return str(row.get("daticulocale") or row.get("datlocale") or row.get("datcollate"))
    if provider == "b":
        return str(row.get("datlocale") or "C")
    return str(row.get("datcollate"))


def _columns_by_relation(rows: Iterable[tuple[Any, ...]], default_collation: str) -> dict[int, tuple[Column, ...]]:
    grouped: dict[int, list[Column]] = {}
    for oid, name, typ, width, n_distinct, null_frac, mcv, mcf, collation in rows:
        grouped.setdefault(oid, []).append(
            Column(
                name=name, type=typ, avg_width=width, n_distinct=n_distinct, null_frac=null_frac,
                most_common_vals=tuple(mcv or ()) if mcf else (),
                most_common_freqs=tuple(float(f) for f in mcf or ()) if mcv else (),
                collation=default_collation if collation == "default" else collation,
            )
        )
    return {oid: tuple(cols) for oid, cols in grouped.items()}


def _fillfactor(reloptions: list[str] | None) -> int:
    for option in reloptions or ():
        key, _, value = option.partition("=")
        if key == "fillfactor" and value.isdigit():
            return int(value)
    return 100


def _table(row: tuple[Any, ...], columns: tuple[Column, ...], seconds: float) -> Table:
    (_oid, schema, name, kind, reltuples, relpages, reloptions, viewdef, parent, live, writes, updates, hot,
     visible) = row
    # reltuples is -1 until the first VACUUM/ANALYZE: the live-tuple counter is the better guess then
    rows = float(reltuples) if reltuples is not None and reltuples >= 0 else float(live)
    return Table(
        schema=schema, name=name, kind=kind, rows=rows, pages=int(relpages or 0), columns=columns,
        fillfactor=_fillfactor(reloptions), writes_per_second=float(writes) / seconds, parent=parent,
        view_definition=viewdef, updates_seen=float(updates), hot_updates_seen=float(hot),
        all_visible_pages=int(visible or 0),
    )


def sum_partitions(tables: dict[str, Table], writes: dict[str, float]) -> dict[str, Table]:
    """Give each partitioned parent the rows, pages, write rate, update counts and all-visible pages of its leaf
    partitions (at any depth)."""
    totals: dict[str, list[float]] = {}
    for key, table in tables.items():
        if table.kind == "p" or table.parent is None:
            continue
        seen: set[str] = set()
        ancestor: str | None = table.parent
        while ancestor is not None and ancestor in tables and ancestor not in seen:
            seen.add(ancestor)
            parts = (table.rows, table.pages, writes.get(key, 0.0), table.updates_seen, table.hot_updates_seen,
                     table.all_visible_pages)
            totals[ancestor] = [a + b for a, b in zip(totals.get(ancestor, [0.0] * 6), parts, strict=True)]
            ancestor = tables[ancestor].parent
    result = dict(tables)
    for key, (rows, pages, rate, updates, hot, visible) in totals.items():
        if result[key].kind == "p":
            result[key] = replace(result[key], rows=rows, pages=int(pages), writes_per_second=rate,
                                  updates_seen=updates, hot_updates_seen=hot, all_visible_pages=int(visible))
    return result


def _index(row: tuple[Any, ...]) -> ExistingIndex:
    schema, name, table, method, predicate, unique, primary, valid, size, definition, nkeys, keys = row
    return ExistingIndex(
        schema=schema, name=name, table=table, keys=tuple(keys[:nkeys]), method=method, where=predicate,
        include=tuple(keys[nkeys:]), is_unique=unique, is_primary=primary, is_valid=valid,
        size_bytes=int(size or 0), definition=definition,
    )

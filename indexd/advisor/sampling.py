"""Statistics the catalog does not hold, read from a bounded sample of the table (read-only, no object created).

pg_stats describes columns, not the expressions an expression index would hold (`meta ->> 'external_id'`), nor
what a GIN index stores per row (jsonb keys and values, array elements, lexemes, trigrams). Both are measured on
about SAMPLE_ROWS rows (GIN_SAMPLE_ROWS for GIN entries) read with `TABLESAMPLE SYSTEM ... REPEATABLE` (whole
pages spread over the table, so a large table costs a few hundred pages), in the caller's session (the what-if
session: read-only, under its statement_timeout, JIT off). Each starts with OWN_MARK, so capture does not take
indexd's own samples for the application's workload.

The number of distinct values of the whole table is estimated from the sample with the estimator ANALYZE uses
(Haas and Stokes' Duj1: n·d / (n − f1 + f1·n/N), f1 = values seen once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from indexd.advisor.model import Column, IndexKey, Table
from indexd.statements.statement import OWN_MARK

SAMPLE_ROWS = 10_000  # for an expression's width and distinct values
GIN_SAMPLE_ROWS = 3_000  # for GIN entries (each row yields many; calibrated: estimates as close as with 20,000)
_SEED = 7

_EXPRESSION = OWN_MARK + """
WITH s AS ({sample}), g AS (SELECT v, count(*) AS c FROM s WHERE v IS NOT NULL GROUP BY v)
SELECT (SELECT count(*) FROM s), (SELECT count(v) FROM s), (SELECT avg(size) FROM s),
       (SELECT format_type(t.oid, NULL) || ':' || t.typlen FROM s JOIN pg_type t ON t.oid = pg_typeof(s.v)
         WHERE s.v IS NOT NULL LIMIT 1),
       count(*), count(*) FILTER (WHERE c = 1)
  FROM g
"""

# Per GIN family: the entries (rid, k) one sampled row `s(rid, v)` puts in the index, one row per distinct entry.
_JSON_TREE = """j(rid, path, k, v) AS (
    SELECT rid, '', NULL::text, v FROM s WHERE v IS NOT NULL
  UNION ALL
    SELECT j.rid, j.path || CASE WHEN c.k IS NULL THEN '' ELSE '.' || c.k END, c.k, c.v FROM j CROSS JOIN LATERAL (
        SELECT key AS k, value AS v FROM jsonb_each(CASE WHEN jsonb_typeof(j.v) = 'object' THEN j.v END)
        UNION ALL
        SELECT NULL, value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.v) = 'array' THEN j.v END)) c)"""
_ENTRIES = {
    "jsonb": _JSON_TREE + """, e AS (SELECT DISTINCT rid, k FROM (
        SELECT rid, 'K' || k AS k FROM j WHERE k IS NOT NULL
        UNION ALL SELECT rid, 'V' || v::text FROM j WHERE jsonb_typeof(v) NOT IN ('object', 'array')) x)""",
    "jsonb_path": _JSON_TREE + """, e AS (SELECT DISTINCT rid, path || '=' || v::text AS k FROM j
        WHERE jsonb_typeof(v) NOT IN ('object', 'array'))""",
    "array": "e AS (SELECT DISTINCT rid, x::text AS k FROM s, unnest(v) x WHERE x IS NOT NULL)",
    "tsvector": "e AS (SELECT DISTINCT rid, x.lexeme AS k FROM s, unnest(v) x)",
    "trigram": "e AS (SELECT DISTINCT rid, x AS k FROM s, unnest({trgm}.show_trgm(v)) x)",
}
_GIN = OWN_MARK + """
WITH RECURSIVE s AS ({sample}), {entries},
f AS (SELECT k, count(*) AS c, count(DISTINCT (rid::text::point)[0]) AS p FROM e GROUP BY k),
ff AS (SELECT c, count(*) AS n, avg(octet_length(k)) AS w, avg(p) AS p FROM f GROUP BY c)
SELECT (SELECT count(*) FROM s), (SELECT count(v) FROM s), (SELECT count(DISTINCT rid) FROM e),
       array_agg(c ORDER BY c), array_agg(n ORDER BY c), array_agg(w ORDER BY c), array_agg(p ORDER BY c)
  FROM ff
"""


@dataclass(frozen=True)
class EntryStats:
    """What a sample says of the entries a GIN index stores: per sampled row and per distinct entry."""

    sample_rows: int
    nonnull_rows: int
    rows_with_entries: int  # the others are NULL or empty (one "null item" / "empty item" entry each)
    # (rows an entry is in, entries that often, their average text bytes, the heap pages holding those rows)
    frequencies: tuple[tuple[int, int, float, float], ...]

    @property
    def entries(self) -> int:
        """Sampled (row, entry) pairs."""
        return sum(f[0] * f[1] for f in self.frequencies)

    @property
    def distinct(self) -> int:
        return sum(f[1] for f in self.frequencies)


def sample_clause(table: Table, key_sql: sql.Composable, limit: int | None = None) -> sql.Composed:
    """`SELECT ctid AS rid, <key> AS v FROM t TABLESAMPLE SYSTEM (p) REPEATABLE (seed) LIMIT 2n`: about n rows
    from pages spread over the whole table (the LIMIT only bounds an outlier: stopping at n would favour the
    first pages)."""
    limit = limit or SAMPLE_ROWS
    percent = 100.0 if table.rows <= limit else max(0.01, min(100.0, 100.0 * limit / table.rows))
    # pg_column_size here, on the value as computed (a materialized CTE would store it with a short header)
    return sql.SQL("SELECT ctid AS rid, {k} AS v, pg_column_size({k}) AS size FROM {}.{} TABLESAMPLE SYSTEM ({}) "
                   "REPEATABLE ({}) LIMIT {}").format(
        sql.Identifier(table.schema), sql.Identifier(table.name), sql.Literal(round(percent, 4)),
        sql.Literal(_SEED), sql.Literal(2 * limit), k=key_sql)


def key_sql(key: IndexKey) -> sql.Composable:
    """The key as an expression (without operator class or direction)."""
    return IndexKey(column=key.column, expression=key.expression).render()


def duj1(sample: int, distinct: int, singles: int, population: float) -> float:
    """Distinct values of the population, from a sample of it (the estimator ANALYZE uses)."""
    if sample <= 0 or distinct <= 0:
        return 0.0
    if population <= sample:
        return float(distinct)
    denominator = sample - singles + singles * sample / population
    return min(population, sample * distinct / denominator) if denominator > 0 else population


def expression_column(cur: Any, table: Table, key: IndexKey) -> Column | None:
    """The statistics of an expression key as a Column (type, avg_width, n_distinct, null_frac); None when the
    sample holds no row."""
    cur.execute(sql.SQL(_EXPRESSION).format(sample=sample_clause(table, key_sql(key))))
    rows, nonnull, size, typed, distinct, singles = cur.fetchone()
    if not rows:
        return None
    type_name, _, typlen = (typed or "text:-1").rpartition(":")
    width = float(size or 0.0)
    if int(typlen) < 0 and width < 127 + 3:
        width -= 3  # a short varlena is stored with a 1-byte header, pg_column_size counts the 4-byte one
    population = max(table.rows, 1.0) * nonnull / rows
    estimate = duj1(nonnull, distinct, singles, population)
    n_distinct = -min(1.0, estimate / max(table.rows, 1.0)) if estimate > 0.1 * table.rows else estimate
    return Column(name=key.expression or key.column or "", type=type_name, avg_width=max(1, round(width)),
                  n_distinct=n_distinct, null_frac=1.0 - nonnull / rows)


def entry_stats(cur: Any, table: Table, key: IndexKey, family: str, trigram_schema: str = "public") -> EntryStats:
    """Sample the entries a GIN index of this family would hold for the key."""
    entries = _ENTRIES[family]
    if family == "trigram":
        entries = entries.replace("{trgm}", '"' + trigram_schema.replace('"', '""') + '"')
    sample = sample_clause(table, key_sql(key), GIN_SAMPLE_ROWS)
    cur.execute(sql.SQL(_GIN).format(sample=sample, entries=sql.SQL(entries)))
    rows, nonnull, with_entries, counts, numbers, widths, pages = cur.fetchone()
    frequencies = tuple((int(c), int(n), float(w or 0.0), float(p or c))
                        for c, n, w, p in zip(counts or (), numbers or (), widths or (), pages or (), strict=True))
    return EntryStats(int(rows), int(nonnull), int(with_entries or 0), frequencies)

"""An estimate of B-tree index bloat from the catalog alone: how many pages a freshly built index of today's rows
would need, against the pages it has.

The estimate (`expected_btree_pages`) is pure arithmetic on the page layout: every leaf item is an index tuple
(an 8-byte header, a null bitmap when a key can be null, the key data from pg_stats' average widths, padded to
8 bytes) plus a 4-byte line pointer; a leaf page holds 8192 - 24 (page header) - 16 (B-tree special space) bytes,
filled to the index's fillfactor (90 by default), as CREATE INDEX leaves it; the inner levels hold one downlink
per page below; plus the meta page. It is an estimate: widths are averages, and a B-tree that grew by random
inserts normally sits at ~70 % density, which is why the thresholds are generous. When the pgstattuple extension
is installed, the indexes the estimate suspects are measured with pgstatindex (leaf density) instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from indexd.db.pool import PgConnection

log = logging.getLogger(__name__)

PAGE_HEADER = 24
BTREE_SPECIAL = 16
ITEM_POINTER = 4
INDEX_TUPLE_HEADER = 8
NULL_BITMAP = 4  # IndexAttributeBitMapData: room for INDEX_MAX_KEYS bits, present when a key is null
MAXALIGN = 8
BTREE_DEFAULT_FILLFACTOR = 90
MIN_BLOAT_RATIO = 0.35  # share of the index that is bloat before it is reported
MIN_BLOAT_BYTES = 1024**2  # and at least this much


def _align(n: float) -> int:
    return int(math.ceil(n / MAXALIGN) * MAXALIGN)


@dataclass(frozen=True)
class BloatEstimate:
    actual_pages: int
    expected_pages: int
    block_size: int
    method: str = "estimate"  # estimate (from pg_stats) | pgstatindex (measured)

    @property
    def bloat_bytes(self) -> int:
        return max(self.actual_pages - self.expected_pages, 0) * self.block_size

    @property
    def bloat_ratio(self) -> float:
        """Share of the index's pages that a rebuild would free (0..1)."""
        return self.bloat_bytes / (self.actual_pages * self.block_size) if self.actual_pages else 0.0

    def is_bloated(self, min_ratio: float = MIN_BLOAT_RATIO, min_bytes: int = MIN_BLOAT_BYTES) -> bool:
        return self.bloat_ratio >= min_ratio and self.bloat_bytes >= min_bytes

    def as_dict(self) -> dict[str, Any]:
        return {"actual_pages": self.actual_pages, "expected_pages": self.expected_pages,
                "bloat_bytes": self.bloat_bytes, "bloat_ratio": round(self.bloat_ratio, 3),
                "block_size": self.block_size, "method": self.method}


def expected_btree_pages(
    tuples: float,
    widths: Sequence[float],
    nullable: bool,
    block_size: int = 8192,
    fillfactor: int = BTREE_DEFAULT_FILLFACTOR,
) -> int:
    """Pages of a freshly built B-tree with `tuples` entries whose columns average `widths` bytes."""
    tuple_bytes = _align(INDEX_TUPLE_HEADER + (NULL_BITMAP if nullable else 0) + sum(widths)) + ITEM_POINTER
    usable = block_size - PAGE_HEADER - BTREE_SPECIAL
    per_leaf = max(int(usable * fillfactor / 100 // tuple_bytes), 1)
    per_inner = max(int(usable * 0.7 // tuple_bytes), 2)  # inner pages fill to 70 %
    level = max(math.ceil(max(tuples, 0.0) / per_leaf), 1)
    pages = level
    while level > 1:
        level = math.ceil(level / per_inner)
        pages += level
    return pages + 1  # the meta page


@dataclass(frozen=True)
class BloatInput:
    """What the estimate needs of one index, read from the catalog."""

    oid: int
    tuples: float  # pg_class.reltuples of the index (-1: never vacuumed or analysed)
    pages: int  # pg_class.relpages, or the size in blocks
    widths: tuple[float | None, ...]  # per index column: pg_stats.avg_width, else the type's fixed length
    nullable: bool
    fillfactor: int | None


def estimate(item: BloatInput, block_size: int) -> BloatEstimate | None:
    """The estimate for one index, or None when statistics are missing (run ANALYZE) or the index is tiny."""
    if item.tuples < 0 or item.pages < 2 or any(w is None for w in item.widths):
        return None
    widths = [float(w) for w in item.widths if w is not None]
    expected = expected_btree_pages(item.tuples, widths, item.nullable, block_size,
                                    item.fillfactor or BTREE_DEFAULT_FILLFACTOR)
    return BloatEstimate(item.pages, expected, block_size)


# ---- catalog ------------------------------------------------------------------------------------------------

# Per valid B-tree index: its entries, its size in blocks, and per column the average width from pg_stats (for a
# plain column the table's statistics, for an expression the index's own) or the fixed length of its type.
_INPUTS = """
SELECT c.oid::bigint, c.reltuples::float8, (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint,
       array_agg(coalesce(s.avg_width::float8, CASE WHEN ia.attlen > 0 THEN ia.attlen::float8 END)
                 ORDER BY ia.attnum),
       bool_or(coalesce(s.null_frac, 0) > 0),
       (SELECT substring(o FROM 'fillfactor=(\\d+)')::int FROM unnest(c.reloptions) o
         WHERE o LIKE 'fillfactor=%%')
  FROM pg_class c
  JOIN pg_index i ON i.indexrelid = c.oid
  JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_attribute ia ON ia.attrelid = c.oid AND ia.attnum > 0
  LEFT JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = i.indkey[ia.attnum - 1] AND ta.attnum > 0
  LEFT JOIN pg_stats s ON
       (ta.attname IS NOT NULL AND s.schemaname = tn.nspname AND s.tablename = t.relname AND s.attname = ta.attname)
    OR (ta.attname IS NULL AND s.schemaname = tn.nspname AND s.tablename = c.relname AND s.attname = ia.attname)
 WHERE c.relkind = 'i' AND i.indisvalid AND c.oid = ANY(%s)
 GROUP BY c.oid, c.reltuples, c.reloptions
"""


def read_inputs(conn: PgConnection, oids: Sequence[int]) -> tuple[int, list[BloatInput]]:
    """The block size and the estimate's inputs for these indexes (only valid B-trees come back)."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('block_size')::int")
        block_size = int(cur.fetchone()[0])
        if not oids:
            return block_size, []
        cur.execute(_INPUTS, (list(oids),))
        rows = cur.fetchall()
    inputs = [BloatInput(int(r[0]), float(r[1]), int(r[2]), tuple(r[3]), bool(r[4]), r[5]) for r in rows]
    return block_size, inputs


# ---- exact measurement, when pgstattuple is installed --------------------------------------------------------


def pgstattuple_schema(conn: PgConnection) -> str | None:
    """The schema of the pgstattuple extension in this database, or None when it is not installed."""
    with conn.cursor() as cur:
        cur.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                    " WHERE e.extname = 'pgstattuple'")
        row = cur.fetchone()
    return None if row is None else str(row[0])


def measured(leaf_pages: int, internal_pages: int, avg_leaf_density: float, size_pages: int, block_size: int,
             fillfactor: int) -> BloatEstimate:
    """Bloat from pgstatindex's figures: the leaves repacked to the fillfactor, the inner pages and the meta page
    as they are, against the pages the index has."""
    expected_leaves = max(math.ceil(leaf_pages * avg_leaf_density / max(fillfactor, 10)), 1)
    return BloatEstimate(size_pages, expected_leaves + internal_pages + 1, block_size, method="pgstatindex")


def measure(conn: PgConnection, ext_schema: str, item: BloatInput, block_size: int) -> BloatEstimate | None:
    """Measure one index with pgstatindex (it reads the whole index: call it only for suspects). None when it
    cannot (no privilege, the index went away): the caller keeps its estimate."""
    statement = sql.SQL("SELECT leaf_pages, internal_pages, avg_leaf_density FROM {}.pgstatindex(%s::regclass)")
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT indexd_measure")
        try:
            cur.execute(statement.format(sql.Identifier(ext_schema)), (item.oid,))
            leaf, internal, density = cur.fetchone()
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT indexd_measure")
            log.debug("pgstatindex on index %s failed: %s", item.oid, str(exc).strip())
            return None
        cur.execute("RELEASE SAVEPOINT indexd_measure")
    if density is None or float(density) != float(density):  # NaN on an empty index
        return None
    return measured(int(leaf), int(internal), float(density), item.pages, block_size,
                    item.fillfactor or BTREE_DEFAULT_FILLFACTOR)


def estimates(conn: PgConnection, inputs: Sequence[BloatInput], block_size: int,
              min_ratio: float = MIN_BLOAT_RATIO, min_bytes: int = MIN_BLOAT_BYTES) -> dict[int, BloatEstimate]:
    """The estimate of every index that has statistics; the suspects are measured with pgstatindex instead when
    pgstattuple is installed, so a mistaken estimate does not reach the report."""
    found = {item.oid: est for item in inputs if (est := estimate(item, block_size)) is not None}
    ext = pgstattuple_schema(conn)
    if ext is None:
        return found
    for item in inputs:
        est = found.get(item.oid)
        if est is not None and est.is_bloated(min_ratio, min_bytes):
            exact = measure(conn, ext, item, block_size)
            if exact is not None:
                found[item.oid] = exact
    return found

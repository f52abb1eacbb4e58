"""Estimate the built size of a B-tree index from the catalog alone.

HypoPG's own estimate ignores deduplication and fill factor and is often several times too large. This model
follows what `CREATE INDEX` writes (PostgreSQL 13+ nbtsort): leaf pages filled to the fill factor (90 % by
default), each entry an 8-byte IndexTuple header plus MAXALIGNed key data plus a 4-byte line pointer, duplicate
keys merged into posting lists of 6-byte heap pointers (capped at 10 % of a page during a build) unless the index
has INCLUDE columns or a type that cannot be deduplicated, internal levels on top and one metapage.
"""

from __future__ import annotations

import math
import re

from indexd.advisor.model import Column, IndexCandidate, Table

BLOCK = 8192
PAGE_HEADER = 24
BTREE_SPECIAL = 16
LINE_POINTER = 4
TUPLE_HEADER = 8
HEAP_TID = 6
MAXALIGN = 8
BTREE_FILLFACTOR = 90
BUILD_MAX_POSTING = (BLOCK * 10 // 100) // MAXALIGN * MAXALIGN - LINE_POINTER
INTERNAL_FILL = 0.70  # internal pages are filled to 70 % during a build
DEFAULT_VARLENA = 32

# type text (format_type, without modifiers) -> (width, alignment); None width = variable length
_FIXED: dict[str, tuple[int, int]] = {
    "smallint": (2, 2), "integer": (4, 4), "bigint": (8, 8), "real": (4, 4), "double precision": (8, 8),
    "boolean": (1, 1), "date": (4, 4), "timestamp without time zone": (8, 8), "timestamp with time zone": (8, 8),
    "time without time zone": (8, 8), "time with time zone": (12, 8), "interval": (16, 8), "uuid": (16, 1),
    "oid": (4, 4), "money": (8, 8), "\"char\"": (1, 1), "inet": (7, 1), "macaddr": (6, 4),
}
# The result type of the functions expression keys use; None = the type of their argument.
_RESULT_TYPES: dict[str, str | None] = {
    **dict.fromkeys(("lower", "upper", "btrim", "ltrim", "rtrim", "initcap", "left", "right", "substr",
                     "substring", "reverse", "split_part", "md5"), "text"),
    **dict.fromkeys(("length", "char_length"), "integer"),
    "date_part": "double precision", "extract": "numeric",
    **dict.fromkeys(("abs", "floor", "ceil", "round", "trunc", "date_trunc"), None),
}
_MD5_WIDTH = 33  # 32 hex digits and a 1-byte header
_NUMERIC_WIDTH = 8  # a short numeric such as a year or a day of the month
# types whose equal values may differ in representation: B-tree cannot deduplicate them
_NO_DEDUP = ("numeric", "real", "double precision", "jsonb", "json", "float", "[]")


def _base_type(type_text: str) -> str:
    return re.sub(r"\(.*\)", "", type_text).strip()


def key_width(col: Column | None) -> tuple[float, int]:
    """(average stored width, alignment) of one index key column."""
    if col is None:
        return float(DEFAULT_VARLENA), 1
    fixed = _FIXED.get(_base_type(col.type))
    if fixed is not None:
        return float(fixed[0]), fixed[1]
    width = float(col.avg_width) if col.avg_width else float(DEFAULT_VARLENA)
    # Short values (< 127 bytes) are stored with a 1-byte header and no alignment; longer ones align to 4.
    return (width, 1) if width < 127 else (width + 3, 4)


def _align(offset: float, alignment: int) -> float:
    return math.ceil(offset / alignment) * alignment


def _maxalign(n: float) -> int:
    return int(math.ceil(n / MAXALIGN) * MAXALIGN)


def expression_column(table: Table, expression: str) -> Column | None:
    """What an index stores for an expression key such as lower(email): the result type of its function (text
    functions keep the width and distinct values of the column they read, numeric ones its type), None when the
    expression is not recognisable."""
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)
    col = next((table.column(n) for n in names if table.column(n) is not None), None)
    if col is None or not names:
        return col
    result = _RESULT_TYPES.get(names[0].lower(), "")
    if result == "":
        return col
    if result is None:  # same type as the argument: abs(x), round(x), date_trunc('day', at)
        return col
    if result == "text":
        width = _MD5_WIDTH if names[0].lower() == "md5" else col.avg_width
        return Column(col.name, result, width, col.n_distinct)
    return Column(col.name, result, _FIXED[result][0] if result in _FIXED else _NUMERIC_WIDTH)


def _columns(table: Table, cand: IndexCandidate) -> list[Column | None]:
    cols: list[Column | None] = []
    for key in cand.keys:
        if key.column is not None:
            cols.append(table.column(key.column))
        else:
            cols.append(expression_column(table, key.expression or ""))
    return cols


def _distinct(table: Table, cols: list[Column | None], rows: float) -> float:
    """Distinct key combinations: product of per-column n_distinct, capped by the row count."""
    total = 1.0
    for col in cols:
        if col is None or col.n_distinct is None or col.n_distinct == 0:
            return rows
        nd = col.n_distinct if col.n_distinct > 0 else -col.n_distinct * max(table.rows, 1.0)
        total *= max(nd, 1.0)
    return min(max(total, 1.0), rows)


def _deduplicates(cand: IndexCandidate, cols: list[Column | None]) -> bool:
    if cand.include:
        return False
    return all(c is not None and not any(t in c.type for t in _NO_DEDUP) for c in cols)


def _leaf_bytes(rows: float, distinct: float, tuple_size: int, dedup: bool) -> float:
    """Bytes (entries + line pointers) the leaf level needs."""
    plain = tuple_size + LINE_POINTER
    per_value = rows / distinct if distinct > 0 else 1.0
    if not dedup or per_value < 1.5:
        return rows * plain
    per_posting = max(1, (BUILD_MAX_POSTING - tuple_size) // HEAP_TID)
    full, rest = divmod(per_value, per_posting)
    group = full * (_maxalign(tuple_size + per_posting * HEAP_TID) + LINE_POINTER)
    if rest >= 1.5:
        group += _maxalign(tuple_size + rest * HEAP_TID) + LINE_POINTER
    elif rest > 0:
        group += plain * rest
    return distinct * group


def estimate_btree_size(table: Table, cand: IndexCandidate, row_fraction: float = 1.0,
                        fillfactor: int = BTREE_FILLFACTOR) -> int:
    """Estimated on-disk size in bytes of `cand` built on `table` (row_fraction < 1 for a partial index)."""
    rows = max(table.rows, 0.0) * min(max(row_fraction, 0.0), 1.0)
    cols = _columns(table, cand)
    include_cols: list[Column | None] = [table.column(n) for n in cand.include]
    data = 0.0
    for col in cols + include_cols:
        width, alignment = key_width(col)
        data = _align(data, alignment) + width
    tuple_size = _maxalign(TUPLE_HEADER + data)
    usable = BLOCK - PAGE_HEADER - BTREE_SPECIAL
    leaf_capacity = usable - BLOCK * (100 - fillfactor) / 100
    leaf_bytes = _leaf_bytes(rows, _distinct(table, cols, rows) if rows else 1.0, tuple_size,
                             _deduplicates(cand, cols))
    leaf_pages = max(1, math.ceil(leaf_bytes / leaf_capacity))
    # Internal levels hold one pivot per child page; pivots carry only the key columns.
    pivot = _maxalign(TUPLE_HEADER + sum(key_width(c)[0] for c in cols)) + LINE_POINTER
    fanout = max(2, int(usable * INTERNAL_FILL // pivot))
    pages, level = leaf_pages, leaf_pages
    while level > 1:
        level = math.ceil(level / fanout)
        pages += level
    return (pages + 1) * BLOCK  # + metapage

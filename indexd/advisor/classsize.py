"""Estimated built size of the index classes beyond a B-tree on columns, from the catalog and a sample.

- B-tree on an expression: the B-tree model (`size.estimate_btree_size`) with the expression's sampled width
  and distinct values in place of a column's pg_stats (`sampling.expression_column`).
- BRIN (minmax, 128 heap pages per range): one summary tuple per range, the range map, the metapage.
- GIN: what `ginbuild` writes, from the sampled entries (`sampling.entry_stats`). Each distinct entry is one
  leaf tuple of the entry tree (8-byte header, the key, its posting list) or, when the posting list would make
  the tuple larger than GinMaxItemSize, a tuple pointing to a posting tree of data pages filled to the GIN
  fillfactor (90 %). Posting lists hold the first heap pointer (6 bytes) and varbyte-encoded gaps: 1 byte for
  rows of one page, 2 for neighbouring pages, more for entries spread thinly over the table. NULL rows and empty
  items add one entry each. Entry-tree leaf pages end up half full for small tuples (pages split in the middle
  while the build inserts in key order) and fuller for large ones; the fill was calibrated against real builds
  (bench/index_classes.py measures it). How many entries a sample's rare ones stand for: `rare_entries`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from indexd.advisor.model import Column, IndexCandidate, IndexKey, Table
from indexd.advisor.sampling import EntryStats
from indexd.advisor.size import estimate_btree_size, key_width

BLOCK = 8192
PAGE_HEADER = 24
MAXALIGN = 8
LINE_POINTER = 4
HEAP_POINTER = 6
GIN_SPECIAL = 8
GIN_MAX_ITEM = 2712  # GinMaxItemSize for 8 kB pages
GIN_DATA_PAGE = BLOCK - PAGE_HEADER - 8 - GIN_SPECIAL  # GinDataPageMaxDataSize
GIN_FILLFACTOR = 0.90
GIN_SEGMENT = 384  # GinPostingListSegmentMaxSize: each segment has its own 8-byte header
ENTRY_FILL_SMALL = 0.50  # entry-tree leaf fill for tuples up to SMALL_TUPLE bytes ...
ENTRY_FILL_LARGE = 0.70  # ... and for tuples of LARGE_TUPLE bytes or more (calibrated against real builds)
SMALL_TUPLE, LARGE_TUPLE = 250, 1000
TID_SPACE_PER_PAGE = 2048  # heap pointers are encoded as block << 11 | offset
BRIN_PAGES_PER_RANGE = 128
BRIN_REVMAP_ITEMS = (BLOCK - PAGE_HEADER - 8) // HEAP_POINTER
BRIN_TUPLE_HEADER = 8
FIXED_KEY_BYTES = {"trigram": 4, "jsonb_path": 4}  # these families store a 4-byte hash or code per entry


def _maxalign(n: float) -> int:
    return int(math.ceil(n / MAXALIGN) * MAXALIGN)


def expression_btree_size(table: Table, cand: IndexCandidate, expressions: dict[str, Column],
                          row_fraction: float = 1.0) -> int:
    """A B-tree with expression keys, sized as if each expression were a column with its sampled statistics."""
    columns = list(table.columns)
    keys: list[IndexKey] = []
    for key in cand.keys:
        stats = expressions.get(key.expression or "") if key.expression else None
        if stats is None:
            keys.append(key)
            continue
        name = f"\x00{key.expression}"  # cannot clash with a real column name
        columns.append(replace(stats, name=name))
        keys.append(IndexKey(column=name, descending=key.descending, opclass=key.opclass))
    as_columns = replace(cand, keys=tuple(keys))
    return estimate_btree_size(replace(table, columns=tuple(columns)), as_columns, row_fraction)


def brin_size(table: Table, cand: IndexCandidate) -> int:
    """Metapage, range map and one minmax summary per range of heap pages."""
    ranges = max(1, math.ceil(max(table.pages, 1) / BRIN_PAGES_PER_RANGE))
    data = 0.0
    for key in cand.keys:
        width, _ = key_width(table.column(key.column) if key.column else None)
        data += 2 * width  # min and max
    per_page = max(1, (BLOCK - PAGE_HEADER - GIN_SPECIAL) // (_maxalign(BRIN_TUPLE_HEADER + data) + LINE_POINTER))
    revmap = math.ceil(ranges / BRIN_REVMAP_ITEMS)
    return (1 + revmap + math.ceil(ranges / per_page)) * BLOCK


def entry_fill(tuple_bytes: float) -> float:
    """How full the build leaves entry-tree leaf pages of tuples this large (pages split in the middle while
    keys arrive in order leave small tuples half a page; large ones pack better)."""
    position = min(max((tuple_bytes - SMALL_TUPLE) / (LARGE_TUPLE - SMALL_TUPLE), 0.0), 1.0)
    return ENTRY_FILL_SMALL + (ENTRY_FILL_LARGE - ENTRY_FILL_SMALL) * position


def _varbyte(delta: float) -> float:
    return float(max(1, math.ceil(math.log2(max(delta, 1.0) + 1) / 7)))


def posting_bytes(postings: float, pages_with: float, heap_pages: float, rows_per_page: float) -> float:
    """Bytes of a compressed posting list of `postings` heap pointers on `pages_with` heap pages: the first
    pointer and the list's length (8 bytes), then varbyte gaps, small between rows of one page (2048 pointer
    slots per page) and larger between the pages."""
    postings = max(postings, 1.0)
    pages_with = min(max(pages_with, 1.0), postings, max(heap_pages, 1.0))
    per_page = postings / pages_with
    within = (postings - pages_with) * _varbyte(rows_per_page / per_page)
    across = (pages_with - 1.0) * _varbyte(max(heap_pages / pages_with, 1.0) * TID_SPACE_PER_PAGE)
    return HEAP_POINTER + 2 + within + across


def _entry_pages(key_bytes: float, postings: float, keys: float, data_bytes: float) -> tuple[float, float]:
    """(entry-tree leaf pages, posting-tree pages) of `keys` distinct entries with `postings` rows each, whose
    posting lists take `data_bytes`."""
    usable = BLOCK - PAGE_HEADER - GIN_SPECIAL
    inline = _maxalign(8 + key_bytes + data_bytes)
    if inline <= GIN_MAX_ITEM:
        return keys * (inline + LINE_POINTER) / (usable * entry_fill(inline)), 0.0
    data = data_bytes + math.ceil(data_bytes / GIN_SEGMENT) * 8
    pages = math.ceil(data / (GIN_DATA_PAGE * GIN_FILLFACTOR))
    pages += math.ceil(pages / 600) if pages > 1 else 0  # internal pages of the posting tree
    tuple_bytes = _maxalign(8 + key_bytes)
    return keys * (tuple_bytes + LINE_POINTER) / (usable * entry_fill(tuple_bytes)), keys * pages


def rare_entries(seen_once: int, seen_twice: int, share: float) -> tuple[float, float]:
    """(entries in the table, rows each) that the entries seen once or twice in a sample stand for: those, and
    the entries of the same frequency the sample missed (the others of that frequency, seen three times or more,
    are counted with the frequent ones).

    A sample holds each row with probability q = `share`; an entry in F rows is seen twice about (F-1)·q/(2(1-q))
    times as often as once, which gives F; with P(k) the chance of seeing such an entry k times, the entries seen
    once or twice stand for (P0 + P1 + P2) / (P1 + P2) as many. Entries found in one row only (ids, unique words)
    come out as F = 1 and f1/q entries.
    """
    seen = seen_once + seen_twice
    if seen <= 0:
        return 0.0, 1.0
    if share >= 0.999:
        return float(seen), (seen_once + 2.0 * seen_twice) / seen
    ratio = seen_twice / max(seen_once, 1)
    rows = min(1.0 + 2.0 * ratio * (1.0 - share) / share, 3.0 / share)
    missed = (1.0 - share) ** rows
    once = rows * share * (1.0 - share) ** (rows - 1.0)
    twice = rows * (rows - 1.0) / 2.0 * share * share * (1.0 - share) ** max(rows - 2.0, 0.0)
    return seen * (missed + once + twice) / max(once + twice, 1e-12), rows


def gin_size(table: Table, stats: EntryStats, family: str) -> int:
    """Estimated size of a GIN index of this family on a table, from its sampled entries."""
    if stats.sample_rows <= 0:
        return 2 * BLOCK
    rows = max(table.rows, 1.0)
    heap_pages = max(float(table.pages), 1.0)
    share = min(1.0, stats.sample_rows / rows)  # of the rows, and (whole pages sampled) of the pages
    rows_per_page = rows / heap_pages
    groups: list[tuple[float, float, float, float]] = []  # (key bytes, rows each, heap pages each, entries)
    for count, number, width, pages in stats.frequencies:
        if count > 2:
            groups.append((_key_bytes(family, width), count / share, pages / share, float(number)))
    rare = [f for f in stats.frequencies if f[0] <= 2]
    if rare:
        once = next((f[1] for f in rare if f[0] == 1), 0)
        twice = next((f[1] for f in rare if f[0] == 2), 0)
        keys, each = rare_entries(once, twice, share)
        width = sum(f[1] * f[2] for f in rare) / max(once + twice, 1)
        groups.append((_key_bytes(family, width), each, each, keys))
    empty = (stats.sample_rows - stats.rows_with_entries) / share  # NULL or empty items: one entry each
    if empty >= 1:
        groups.append((1.0, empty, min(empty, heap_pages), 1.0))
    leaf_pages = posting_pages = 0.0
    for key_bytes, postings, pages_with, keys in groups:
        data = posting_bytes(postings, pages_with, heap_pages, rows_per_page)
        in_tree, tree_pages = _entry_pages(key_bytes, postings, keys, data)
        leaf_pages += in_tree
        posting_pages += tree_pages
    leaf = math.ceil(leaf_pages)
    internal = math.ceil(leaf / 100) if leaf > 1 else 0
    return int((1 + max(leaf, 1) + internal + posting_pages) * BLOCK)


def _key_bytes(family: str, text_bytes: float) -> float:
    """Bytes of one entry key: a 4-byte code for trigrams and jsonb_path_ops, else the text, its 1-byte varlena
    header (and for jsonb_ops a flag byte, which the sampled text's K/V prefix already counts)."""
    return float(FIXED_KEY_BYTES.get(family, text_bytes + 1))

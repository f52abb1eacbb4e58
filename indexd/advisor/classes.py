"""Index candidates beyond a B-tree on columns, each from a predicate the workload really has.

- GIN, for the conjuncts only it serves (`expressions.gin_family`): jsonb (`jsonb_path_ops` when every statement
  of the workload uses only `@>`, `@?`, `@@` on that key, the default `jsonb_ops` otherwise), arrays, text search
  (a tsvector column or `to_tsvector(config, column)`), trigram (`gin_trgm_ops`, when the pg_trgm extension is
  created in the database; otherwise the statements it would serve are noted with the CREATE EXTENSION line).
- BRIN, for a range condition on a large table whose physical order follows the column (|pg_stats.correlation|
  >= BRIN_MIN_CORRELATION): a few pages that skip most of the table. Never for equality alone (a point lookup
  reads whole block ranges).
- Sparse partial B-tree, `(keys) WHERE col IS NOT NULL`, for a strict condition on a mostly NULL column: it holds
  only the rows that can match.
A class is only proposed for a predicate that needs it; what-if costing decides whether it beats the B-tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from indexd.advisor.expressions import JSONB_PATH_OPS, canonical
from indexd.advisor.model import ExistingIndex, IndexCandidate, IndexKey
from indexd.advisor.predicates import ClassUse, Scan
from indexd.statements.statement import Statement

TRIGRAM_EXTENSION = "pg_trgm"
BRIN_MIN_CORRELATION = 0.9
BRIN_MIN_PAGES = 1000  # ~8 MB of heap: below that a BRIN skips too little to matter
SPARSE_NULL_FRACTION = 0.8  # a column at least this NULL gets a `WHERE col IS NOT NULL` candidate
_OPCLASS = {"trigram": "gin_trgm_ops"}
_EXTENSION_USE = {TRIGRAM_EXTENSION: "a trigram GIN index (gin_trgm_ops) for LIKE/ILIKE '%...%', ~, ~* and %"}


def _key_id(table: str, key: IndexKey) -> tuple[str, str]:
    return table, key.column if key.column is not None else canonical(key.expression or "")


@dataclass
class WorkloadUses:
    """What the whole workload asks of each table, for choices one statement cannot make alone."""

    gin_operators: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (table, key) -> operators
    equal_sets: dict[str, list[tuple[IndexKey, ...]]] = field(default_factory=dict)  # table -> equality keys
    extensions: frozenset[str] = frozenset()

    @classmethod
    def of(cls, scans: Iterable[Scan], extensions: frozenset[str]) -> WorkloadUses:
        uses = cls(extensions=extensions)
        for scan in scans:
            table = scan.table.qualified
            for use in scan.special:
                uses.gin_operators.setdefault(_key_id(table, use.key), set()).add(use.operator)
            if scan.equal:
                known = uses.equal_sets.setdefault(table, [])
                if tuple(scan.equal) not in known:
                    known.append(tuple(scan.equal))
        return uses

    def leads(self, scan: Scan) -> list[tuple[IndexKey, ...]]:
        """Other statements' equality keys on this table that are a strict subset of this scan's: an index
        leading with them serves those statements too (tenant_id, then email)."""
        mine = set(scan.equal)
        found = [keys for keys in self.equal_sets.get(scan.table.qualified, []) if set(keys) < mine]
        return sorted(found, key=len, reverse=True)

    def opclass(self, table: str, use: ClassUse) -> str | None:
        if use.family == "jsonb":
            operators = self.gin_operators.get(_key_id(table, use.key), {use.operator})
            return "jsonb_path_ops" if operators <= JSONB_PATH_OPS else None
        return _OPCLASS.get(use.family)


def gin_candidates(scan: Scan, uses: WorkloadUses) -> tuple[dict[IndexCandidate, list[ClassUse]], set[str]]:
    """One single-key GIN candidate per key GIN-only conjuncts use, with those conjuncts; and the extensions that
    are missing."""
    found: dict[IndexCandidate, list[ClassUse]] = {}
    missing: set[str] = set()
    table = scan.table
    for use in scan.special:
        if use.family == "trigram" and TRIGRAM_EXTENSION not in uses.extensions:
            missing.add(TRIGRAM_EXTENSION)
            continue
        key = IndexKey(column=use.key.column, expression=use.key.expression,
                       opclass=uses.opclass(table.qualified, use))
        cand = IndexCandidate(table.schema, table.name, (key,), method="gin")
        found.setdefault(cand, []).append(use)
    return found, missing


def brin_candidates(scan: Scan) -> list[IndexCandidate]:
    """BRIN on each range column of a large table stored in (or against) that column's order."""
    table = scan.table
    if table.pages < BRIN_MIN_PAGES:
        return []
    found = []
    for key in scan.ranges:
        column = table.column(key.column) if key.column else None
        if column is None or key.opclass or column.correlation is None:
            continue
        if abs(column.correlation) >= BRIN_MIN_CORRELATION:
            found.append(IndexCandidate(table.schema, table.name, (IndexKey(column=key.column),), method="brin"))
    return found


def sparse_candidates(scan: Scan, sets: Sequence[tuple[IndexKey, ...]]) -> list[IndexCandidate]:
    """`(keys) WHERE col IS NOT NULL` for key sets leading with a strictly compared, mostly NULL column."""
    table = scan.table
    strict = {k.column for k in [*scan.equal, *scan.ranges] if k.column}
    strict -= {f.column for f in scan.fixed if f.kind == "null"}
    found = []
    for keys in sets:
        lead = keys[0].column
        column = table.column(lead) if lead is not None and lead in strict else None
        if column is None or (column.null_frac or 0.0) < SPARSE_NULL_FRACTION:
            continue
        cand = IndexCandidate(table.schema, table.name, keys, where=f"{_quoted(column.name)} IS NOT NULL")
        if cand not in found:
            found.append(cand)
    return found


def _quoted(name: str) -> str:
    """An identifier as SQL text (quoted unless it is a plain lower-case name)."""
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def existing_serves(cand: IndexCandidate, existing: Iterable[ExistingIndex]) -> bool:
    """A valid, complete index of the same class on the same key, with an operator class at least as capable
    (a default jsonb_ops index serves what jsonb_path_ops would)."""
    if cand.method == "btree" or cand.where or len(cand.keys) != 1:
        return False
    key = cand.keys[0]
    wanted = key.column if key.column is not None else canonical(key.expression or "")
    for index in existing:
        if not index.is_valid or index.where is not None or index.method != cand.method or len(index.keys) != 1:
            continue
        theirs = index.keys[0] if index.keys[0] == key.column else canonical(index.keys[0])
        if theirs != wanted:
            continue
        if key.opclass is None and "_ops" in index.definition.split(" USING ", 1)[-1]:
            continue  # theirs has a narrower operator class than the default one wanted
        if key.opclass is not None and key.opclass != "jsonb_path_ops" and key.opclass not in index.definition:
            continue
        return True
    return False


def extension_notes(needs: Mapping[str, list[int]], statements: Sequence[Statement], database: str) -> list[str]:
    """One line per missing extension: the statements an index class needing it would serve, and how to add it."""
    notes = []
    for extension, indexes in sorted(needs.items()):
        served = list(dict.fromkeys(indexes))
        example = " ".join(statements[served[0]].query.split())[:80]
        notes.append(f"{len(served)} statement(s) would be served by {_EXTENSION_USE.get(extension, extension)}, "
                     f"which needs the {extension} extension: run CREATE EXTENSION {extension}; in database "
                     f"{database} (e.g. {example})")
    return notes

"""Index health findings as pure functions of the catalog's description of each index: unused, duplicate or
redundant, invalid and bloated, each with its evidence and the exact statement that would fix it.

Indexes that back a primary key, unique or exclusion constraint, and unique indexes, are never proposed for
dropping: they enforce something, whatever their scans say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from indexd.lifecycle import bloat
from indexd.lifecycle.ddl import OWN_PREFIX
from indexd.units import human_size

CONSTRAINT_KINDS = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}


def quote_ident(name: str) -> str:
    """An identifier quoted as PostgreSQL reads it (what psycopg2's sql.Identifier produces)."""
    return '"' + name.replace('"', '""') + '"'


def drop_sql(schema: str, name: str, *, partitioned: bool = False) -> str:
    """DROP INDEX CONCURRENTLY; a plain DROP INDEX for an index on a partitioned table, which cannot be dropped
    concurrently (it locks the table and its partitions for a moment)."""
    return f"DROP INDEX {'' if partitioned else 'CONCURRENTLY '}{quote_ident(schema)}.{quote_ident(name)};"


def reindex_sql(schema: str, name: str) -> str:
    return f"REINDEX INDEX CONCURRENTLY {quote_ident(schema)}.{quote_ident(name)};"


@dataclass(frozen=True)
class IndexInfo:
    """One index as the catalog describes it."""

    oid: int
    schema: str
    table: str
    name: str
    method: str = "btree"
    keys: tuple[str, ...] = ()  # key columns or expressions, as pg_get_indexdef(oid, n, true) shows them
    include: tuple[str, ...] = ()
    opclasses: tuple[str, ...] = ()  # per key column
    collations: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # per key column: DESC / NULLS FIRST bits
    predicate: str | None = None
    definition: str = ""
    is_unique: bool = False
    is_primary: bool = False
    is_valid: bool = True
    is_ready: bool = True
    constraint: str | None = None  # the primary key, unique or exclusion constraint it backs
    constraint_type: str | None = None  # p, u or x
    size_bytes: int = 0
    scans: int = 0
    building: bool = False  # a CREATE INDEX is running for it now
    partition_child: bool = False  # attached to a partitioned index: dropped only with its parent
    partitioned: bool = False  # on a partitioned table: size and scans are its partitions' indexes'
    own: bool = False  # created by indexd (its name prefix and a recommendation of ours)
    built_at: datetime | None = None  # when indexd built it, when known

    @property
    def protected(self) -> bool:
        """Enforces something (primary key, uniqueness, exclusion): never proposed for dropping."""
        return self.is_primary or self.is_unique or self.constraint is not None

    def drop_statement(self) -> str:
        return drop_sql(self.schema, self.name, partitioned=self.partitioned)

    def protection(self) -> str:
        if self.constraint is not None:
            kind = CONSTRAINT_KINDS.get(self.constraint_type or "", "constraint")
            return f"backs the {kind} {self.constraint}"
        return "is the primary key" if self.is_primary else "is unique"


@dataclass(frozen=True)
class Finding:
    kind: str  # unused | duplicate | redundant | invalid | bloated
    schema: str
    table: str
    index: str
    size_bytes: int
    evidence: dict[str, Any]
    action: str
    sql: str | None  # the statement that carries out the action, identifiers quoted
    droppable: bool = False  # indexd may drop it (drop_unused): never when it enforces something
    own: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HealthReport:
    database: str
    generated_at: datetime
    stats_since: datetime | None  # statistics (index scans) cover at least the time since then
    unused: list[Finding] = field(default_factory=list)
    duplicate: list[Finding] = field(default_factory=list)
    invalid: list[Finding] = field(default_factory=list)
    bloated: list[Finding] = field(default_factory=list)
    indexes_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "generated_at": self.generated_at.isoformat(),
            "stats_since": self.stats_since.isoformat() if self.stats_since else None,
            "indexes_checked": self.indexes_checked,
            **{k: [f.as_dict() for f in getattr(self, k)] for k in ("unused", "duplicate", "invalid", "bloated")},
        }


# ---- pure classification -------------------------------------------------------------------------------------


def covered_since(index: IndexInfo, stats_since: datetime | None) -> datetime | None:
    """Since when the index's scan counter has been counting: the later of the statistics' start and its build."""
    times = [t for t in (stats_since, index.built_at) if t is not None]
    return max(times) if times else None


def find_unused(indexes: Iterable[IndexInfo], stats_since: datetime | None, now: datetime,
                unused_for: timedelta, standbys: int = 0) -> list[Finding]:
    """Valid indexes never scanned since the statistics began; droppable when that covers unused_for and no
    standby is connected (a standby's scans are counted on the standby only, where a read replica may use it)."""
    found = []
    for ix in indexes:
        if ix.scans or not ix.is_valid or ix.protected or ix.partition_child:
            continue
        since = covered_since(ix, stats_since)
        covered = (now - since) if since else timedelta(0)
        mature = since is not None and covered >= unused_for
        evidence = {"scans": 0, "stats_since": since.isoformat() if since else None,
                    "covered_days": round(covered.total_seconds() / 86400, 2),
                    "unused_for_days": round(unused_for.total_seconds() / 86400, 2), "mature": mature,
                    "standbys": standbys, "definition": ix.definition,
                    "created": ix.built_at.isoformat() if ix.built_at else ("unknown" if not ix.own else None)}
        if not mature:
            action = (f"keep watching: unused for {evidence['covered_days']} days of statistics, "
                      f"fewer than the {evidence['unused_for_days']} days drop_unused.unused_for asks")
        elif standbys:
            action = (f"check the {standbys} standby(s) first: scans there are not counted here (list each in "
                      "databases[].replicas, readable, to count them); drop it if pg_stat_user_indexes shows none "
                      "there either")
        else:
            action = "drop it: never scanned in the time the statistics cover"
        found.append(Finding("unused", ix.schema, ix.table, ix.name, ix.size_bytes, evidence, action,
                             ix.drop_statement(), droppable=mature and not standbys, own=ix.own))
    return found


def _signature(ix: IndexInfo) -> tuple[Any, ...]:
    return (ix.schema, ix.table, ix.method, ix.keys, frozenset(ix.include), ix.opclasses, ix.collations,
            ix.options, ix.predicate)


def _keeper_rank(ix: IndexInfo) -> tuple[Any, ...]:
    """Which of identical indexes to keep: the one enforcing most, then the most used, then the oldest."""
    return (ix.constraint is not None, ix.is_primary, ix.is_unique, ix.scans, -ix.oid)


def _comparable(indexes: Iterable[IndexInfo]) -> list[IndexInfo]:
    return [ix for ix in indexes if ix.is_valid and not ix.partition_child]


def find_duplicates(indexes: Iterable[IndexInfo]) -> list[Finding]:
    """Identical indexes (same table, keys, method, predicate, opclasses, collations, order, included columns),
    then prefix-redundant B-trees: (a) when a valid (a, b) exists, neither partial, the shorter not unique."""
    candidates = _comparable(indexes)
    groups: dict[tuple[Any, ...], list[IndexInfo]] = {}
    for ix in candidates:
        groups.setdefault(_signature(ix), []).append(ix)
    found: list[Finding] = []
    reported: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        keeper = max(members, key=_keeper_rank)
        for ix in sorted(members, key=lambda i: i.name):
            if ix is not keeper:
                found.append(_duplicate(ix, keeper))
                reported.add(ix.oid)
    for short in candidates:
        if short.oid in reported:
            continue
        longer = _covering(short, candidates)
        if longer is not None:
            found.append(_redundant(short, longer))
    return found


def _duplicate(ix: IndexInfo, keeper: IndexInfo) -> Finding:
    evidence = {"duplicate_of": keeper.name, "definition": ix.definition, "kept_definition": keeper.definition,
                "scans": ix.scans, "kept_scans": keeper.scans}
    if ix.constraint is not None:
        action = (f"it {ix.protection()}, identical to {keeper.name}: drop that constraint instead if it is "
                  "redundant (ALTER TABLE ... DROP CONSTRAINT), never the index alone")
        return Finding("duplicate", ix.schema, ix.table, ix.name, ix.size_bytes, evidence, action, None, own=ix.own)
    return Finding("duplicate", ix.schema, ix.table, ix.name, ix.size_bytes, evidence,
                   f"drop it: {keeper.name} is the same index", ix.drop_statement(),
                   droppable=True, own=ix.own)


def _prefix_of(short: IndexInfo, long: IndexInfo) -> bool:
    n = len(short.keys)
    return (
        long.keys[:n] == short.keys
        and long.opclasses[:n] == short.opclasses
        and long.collations[:n] == short.collations
        and long.options[:n] == short.options
    )


def _covering(short: IndexInfo, candidates: Sequence[IndexInfo]) -> IndexInfo | None:
    if short.method != "btree" or short.predicate or short.include or short.protected:
        return None
    covering = [
        long for long in candidates
        if long.oid != short.oid and long.schema == short.schema and long.table == short.table
        and long.method == "btree" and not long.predicate and len(long.keys) > len(short.keys)
        and _prefix_of(short, long)
    ]
    return min(covering, key=lambda i: (len(i.keys), i.size_bytes, i.name)) if covering else None


def _redundant(short: IndexInfo, longer: IndexInfo) -> Finding:
    evidence = {"covered_by": longer.name, "definition": short.definition, "covering_definition": longer.definition,
                "scans": short.scans, "covering_scans": longer.scans}
    return Finding("redundant", short.schema, short.table, short.name, short.size_bytes, evidence,
                   f"drop it: its keys are a prefix of {longer.name}, which serves the same lookups",
                   short.drop_statement(), droppable=True, own=short.own)


def find_invalid(indexes: Iterable[IndexInfo]) -> list[Finding]:
    """Indexes marked invalid: failed concurrent builds or reindexes. They cost writes and serve no reads."""
    found = []
    for ix in indexes:
        if ix.is_valid:
            continue
        made_by = "indexd" if ix.own or ix.name.startswith(OWN_PREFIX) else "someone else"
        evidence = {"made_by": made_by, "ready": ix.is_ready, "building_now": ix.building,
                    "definition": ix.definition}
        if ix.building:
            found.append(Finding("invalid", ix.schema, ix.table, ix.name, ix.size_bytes, evidence,
                                 "a CREATE INDEX is building it right now: leave it", None, own=ix.own))
            continue
        if made_by == "indexd":
            action = "a leftover of a failed indexd build: drop it (indexd also does at start-up)"
        elif ix.is_unique:
            action = ("a failed unique build: the column has duplicates; drop it, remove the duplicates, "
                      "then build it again")
        else:
            action = "a failed CREATE INDEX CONCURRENTLY or REINDEX: drop it, then build it again if it is needed"
        found.append(Finding("invalid", ix.schema, ix.table, ix.name, ix.size_bytes, evidence, action,
                             ix.drop_statement(), droppable=ix.constraint is None, own=ix.own))
    return found


def bloat_findings(indexes: Iterable[IndexInfo], estimates: dict[int, bloat.BloatEstimate],
                   min_ratio: float = bloat.MIN_BLOAT_RATIO, min_bytes: int = bloat.MIN_BLOAT_BYTES) -> list[Finding]:
    found = []
    for ix in indexes:
        est = estimates.get(ix.oid)
        if est is None or not est.is_bloated(min_ratio, min_bytes):
            continue
        found.append(Finding("bloated", ix.schema, ix.table, ix.name, ix.size_bytes,
                             {**est.as_dict(), "definition": ix.definition},
                             f"rebuild it without blocking writes: about {human_size(est.bloat_bytes)} "
                             f"({est.bloat_ratio:.0%}) would be freed", reindex_sql(ix.schema, ix.name), own=ix.own))
    return found


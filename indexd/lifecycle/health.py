"""Index health: unused, duplicate or redundant, invalid and bloated indexes of a managed database, each finding
with its evidence and the exact statement that would fix it.

The classification (`find_unused`, `find_duplicates`, `find_invalid`) is pure, on `IndexInfo` records read from
the catalog by `read_indexes`; `report` puts the two together with the bloat estimate of `bloat.py`.
Indexes that back a primary key, unique or exclusion constraint, and unique indexes, are never proposed for
dropping: they enforce something, whatever their scans say.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg2 import sql

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, Settings
from indexd.db.pool import Database, PgConnection
from indexd.db.state import current_version
from indexd.errors import UsageError
from indexd.lifecycle import bloat
from indexd.lifecycle.build import OWN_PREFIX, drop_index_concurrently
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.readings import CpuSampler, host_cpu_pct
from indexd.lifecycle.verify import drop_decision, leading

log = logging.getLogger(__name__)

CONSTRAINT_KINDS = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}


def quote_ident(name: str) -> str:
    """An identifier quoted as PostgreSQL reads it (what psycopg2's sql.Identifier produces)."""
    return '"' + name.replace('"', '""') + '"'


def drop_sql(schema: str, name: str) -> str:
    return f"DROP INDEX CONCURRENTLY {quote_ident(schema)}.{quote_ident(name)};"


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
    own: bool = False  # created by indexd (its name prefix and a recommendation of ours)
    built_at: datetime | None = None  # when indexd built it, when known

    @property
    def protected(self) -> bool:
        """Enforces something (primary key, uniqueness, exclusion): never proposed for dropping."""
        return self.is_primary or self.is_unique or self.constraint is not None

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
            action = (f"check the {standbys} standby(s) first: scans there are not counted here; drop it if "
                      "pg_stat_user_indexes shows none there either")
        else:
            action = "drop it: never scanned in the time the statistics cover"
        found.append(Finding("unused", ix.schema, ix.table, ix.name, ix.size_bytes, evidence, action,
                             drop_sql(ix.schema, ix.name), droppable=mature and not standbys, own=ix.own))
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
                   f"drop it: {keeper.name} is the same index", drop_sql(ix.schema, ix.name),
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
                   drop_sql(short.schema, short.name), droppable=True, own=short.own)


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
                             drop_sql(ix.schema, ix.name), droppable=ix.constraint is None, own=ix.own))
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
                             f"rebuild it without blocking writes: about {est.bloat_bytes // 1024**2} MB "
                             f"({est.bloat_ratio:.0%}) would be freed", reindex_sql(ix.schema, ix.name), own=ix.own))
    return found


# ---- catalog ---------------------------------------------------------------------------------------------------

_INDEXES = """
SELECT c.oid::bigint, n.nspname, t.relname, c.relname, am.amname,
       ARRAY(SELECT pg_get_indexdef(c.oid, k, true) FROM generate_series(1, i.indnkeyatts) k ORDER BY k),
       ARRAY(SELECT pg_get_indexdef(c.oid, k, true) FROM generate_series(i.indnkeyatts + 1, i.indnatts) k
             ORDER BY k),
       i.indclass::text, i.indcollation::text, i.indoption::text,
       pg_get_expr(i.indpred, i.indrelid, true), pg_get_indexdef(c.oid),
       i.indisunique, i.indisprimary, i.indisvalid, i.indisready, con.conname, con.contype::text,
       pg_relation_size(c.oid), coalesce(pg_stat_get_numscans(c.oid), 0),
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid),
       EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid AND c.relkind = 'i'
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am am ON am.oid = c.relam
  LEFT JOIN pg_constraint con ON con.conindid = c.oid AND con.contype IN ('p', 'u', 'x')
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname <> %s
   AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
 ORDER BY n.nspname, t.relname, c.relname
"""


def _own_indexes(conn: PgConnection, state_schema: str) -> dict[tuple[str, str], datetime | None]:
    """indexd's indexes by (schema, name), with their build time: recommendations that name them."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s), to_regclass(%s)",
                    (f"{quote_ident(state_schema)}.recommendations", f"{quote_ident(state_schema)}.mutation_log"))
        if None in cur.fetchone():
            return {}
        cur.execute(sql.SQL(
            "SELECT r.table_schema, r.index_name, max(m.at) FROM {0}.recommendations r"
            " LEFT JOIN {0}.mutation_log m ON m.recommendation_id = r.id AND m.action = 'create_index'"
            " AND m.phase = 'outcome' AND m.outcome = 'succeeded'"
            " WHERE r.index_name LIKE 'indexd\\_%%' AND r.status NOT IN ('pending', 'approved', 'rejected')"
            " GROUP BY 1, 2").format(sql.Identifier(state_schema)))
        return {(r[0], r[1]): r[2] for r in cur.fetchall()}


def _vector(text: str | None) -> tuple[str, ...]:
    return tuple((text or "").split())


def read_indexes(conn: PgConnection, state_schema: str) -> list[IndexInfo]:
    """Every index of the database's own schemas (not the catalogs, not indexd's state schema)."""
    own = _own_indexes(conn, state_schema)
    with conn.cursor() as cur:
        cur.execute(_INDEXES, (state_schema,))
        rows = cur.fetchall()
    found = []
    for r in rows:
        key = (r[1], r[3])
        mine = key in own and r[3].startswith(OWN_PREFIX)
        found.append(IndexInfo(
            oid=int(r[0]), schema=r[1], table=r[2], name=r[3], method=r[4], keys=tuple(r[5]), include=tuple(r[6]),
            opclasses=_vector(r[7]), collations=_vector(r[8]), options=_vector(r[9]), predicate=r[10],
            definition=r[11], is_unique=r[12], is_primary=r[13], is_valid=r[14], is_ready=r[15], constraint=r[16],
            constraint_type=r[17], size_bytes=int(r[18]), scans=int(r[19]), building=r[20], partition_child=r[21],
            own=mine, built_at=own.get(key) if mine else None))
    return found


def read_stats_since(conn: PgConnection) -> tuple[datetime | None, int]:
    """The start of the time index scan counters surely cover: the later of the last statistics reset and
    the server's start (a crash restart discards them; a clean one keeps them, so this errs on the safe side);
    and the number of standbys streaming from this server."""
    with conn.cursor() as cur:
        cur.execute("SELECT greatest(d.stats_reset, pg_postmaster_start_time()),"
                    " (SELECT count(*) FROM pg_stat_replication)"
                    " FROM pg_stat_database d WHERE d.datname = current_database()")
        row = cur.fetchone()
    return (row[0], int(row[1])) if row else (None, 0)


def report(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    now: datetime | None = None,
    *,
    min_bloat_ratio: float = bloat.MIN_BLOAT_RATIO,
    min_bloat_bytes: int = bloat.MIN_BLOAT_BYTES,
) -> HealthReport:
    """The health of one database's indexes; reads the catalog only, changes nothing."""
    del settings  # the global settings hold nothing health needs beyond the database's own
    now = now or utcnow()
    with db.connection() as conn:
        indexes = read_indexes(conn, db.settings.state_schema)
        stats_since, standbys = read_stats_since(conn)
        block_size, inputs = bloat.read_inputs(conn, [ix.oid for ix in indexes if ix.is_valid])
        estimates = bloat.estimates(conn, inputs, block_size, min_bloat_ratio, min_bloat_bytes)
    result = HealthReport(
        database=db_settings.name,
        generated_at=now,
        stats_since=stats_since,
        unused=find_unused(indexes, stats_since, now, db_settings.indexing.drop_unused.unused_for, standbys),
        duplicate=find_duplicates(indexes),
        invalid=find_invalid(indexes),
        bloated=bloat_findings(indexes, estimates, min_bloat_ratio, min_bloat_bytes),
        indexes_checked=len(indexes),
    )
    log.info("index health of %s: %d indexes, %d unused, %d duplicate or redundant, %d invalid, %d bloated",
             db_settings.name, len(indexes), len(result.unused), len(result.duplicate), len(result.invalid),
             len(result.bloated))
    return result


# ---- dropping unused indexes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropOutcome:
    schema: str
    index: str
    outcome: str  # dropped | refused | failed | skipped
    reason: str


_STILL_UNUSED = """
SELECT coalesce(pg_stat_get_numscans(c.oid), 0) = 0 AND i.indisvalid AND NOT i.indisunique AND NOT i.indisprimary
       AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = c.oid AND con.contype IN ('p', 'u', 'x'))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid
 WHERE n.nspname = %s AND c.relname = %s
"""


def _still_unused(db: Database, schema: str, name: str) -> bool:
    """Re-read right before dropping: the index is still there, still unscanned, still enforcing nothing."""
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(_STILL_UNUSED, (schema, name))
        row = cur.fetchone()
    return bool(row and row[0])


def _mark_reverted(db: Database, schema: str, name: str, reason: str) -> None:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL(
            "UPDATE {}.recommendations SET status = 'reverted', reason = %s, updated_at = now()"
            " WHERE table_schema = %s AND index_name = %s AND status IN ('built', 'kept')").format(
            sql.Identifier(db.settings.state_schema)), (reason, schema, name))


def drop_candidates(report: HealthReport, only_own: bool) -> list[Finding]:
    """Unused findings indexd may drop: old enough, enforcing nothing, and its own unless only_own is off."""
    return [f for f in report.unused if f.droppable and (f.own or not only_own)]


def drop_unused(
    db: Database,
    settings: Settings,
    db_settings: DatabaseSettings,
    report: HealthReport,
    now: datetime | None = None,
    job_id: str | None = None,
    *,
    leadership: Leadership | None = None,
    cpu: CpuSampler = host_cpu_pct,
) -> list[DropOutcome]:
    """Drop the report's unused indexes when drop_unused is enabled: indexd's own only (unless only_own is false),
    never one that backs a constraint or is unique, each through the guards (window included) and audited."""
    opts = db_settings.indexing.drop_unused
    if not opts.enabled:
        log.info("drop of unused indexes on %s: disabled (indexing.drop_unused.enabled)", db.name)
        return []
    if current_version(db) is None:
        raise UsageError(f"database {db.name} has no indexd state schema yet (the audit log): run 'indexd migrate'")
    outcomes: list[DropOutcome] = []
    with leading(db, leadership) as lead:
        for f in drop_candidates(report, opts.only_own):
            outcomes.append(_drop_one(db, settings, db_settings, lead, f, now or utcnow(), job_id, cpu))
    log.info("drop of unused indexes on %s: %d dropped, %d refused, %d failed", db.name,
             *(sum(1 for o in outcomes if o.outcome == k) for k in ("dropped", "refused", "failed")))
    return outcomes


def _drop_one(db: Database, settings: Settings, db_settings: DatabaseSettings, lead: Leadership, f: Finding,
              now: datetime, job_id: str | None, cpu: CpuSampler) -> DropOutcome:
    decision = drop_decision(db, settings, db_settings.indexing, lead, now, table=f"{f.schema}.{f.table}",
                             index_name=f.index, respect_window=True, cpu=cpu)
    if not decision.allowed:
        why = "; ".join(decision.reasons)
        log.info("not dropping unused %s.%s: %s", f.schema, f.index, why)
        return DropOutcome(f.schema, f.index, "refused", why)
    if not _still_unused(db, f.schema, f.index):
        return DropOutcome(f.schema, f.index, "skipped", "scanned, changed or gone since the report")
    reason = f"unused: 0 scans in {f.evidence['covered_days']} days of statistics"
    result = drop_index_concurrently(db, f.schema, f.index, reason=reason, action="drop_index", job_id=job_id)
    if not result.ok:
        return DropOutcome(f.schema, f.index, "failed", result.reason or "drop failed")
    if f.own:
        _mark_reverted(db, f.schema, f.index, reason)
    return DropOutcome(f.schema, f.index, "dropped", reason)


# ---- the readable report ------------------------------------------------------------------------------------

SECTIONS = (("unused", "Unused"), ("duplicate", "Duplicate"), ("invalid", "Invalid"), ("bloated", "Bloated"))


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


def _evidence_line(f: Finding) -> str:
    e = f.evidence
    if f.kind == "unused":
        return (f"0 scans in {e['covered_days']} days of statistics (since {e['stats_since'] or 'unknown'}); "
                f"drop_unused.unused_for is {e['unused_for_days']} days")
    if f.kind == "duplicate":
        return f"same definition as {e['duplicate_of']} ({e['scans']} scans here, {e['kept_scans']} there)"
    if f.kind == "redundant":
        return f"keys are a prefix of {e['covered_by']} ({e['scans']} scans here, {e['covering_scans']} there)"
    if f.kind == "invalid":
        return (f"INVALID, made by {e['made_by']}, {'still maintained on writes' if e['ready'] else 'not ready'}"
                f"{', being built now' if e['building_now'] else ''}")
    return (f"about {e['bloat_ratio']:.0%} bloat: {e['actual_pages']} pages where a fresh build needs about "
            f"{e['expected_pages']} ({_size(e['bloat_bytes'])} to free)")


def _shown(name: str) -> str:
    """An identifier as SQL would need it written: quoted only when it must be."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else quote_ident(name)


def render_text(report: HealthReport) -> str:
    """The report as people read it: one section per kind, each finding with evidence, action and statement."""
    since = report.stats_since.isoformat(timespec="seconds") if report.stats_since else "unknown"
    lines = [f"database {report.database}: {report.indexes_checked} indexes checked; "
             f"scan statistics cover the time since {since}"]
    for key, title in SECTIONS:
        findings: list[Finding] = getattr(report, key)
        lines.append("")
        lines.append(f"{title} ({len(findings)})" + ("" if findings else ": none"))
        for f in findings:
            lines.append(f"  {_shown(f.schema)}.{_shown(f.table)}  {_shown(f.index)}  {_size(f.size_bytes)}"
                         + ("  [indexd]" if f.own else ""))
            lines.append(f"    evidence: {_evidence_line(f)}")
            lines.append(f"    action:   {f.action}")
            if f.sql:
                lines.append(f"    sql:      {f.sql}")
    return "\n".join(lines) + "\n"

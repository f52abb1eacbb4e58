"""The table `recommendations` and every write to it: saving advice, the human decisions, claiming a row for a
build and settling it, the verdicts of verification. The statuses and the moves allowed between them are
`indexd.state.statuses`.

Every move is checked twice. In Python, against TRANSITIONS, before it is asked for: asking for a move the
table forbids is a bug (IllegalTransition). In the database, by the UPDATE itself: it moves a row only while
the row is *currently* in one of the move's source statuses, read under FOR UPDATE in the same statement, so
two processes can never both move it (the second finds the first one's status and moves nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from indexd.db.pool import PgConnection
from indexd.errors import IndexdError
from indexd.state.recommendation_rows import (
    StoredRecommendation,
    approved_sql,
    auto_sql,
    load_recommendations,
    status_in,
    status_of,
)
from indexd.state.statuses import (
    DECISIONS,
    LIVE,
    QUEUED,
    TRANSITIONS,
    IllegalTransition,
    Origin,
    S,
    Status,
    check_transition,
    decidable_from,
)

# ---- saving advice ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRecommendation:
    """Advice to save: an index shape (fingerprint) with its estimates, as plain values."""

    fingerprint: str
    table_schema: str
    table_name: str
    columns: list[str]
    method: str
    where_clause: str | None
    include: list[str]
    index_name: str
    create_sql: str
    estimated_size_bytes: int | None
    improvement_pct: float | None
    write_overhead: float | None
    queries: list[dict[str, Any]]
    origin: Origin = Origin.WORKLOAD
    benefit_ms_per_s: float | None = None  # ms/s of read time saved, the unit of write_overhead


# A live row of the same shape is refreshed in place (status and decision untouched); the real workload's
# support outranks a query file's, never the other way round. A shape a person rejected (and nobody revived)
# is not queued again: the rejection stands, and its id is returned (`approve` changes a person's mind). A
# shape indexd built and reverted before is queued again with a reason saying it waits for a person (`_auto`).
_UPSERT = """
WITH rejected AS (
  SELECT max(id) AS id FROM {s}.recommendations
   WHERE fingerprint = %(fingerprint)s AND {rejected}
     AND NOT EXISTS (SELECT 1 FROM {s}.recommendations WHERE fingerprint = %(fingerprint)s AND {live})),
saved AS (
  INSERT INTO {s}.recommendations AS r (fingerprint, table_schema, table_name, columns, method, where_clause,
                                        include, index_name, create_sql, estimated_size_bytes, improvement_pct,
                                        write_overhead, benefit_ms_per_s, queries, origin, reason)
  SELECT %(fingerprint)s, %(table_schema)s, %(table_name)s, %(columns)s, %(method)s, %(where_clause)s,
         %(include)s, %(index_name)s, %(create_sql)s, %(estimated_size_bytes)s, %(improvement_pct)s,
         %(write_overhead)s, %(benefit_ms_per_s)s, %(queries)s, %(origin)s,
         (SELECT 'built and reverted before (recommendation #' || max(id) || '): mode auto builds it again only'
                 ' once a person approves it'
            FROM {s}.recommendations WHERE fingerprint = %(fingerprint)s AND {reverted})
   WHERE (SELECT id FROM rejected) IS NULL
  ON CONFLICT (fingerprint) WHERE {live}
  DO UPDATE SET updated_at = now(), estimated_size_bytes = EXCLUDED.estimated_size_bytes,
                improvement_pct = EXCLUDED.improvement_pct, write_overhead = EXCLUDED.write_overhead,
                benefit_ms_per_s = EXCLUDED.benefit_ms_per_s, queries = EXCLUDED.queries,
                create_sql = EXCLUDED.create_sql,
                origin = CASE WHEN EXCLUDED.origin = {w} THEN EXCLUDED.origin ELSE r.origin END
  RETURNING id)
SELECT id FROM saved UNION ALL SELECT id FROM rejected WHERE id IS NOT NULL
"""


def upsert(conn: PgConnection, schema: str, recommendations: Iterable[NewRecommendation]) -> dict[str, int]:
    """Save new advice as pending, or refresh the live row of the same shape; returns fingerprint -> id (a
    shape a person rejected keeps its rejected row, whose id this returns)."""
    statement = sql.SQL(_UPSERT).format(s=sql.Identifier(schema), live=status_in("status", LIVE),
                                        rejected=status_in("status", [S.REJECTED]),
                                        reverted=status_in("status", [S.REVERTED]),
                                        w=sql.Literal(Origin.WORKLOAD))
    ids: dict[str, int] = {}
    with conn.cursor() as cur:
        for rec in recommendations:
            values = {**rec.__dict__, "columns": json.dumps(rec.columns), "include": json.dumps(rec.include),
                      "queries": json.dumps(rec.queries), "origin": str(rec.origin)}
            cur.execute(statement, values)
            ids[rec.fingerprint] = int(cur.fetchone()[0])
    return ids


def supersede_unsupported(conn: PgConnection, schema: str, supported: Iterable[str]) -> int:
    """Workload advice nobody decided on yet (pending, or interrupted without approval) whose shape is not among
    `supported` fingerprints becomes superseded; returns how many. Offline advice is left alone."""
    sources = (S.PENDING, S.INTERRUPTED)
    for source in sources:
        check_transition(source, S.SUPERSEDED)
    statement = sql.SQL(
        "UPDATE {}.recommendations SET status = {}, updated_at = now(), reason = 'no longer supported by the"
        " workload' WHERE origin = {} AND ({} OR ({} AND decided_at IS NULL)) AND NOT (fingerprint = ANY(%s))").format(
        sql.Identifier(schema), sql.Literal(S.SUPERSEDED),
        sql.Literal(Origin.WORKLOAD), status_in("status", [S.PENDING]), status_in("status", [S.INTERRUPTED]))
    with conn.cursor() as cur:
        cur.execute(statement, (list(supported),))
        return int(cur.rowcount)


# ---- moving one row -----------------------------------------------------------------------------------------

_MOVE = """
UPDATE {s}.recommendations r SET status = {status}, updated_at = now(){assign}
  FROM (SELECT id, status, decided_at, origin, fingerprint FROM {s}.recommendations WHERE id = %(id)s FOR UPDATE) p
 WHERE r.id = p.id AND p.status = ANY(%(sources)s){condition}
RETURNING p.status, r.status
"""


def _move(conn: PgConnection, schema: str, rec_id: int, sources: Iterable[Status], targets: Iterable[Status], *,
          status: sql.Composable | None = None, assign: sql.Composable | None = None,
          condition: sql.Composable | None = None, params: dict[str, Any] | None = None,
          strict: bool = True) -> tuple[Status, Status] | None:
    """Move one row from one of `sources` to one of `targets` (`status`: an expression choosing among them; by
    default the one target) in one statement; returns (the status it left, the one it got), or None when it was
    in none of `sources`. Then, when `strict`, a row whose present status could not reach any target at all is a bug in
    the caller: IllegalTransition (a row already in a target, or moved on legally meanwhile, is left alone)."""
    sources, targets = frozenset(sources), frozenset(targets)
    for source in sources:
        for target in targets:
            check_transition(source, target, rec_id)
    if status is None:
        (only,) = targets
        status = sql.Literal(only)
    statement = sql.SQL(_MOVE).format(s=sql.Identifier(schema), status=status, assign=assign or sql.SQL(""),
                                      condition=condition or sql.SQL(""))
    with conn.cursor() as cur:
        cur.execute(statement, {**(params or {}), "id": rec_id, "sources": [str(s) for s in sources]})
        row = cur.fetchone()
    if row is not None:
        moved = Status(row[0]), Status(row[1])
        check_transition(*moved, rec_id)
        return moved
    current = status_of(conn, schema, rec_id)
    if current is None:
        raise IndexdError(f"no recommendation #{rec_id} in {schema}.recommendations")
    if strict and current not in targets and not targets & TRANSITIONS[current]:
        raise IllegalTransition(rec_id, current, min(targets))
    return None


def claim(conn: PgConnection, schema: str, rec_id: int, *, unapproved: bool) -> Status | None:
    """Take a queued recommendation for a build (-> building); the status it left, or None when it is not
    buildable now (another process claimed it first, a person rejected it meanwhile, or it waits for an approval
    that `unapproved` (mode auto) does not stand in for)."""
    condition = sql.SQL(" AND ({} OR (%(unapproved)s AND {}))").format(approved_sql("p."), auto_sql(schema, "p."))
    moved = _move(conn, schema, rec_id, QUEUED, [S.BUILDING], condition=condition,
                  params={"unapproved": unapproved}, strict=False)
    return None if moved is None else moved[0]


def release(conn: PgConnection, schema: str, rec_id: int, back_to: Status, reason: str) -> None:
    """Give a claim back unchanged (building -> the status it was claimed from): the build did not happen for a
    reason that says nothing about the index (a lock timeout, a pause or lost leadership between partitions)."""
    if back_to not in QUEUED:
        raise IllegalTransition(rec_id, S.BUILDING, back_to)
    _move(conn, schema, rec_id, [S.BUILDING], [back_to], assign=sql.SQL(", reason = %(reason)s"),
          params={"reason": reason})


def mark_built(conn: PgConnection, schema: str, rec_id: int) -> None:
    """building -> built: the index exists and is valid."""
    _move(conn, schema, rec_id, [S.BUILDING], [S.BUILT])


def mark_failed(conn: PgConnection, schema: str, rec_id: int, reason: str) -> None:
    """building -> failed: the index itself failed; it stays failed, with its reason, until a person acts."""
    _move(conn, schema, rec_id, [S.BUILDING], [S.FAILED], assign=sql.SQL(", reason = %(reason)s"),
          params={"reason": reason})


def mark_interrupted(conn: PgConnection, schema: str, rec_id: int, reason: str, *, max_attempts: int) -> Status:
    """building -> interrupted, one more attempt counted: the run was interrupted, the index may well build
    next time. The attempt that reaches `max_attempts` makes it failed instead, with a reason saying so.
    Returns the status the row has now."""
    reached = sql.SQL("r.attempts + 1 >= %(max)s")
    status = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(reached, sql.Literal(S.FAILED),
                                                                 sql.Literal(S.INTERRUPTED))
    assign = sql.SQL(", attempts = r.attempts + 1, reason = CASE WHEN {} THEN 'interrupted ' || r.attempts + 1"
                     " || ' time(s), the limit of indexing.build_attempts: ' || %(reason)s ELSE %(reason)s END"
                     ).format(reached)
    moved = _move(conn, schema, rec_id, [S.BUILDING], [S.INTERRUPTED, S.FAILED], status=status, assign=assign,
                  params={"reason": reason, "max": max(1, max_attempts)})
    if moved is not None:
        return moved[1]
    current = status_of(conn, schema, rec_id)
    assert current is not None  # _move raised otherwise
    return current


def mark_superseded(conn: PgConnection, schema: str, rec_id: int, reason: str) -> Status | None:
    """queued (pending, approved or interrupted) -> superseded: made redundant before it was built (an existing
    index serves everything it would). Returns the status it left, or None when it was not queued any more
    (another process claimed it, a person rejected it)."""
    moved = _move(conn, schema, rec_id, QUEUED, [S.SUPERSEDED], assign=sql.SQL(", reason = %(reason)s"),
                  params={"reason": reason[:REASON_CHARS]}, strict=False)
    return None if moved is None else moved[0]


REASON_CHARS = 1000  # verification's reasons can be long; the row keeps their start, the verdict all of them


def mark_kept(conn: PgConnection, schema: str, rec_id: int, reason: str) -> None:
    """built -> kept: verification found the index worth keeping."""
    _move(conn, schema, rec_id, [S.BUILT], [S.KEPT], assign=sql.SQL(", reason = %(reason)s"),
          params={"reason": reason[:REASON_CHARS]})


def mark_reverted(conn: PgConnection, schema: str, rec_id: int, reason: str) -> None:
    """built -> reverted: verification judged the index harmful and it is gone."""
    _move(conn, schema, rec_id, [S.BUILT], [S.REVERTED], assign=sql.SQL(", reason = %(reason)s"),
          params={"reason": reason[:REASON_CHARS]})


def note_built_reason(conn: PgConnection, schema: str, rec_id: int, reason: str) -> None:
    """Record why a built recommendation stays built (a verdict that could not be acted on); no status change."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {}.recommendations SET reason = %s, updated_at = now() WHERE id = %s AND {}")
                    .format(sql.Identifier(schema), status_in("status", [S.BUILT])), (reason[:REASON_CHARS], rec_id))


def revert_index(conn: PgConnection, schema: str, index_schema: str, index_name: str, reason: str) -> int:
    """Every built or kept recommendation of this index -> reverted (the index was dropped as unused);
    returns how many rows moved."""
    sources = (S.BUILT, S.KEPT)
    for source in sources:
        check_transition(source, S.REVERTED)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {}.recommendations SET status = {}, reason = %s, updated_at = now()"
                            " WHERE table_schema = %s AND index_name = %s AND {}").format(
            sql.Identifier(schema), sql.Literal(S.REVERTED), status_in("status", sources)),
            (reason[:REASON_CHARS], index_schema, index_name))
        return int(cur.rowcount)


# ---- a person's decision ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decided:
    """What a decision found and did: `previous` None means there is no such recommendation, `row` None that
    the decision is not allowed from `previous` (see `decidable_from`)."""

    previous: Status | None
    row: StoredRecommendation | None


def decide(conn: PgConnection, schema: str, rec_id: int, decision: Status, *, actor: str,
           reason: str | None) -> Decided:
    """Approve or reject a recommendation, in the caller's transaction (the row stays locked until it ends, so
    the caller can audit the decision beside it). Approving also starts its attempts afresh: a person has
    looked at why it failed. A unique violation (another live row for the same index) is the caller's to
    report."""
    if decision not in DECISIONS:
        raise ValueError(f"a decision is approved or rejected, not {decision}")
    previous = status_of(conn, schema, rec_id, lock=True)
    if previous is None or previous not in decidable_from(decision):
        return Decided(previous, None)
    fresh = ", attempts = 0" if decision == S.APPROVED else ""
    _move(conn, schema, rec_id, [previous], [decision],
          assign=sql.SQL(", decided_by = %(actor)s, decided_at = now(), reason = %(reason)s" + fresh),
          params={"actor": actor, "reason": reason})
    (row,) = load_recommendations(conn, schema, ids=(rec_id,))
    return Decided(previous, row)

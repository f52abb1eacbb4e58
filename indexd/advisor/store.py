"""Advice into the state schema: the advisor's recommendations converted to plain rows for
`state.recommendations` (saved as pending, one live row per index shape; see there)."""

from __future__ import annotations

import logging
from typing import Any

from indexd.advisor.model import Recommendation
from indexd.db.pool import Database
from indexd.state import recommendations as stored
from indexd.state.statuses import Origin

log = logging.getLogger(__name__)


def query_effects(rec: Recommendation) -> list[dict[str, Any]]:
    """The statements a recommendation helps, as stored and printed; with their queryid when it is known."""
    effects = []
    for q in rec.queries:
        effect: dict[str, Any] = {"query": q.query, "calls": q.calls, "cost_before": q.cost_before,
                                  "cost_after": q.cost_after}
        if q.queryid is not None:
            effect["queryid"] = q.queryid
        effects.append(effect)
    return effects


def to_row(rec: Recommendation, create_sql: str, origin: Origin) -> stored.NewRecommendation:
    cand = rec.candidate
    return stored.NewRecommendation(
        fingerprint=cand.fingerprint(), table_schema=cand.schema, table_name=cand.table,
        columns=[k.label() for k in cand.keys], method=cand.method, where_clause=cand.where,
        include=list(cand.include), index_name=cand.name(), create_sql=create_sql,
        estimated_size_bytes=rec.estimated_size_bytes, improvement_pct=rec.improvement_pct,
        write_overhead=rec.write_overhead, benefit_ms_per_s=rec.benefit_ms_per_s, queries=query_effects(rec),
        origin=origin)


def save_recommendations(db: Database, recommendations: tuple[Recommendation, ...] | list[Recommendation],
                         create_sql: dict[str, str], *, supersede_missing: bool = False,
                         origin: Origin = Origin.WORKLOAD) -> dict[str, int]:
    """Save (or refresh) these recommendations; returns fingerprint -> recommendation id.

    With supersede_missing, undecided workload advice not among these becomes superseded (use it only when the
    advice covered the whole workload). Advice from a query file is saved with origin `queries`: offline advice,
    never built until a person approves it. The caller has created the state schema (`state.migrations`).
    """
    rows = [to_row(rec, create_sql[rec.candidate.fingerprint()], origin) for rec in recommendations]
    with db.connection() as conn:
        ids = stored.upsert(conn, db.settings.state_schema, rows)
        if supersede_missing:
            gone = stored.supersede_unsupported(conn, db.settings.state_schema, ids)
            if gone:
                log.info("%s: %d undecided recommendation(s) superseded", db.name, gone)
    log.info("%s: saved %d recommendation(s)", db.name, len(ids))
    return ids

"""Recommendations in the state schema: saved as 'pending', one live row per index shape (fingerprint).

A live recommendation (pending, approved, building, built, kept) with the same fingerprint is updated in place
with the newest estimates; its status and decision are left alone. A pending recommendation the newest full
workload no longer supports becomes 'superseded'.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from psycopg2 import sql

from indexd.advisor.model import Recommendation
from indexd.db.pool import Database
from indexd.state.migrations import migrate

log = logging.getLogger(__name__)


_UPSERT = """
INSERT INTO {t} (fingerprint, table_schema, table_name, columns, method, where_clause, include, index_name,
                 create_sql, estimated_size_bytes, improvement_pct, write_overhead, queries)
VALUES (%(fingerprint)s, %(schema)s, %(table)s, %(columns)s, %(method)s, %(where)s, %(include)s, %(index_name)s,
        %(create_sql)s, %(size)s, %(improvement)s, %(write)s, %(queries)s)
ON CONFLICT (fingerprint) WHERE status IN ('pending', 'approved', 'building', 'built', 'kept')
DO UPDATE SET updated_at = now(), estimated_size_bytes = EXCLUDED.estimated_size_bytes,
              improvement_pct = EXCLUDED.improvement_pct, write_overhead = EXCLUDED.write_overhead,
              queries = EXCLUDED.queries, create_sql = EXCLUDED.create_sql
RETURNING id
"""


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


def save_recommendations(db: Database, recommendations: tuple[Recommendation, ...] | list[Recommendation],
                         create_sql: dict[str, str], *, supersede_missing: bool = False) -> dict[str, int]:
    """Save (or refresh) these recommendations; returns fingerprint -> recommendation id.

    With supersede_missing, pending recommendations not among these become 'superseded' (use it only when
    the advice covered the whole workload).
    """
    migrate(db)
    table = sql.SQL("{}.recommendations").format(sql.Identifier(db.settings.state_schema))
    ids: dict[str, int] = {}
    with db.connection() as conn, conn.cursor() as cur:
        for rec in recommendations:
            cand = rec.candidate
            fp = cand.fingerprint()
            cur.execute(sql.SQL(_UPSERT).format(t=table), {
                "fingerprint": fp, "schema": cand.schema, "table": cand.table,
                "columns": json.dumps([k.label() for k in cand.keys]), "method": cand.method, "where": cand.where,
                "include": json.dumps(list(cand.include)), "index_name": cand.name(), "create_sql": create_sql[fp],
                "size": rec.estimated_size_bytes, "improvement": rec.improvement_pct, "write": rec.write_overhead,
                "queries": json.dumps(query_effects(rec)),
            })
            ids[fp] = int(cur.fetchone()[0])
        if supersede_missing:
            cur.execute(
                sql.SQL("UPDATE {} SET status = 'superseded', updated_at = now(), "
                        "reason = 'no longer supported by the workload' "
                        "WHERE status = 'pending' AND NOT (fingerprint = ANY(%s))").format(table),
                (list(ids),),
            )
            if cur.rowcount:
                log.info("%s: %d pending recommendation(s) superseded", db.name, cur.rowcount)
    log.info("%s: saved %d recommendation(s)", db.name, len(ids))
    return ids

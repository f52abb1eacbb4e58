"""The second redundancy check, right before a build: does a valid index that makes the recommended one redundant
exist now? Someone may have built an equivalent index between the advice and the build (or indexd itself built
a wider one). Then the build is skipped and the recommendation becomes `superseded`, with a reason naming that
index, written to the audit log.

The rule is the advisor's (`indexd.statements.indexdef.covers`), applied to the live catalog: same method, the
recommended keys a prefix of the existing index's keys, the same predicate (an index holding more rows reads a
partial index's rows among all the others), every INCLUDE column stored in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from indexd.db.pool import Database, PgConnection
from indexd.lifecycle.ddl import BuildResult
from indexd.state import audit, recommendations
from indexd.state.recommendation_rows import StoredRecommendation
from indexd.state.statuses import Status
from indexd.statements.indexdef import NotAnIndex, covers, parse_index

log = logging.getLogger(__name__)

# Valid indexes of the table, a partitioned table's own (partitioned) indexes included.
_LIVE_INDEXES = """
SELECT n.nspname, c.relname, pg_get_indexdef(c.oid)
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE tn.nspname = %s AND t.relname = %s AND i.indisvalid AND i.indisready AND i.indislive
 ORDER BY c.relname
"""


@dataclass(frozen=True)
class Covering:
    """An existing index that makes a recommendation redundant."""

    schema: str
    name: str
    definition: str

    def reason(self) -> str:
        return f"made redundant by the existing index {self.schema}.{self.name}: {self.definition}"


def covering_index(conn: PgConnection, rec: StoredRecommendation) -> Covering | None:
    """A valid index on the recommendation's table, other than the recommended one itself, that serves everything
    it would; None when there is none (or the recommendation's statement cannot be read)."""
    try:
        wanted = parse_index(rec.create_sql)
    except NotAnIndex:
        return None  # the build refuses such a statement with its own error
    with conn.cursor() as cur:
        cur.execute(_LIVE_INDEXES, (rec.table_schema, rec.table_name))
        rows = cur.fetchall()
    for schema, name, definition in rows:
        if name == rec.index_name:
            continue  # the index of this very recommendation: the build settles that case
        try:
            shape = parse_index(definition)
        except NotAnIndex:
            continue
        if covers(shape, wanted):
            return Covering(schema, name, definition)
    return None


def supersede(db: Database, rec: StoredRecommendation, covering: Covering, *, job_id: str | None) -> BuildResult:
    """Skip the build: the recommendation becomes superseded (from pending, approved or interrupted), audited
    in the same transaction. A recommendation another process took meanwhile is left alone."""
    schema, reason = db.settings.state_schema, covering.reason()
    with db.connection() as conn:
        moved = recommendations.mark_superseded(conn, schema, rec.id, reason)
        if moved is not None:
            audit.record_event(conn, schema, action="supersede", target=f"{rec.table_schema}.{rec.index_name}",
                               outcome="skipped", reason=reason, before={"status": str(moved)},
                               after={"status": str(Status.SUPERSEDED),
                                      "existing_index": f"{covering.schema}.{covering.name}"},
                               recommendation_id=rec.id, job_id=job_id)
    if moved is None:
        return BuildResult(rec.table_schema, rec.index_name, "skipped", "another build or decision took it first",
                           recommendation_id=rec.id)
    log.info("not building #%s %s: %s", rec.id, rec.index_name, reason)
    return BuildResult(rec.table_schema, rec.index_name, "skipped", reason, recommendation_id=rec.id)

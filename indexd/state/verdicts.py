"""The table `index_verdicts`: what verification decided about each index indexd built, with its evidence."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from psycopg2 import sql

from indexd.db.pool import PgConnection


def insert_verdict(conn: PgConnection, schema: str, *, decided_at: datetime, recommendation_id: int,
                   index_schema: str, index_name: str, verdict: str, evidence: dict[str, Any]) -> None:
    """One verdict (kept, reverted or inconclusive) on one index; the evidence is stored as JSON."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(
            "INSERT INTO {}.index_verdicts (decided_at, recommendation_id, index_schema, index_name, verdict, evidence)"
            " VALUES (%s, %s, %s, %s, %s, %s)").format(sql.Identifier(schema)),
            (decided_at, recommendation_id, index_schema, index_name, verdict,
             json.dumps(evidence, default=str, sort_keys=True)))

"""The audit log (state table `mutation_log`): every mutation is written before (intent) and after (outcome).

Each write is committed at once, so the intent of a build survives a crash in the middle of it: an intent
without an outcome means "started, never finished" and is what start-up cleanup looks for. Callers should
write on a pooled connection of its own (or an autocommit one), never on the connection that runs the DDL.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql as _sql  # `sql` is a parameter name of record_intent

from indexd.db.pool import PgConnection

log = logging.getLogger(__name__)

ACTIONS = ("create_index", "drop_index", "revert_index", "pause", "resume", "approve", "reject", "restore",
           "supersede")
OUTCOMES = ("succeeded", "failed", "refused", "skipped")


def current_actor() -> str:
    """Who is acting, as the audit log records it: "user@host pid N"."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _commit(conn: PgConnection) -> None:
    if not conn.autocommit:
        conn.commit()


def record_intent(
    conn: PgConnection,
    schema: str,
    *,
    action: str,
    target: str,
    sql: str | None = None,
    reason: str | None = None,
    before: Any = None,
    recommendation_id: int | None = None,
    job_id: str | None = None,
    actor: str | None = None,
) -> int:
    """Write (and commit) the intent of a mutation before it runs; returns its id for the outcome.
    `actor` defaults to this process ("user@host pid N")."""
    statement = _sql.SQL(
        "INSERT INTO {}.mutation_log (actor, action, phase, target, sql, reason, before, outcome,"
        " recommendation_id, job_id) VALUES (%s, %s, 'intent', %s, %s, %s, %s, 'started', %s, %s) RETURNING id"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (actor or current_actor(), action, target, sql, reason, _json(before),
                                recommendation_id, job_id))
        row = cur.fetchone()
    _commit(conn)
    intent_id = int(row[0])
    log.info("audit: intent #%s %s %s", intent_id, action, target)
    return intent_id


def record_outcome(
    conn: PgConnection,
    schema: str,
    intent_id: int,
    *,
    outcome: str,
    after: Any = None,
    duration_s: float | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> None:
    """Write (and commit) the outcome of the mutation whose intent is `intent_id`."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    statement = _sql.SQL(
        "INSERT INTO {0}.mutation_log (actor, action, phase, intent_id, target, sql, outcome, after, duration_s,"
        " reason, recommendation_id, job_id)"
        " SELECT %s, action, 'outcome', id, target, sql, %s, %s, %s, %s, recommendation_id, job_id"
        " FROM {0}.mutation_log WHERE id = %s AND phase = 'intent'"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (actor or current_actor(), outcome, _json(after), duration_s, reason, intent_id))
        found = cur.rowcount
    _commit(conn)
    if not found:
        raise ValueError(f"no audit intent #{intent_id} in {schema}.mutation_log")
    log.info("audit: outcome of #%s: %s%s", intent_id, outcome, f" ({reason})" if reason else "")


def record_event(
    conn: PgConnection,
    schema: str,
    *,
    action: str,
    target: str,
    outcome: str = "succeeded",
    reason: str | None = None,
    before: Any = None,
    after: Any = None,
    recommendation_id: int | None = None,
    job_id: str | None = None,
    actor: str | None = None,
) -> int:
    """An instantaneous change (pause, approve ...): its intent and outcome written together."""
    intent_id = record_intent(conn, schema, action=action, target=target, reason=reason, before=before,
                              recommendation_id=recommendation_id, job_id=job_id, actor=actor)
    record_outcome(conn, schema, intent_id, outcome=outcome, after=after, duration_s=0.0, reason=reason,
                   actor=actor)
    return intent_id


@dataclass(frozen=True)
class Mutation:
    """One intent with its outcome (if any), as `status` shows recent changes."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str | None  # None: started and never finished (a crash), 'started' never appears here
    reason: str | None
    duration_s: float | None
    recommendation_id: int | None
    sql: str | None


def recent_mutations(conn: PgConnection, schema: str, limit: int = 20) -> list[Mutation]:
    """The latest intents with their outcomes, newest first."""
    statement = _sql.SQL(
        "SELECT i.id, i.at, i.actor, i.action, i.target, o.outcome, coalesce(o.reason, i.reason),"
        " o.duration_s, i.recommendation_id, i.sql"
        " FROM {0}.mutation_log i LEFT JOIN {0}.mutation_log o ON o.intent_id = i.id AND o.phase = 'outcome'"
        " WHERE i.phase = 'intent' ORDER BY i.at DESC, i.id DESC LIMIT %s"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (limit,))
        return [Mutation(*row) for row in cur.fetchall()]



def build_starts_since(conn: PgConnection, schema: str, since: datetime) -> list[datetime]:
    """When each index build started after `since` (every create_index intent: an attempt is an attempt,
    whatever its outcome). Counted from the table, so a restart does not reset the rate limit."""
    statement = _sql.SQL(
        "SELECT at FROM {}.mutation_log WHERE action = 'create_index' AND phase = 'intent' AND at > %s"
        " ORDER BY at"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (since,))
        return [row[0] for row in cur.fetchall()]


def last_build_end(conn: PgConnection, schema: str) -> datetime | None:
    """When the last index build ended (its create_index outcome, whatever it was): pacing counts from there."""
    statement = _sql.SQL(
        "SELECT max(at) FROM {}.mutation_log WHERE action = 'create_index' AND phase = 'outcome'"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement)
        row = cur.fetchone()
    return None if row is None else row[0]


def unfinished_intents(conn: PgConnection, schema: str, actions: tuple[str, ...],
                       older_than_s: float = 0) -> list[tuple[int, dict[str, Any]]]:
    """Intents of these actions, older than `older_than_s`, that never got an outcome: (id, before)."""
    statement = _sql.SQL(
        "SELECT i.id, i.before FROM {0}.mutation_log i"
        " WHERE i.phase = 'intent' AND i.action = ANY(%s) AND i.at < now() - make_interval(secs => %s)"
        " AND NOT EXISTS (SELECT 1 FROM {0}.mutation_log o WHERE o.intent_id = i.id AND o.phase = 'outcome')"
        " ORDER BY i.id"
    ).format(_sql.Identifier(schema))
    with conn.cursor() as cur:
        cur.execute(statement, (list(actions), older_than_s))
        return [(int(r[0]), dict(r[1] or {})) for r in cur.fetchall()]

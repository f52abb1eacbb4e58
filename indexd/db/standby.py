"""Primary or hot standby? A standby (pg_is_in_recovery()) is read-only: indexd reads and advises there (HypoPG's
hypothetical indexes live in the backend's memory, so what-if costing works), backs it up, and changes nothing:
no migration, no stored advice, no index built, reverted or dropped."""

from __future__ import annotations

from indexd.db.pool import Database, PgConnection
from indexd.errors import GuardRefusal

STANDBY = "standby: read-only"
WHY = ("this server is a hot standby (pg_is_in_recovery() is true); indexes are built and dropped on the primary "
       "and reach the standby through replication")


def in_recovery(conn: PgConnection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery()")
        return bool(cur.fetchone()[0])


def is_standby(db: Database) -> bool:
    """Whether the database's server is a standby now (asked each time: a standby may be promoted)."""
    with db.connection() as conn:
        return in_recovery(conn)


def refuse_on_standby(db: Database, action: str) -> None:
    """GuardRefusal ("standby: read-only") before `action` mutates anything, when the server is a standby."""
    if is_standby(db):
        raise GuardRefusal(f"{action} on {db.name}: {STANDBY}: {WHY}")

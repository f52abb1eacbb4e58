"""The state schema itself: numbered migrations from `sql/`, applied once, in order, under an advisory lock."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from psycopg2 import sql

from indexd.db.pool import Database, PgConnection

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# A fixed advisory lock key (the bytes of "indexdmg"), so concurrent `migrate` runs apply each step once.
MIGRATION_LOCK_KEY = 0x696E646578646D67


def sql_dir() -> Path:
    """The migrations folder: $INDEXD_SQL_DIR, else the package's `sql/` (in a checkout, a link to the
    top-level sql/ folder; in an installed wheel, a copy of it)."""
    env = os.environ.get("INDEXD_SQL_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(folder: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((folder or sql_dir()).glob("*.sql")):
        m = _MIGRATION.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migrations share a number in {folder or sql_dir()}")
    return found


def _applied(conn: PgConnection, schema: str) -> set[int]:
    with conn.cursor() as cur:
        # Quoted, as the migrations create it: an unquoted IdxState would be looked up as idxstate.
        cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, 'schema_version'))", (schema,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            return set()
        cur.execute(sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema)))
        return {r[0] for r in cur.fetchall()}


def migrate(db: Database, folder: Path | None = None) -> list[int]:
    """Create or upgrade the state schema in one transaction; returns the versions applied now."""
    schema = db.settings.state_schema
    steps = migrations(folder)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
        done = _applied(conn, schema)
        applied = []
        for step in steps:
            if step.version in done:
                continue
            log.info("applying state migration %03d_%s to %s", step.version, step.name, db.name)
            cur.execute(step.path.read_text(encoding="utf-8"))
            cur.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)", (step.version, step.name)
            )
            applied.append(step.version)
    return applied


def current_version(db: Database) -> int | None:
    with db.connection() as conn:
        versions = _applied(conn, db.settings.state_schema)
    return max(versions) if versions else None

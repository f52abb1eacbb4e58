"""The state schema itself: numbered migrations from `sql/`, applied once, in order, under an advisory lock.

Migrations run as the schema's owner (`SET LOCAL ROLE`, when the caller is that role's member or a superuser),
so every table belongs to it whoever ran them: a superuser's `indexd recommend` does not lock the least-privilege
role out. A superuser migrating also gives the schema's owner any table an older run left to someone else; a
caller that can neither use nor fix such tables gets `StateOwnership`, naming the statements that fix it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2.errors
from psycopg2 import sql

from indexd.db.pool import Database, PgConnection
from indexd.errors import first_line
from indexd.state.ownership import (
    Ownership,
    StateOwnership,
    alter_owner,
    explain,
    migration_role,
    problems,
    quote,
    read_ownership,
)

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
    """Create or upgrade the state schema in one transaction, as the schema's owner; returns the versions
    applied now. StateOwnership (with the fix) when the connected role cannot use the schema's tables."""
    schema = db.settings.state_schema
    steps = migrations(folder)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        owners = read_ownership(conn, schema)  # read under the lock: a concurrent first run made it or not
        if not owners.exists:
            # Only when it is missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even then.
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            owners = read_ownership(conn, schema)
        owners = _settle_owners(conn, db.name, owners)
        role = migration_role(owners)
        if role is not None:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
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


def _settle_owners(conn: PgConnection, database: str, owners: Ownership) -> Ownership:
    """Give the schema's owner the tables someone else owns, when this session may (a superuser, or a member of
    both roles); StateOwnership naming the fix when the connected role can use neither the schema nor them."""
    movable = [s for s in owners.strangers()
               if s.owner in owners.usable and owners.schema_owner in owners.may_become]
    if movable and owners.schema_owner is not None:
        with conn.cursor() as cur:
            for obj in movable:
                cur.execute(alter_owner(owners.schema, obj, owners.schema_owner))
        log.warning("%s: state table(s) %s belonged to %s; given to the state schema's owner %s", database,
                    ", ".join(s.name for s in movable), ", ".join(sorted({s.owner for s in movable})),
                    quote(owners.schema_owner))
        owners = read_ownership(conn, owners.schema)
    if problems(owners):
        raise StateOwnership(explain(owners, database))
    return owners


def current_version(db: Database) -> int | None:
    """The newest applied migration (None: no state schema yet). StateOwnership, naming the fix, when the state
    tables belong to a role the connected one cannot act as."""
    try:
        with db.connection() as conn:
            versions = _applied(conn, db.settings.state_schema)
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise ownership_error(db, exc) from exc
    return max(versions) if versions else None


def ownership_error(db: Database, exc: BaseException) -> StateOwnership:
    """What to say when the state schema refused us: the ownership problem and its fix, when that is the cause."""
    with db.connection() as conn:
        owners = read_ownership(conn, db.settings.state_schema)
    if problems(owners):
        return StateOwnership(explain(owners, db.name))
    return StateOwnership(f"database {db.name}: the state schema {db.settings.state_schema!r} refused "
                          f"{owners.role!r}: {first_line(exc)}; re-run sql/roles.sql as a superuser "
                          "(it grants the group role everything indexd needs)")

"""Who owns the state schema and its tables, and whether the role indexd connects as can use them.

The rule: every object of the state schema belongs to the schema's owner (sql/roles.sql makes that the group
role; without it, whoever created the schema). Migrations run as that owner (`SET LOCAL ROLE`, see
migrations.py), so a superuser running `indexd recommend` first creates tables the least-privilege role can use.
A schema whose tables belong to someone else (made by an older indexd, or by hand) is a clear error naming the
statements that fix it, never "permission denied for table schema_version".

`read_ownership` reads the catalog; `problems` and `fix_statements` decide from its readings alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from indexd.db.pool import PgConnection
from indexd.errors import IndexdError

# relkind -> the ALTER ... OWNER TO form for it
_ALTER = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
ROLES_SQL_HINT = "or re-run sql/roles.sql as a superuser (it gives the schema and its tables to the group role)"


class StateOwnership(IndexdError):
    """The state schema or its tables belong to a role indexd's role cannot act as; the message says the fix."""


@dataclass(frozen=True)
class StateObject:
    name: str
    kind: str  # pg_class.relkind
    owner: str


@dataclass(frozen=True)
class Ownership:
    """Readings about the state schema, as the connected role sees it."""

    schema: str
    schema_owner: str | None  # None: the schema does not exist
    role: str  # current_user (sql/roles.sql sessions start as the group role)
    superuser: bool
    usable: frozenset[str]  # roles among the owners whose privileges `role` has (itself included)
    may_become: frozenset[str]  # roles among the owners `role` may SET ROLE to (itself included)
    objects: tuple[StateObject, ...] = ()  # relations of the schema not owned by their table (not sequences of
    # a serial column, not indexes: those follow their table)

    @property
    def exists(self) -> bool:
        return self.schema_owner is not None

    def strangers(self) -> tuple[StateObject, ...]:
        """Objects that do not belong to the schema's owner."""
        return tuple(o for o in self.objects if o.owner != self.schema_owner)


def problems(o: Ownership) -> list[str]:
    """Why `o.role` cannot use the state schema (empty: it can, or the schema does not exist yet)."""
    if not o.exists:
        return []
    found = []
    if o.schema_owner not in o.usable:
        found.append(f"the state schema {o.schema!r} belongs to {o.schema_owner!r}, and {o.role!r} is neither that "
                     "role nor a member of it")
    locked = sorted({s.owner for s in o.strangers() if s.owner not in o.usable})
    for owner in locked:
        names = [s.name for s in o.strangers() if s.owner == owner]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        found.append(f"{len(names)} state table(s) of {o.schema!r} belong to {owner!r}, not to the schema's owner "
                     f"{o.schema_owner!r}, and {o.role!r} cannot use them ({shown})")
    return found


def fix_statements(o: Ownership, owner: str | None = None) -> list[str]:
    """The statements (for a superuser) that give the schema and every object in it to `owner` (default: the
    schema's owner when `o.role` can act as it, else `o.role`)."""
    target = owner or (o.schema_owner if o.schema_owner in o.usable else o.role)
    schema = quote(o.schema)
    out = [] if o.schema_owner == target else [f"ALTER SCHEMA {schema} OWNER TO {quote(target)};"]
    out += [f"ALTER {_ALTER.get(s.kind, 'TABLE')} {schema}.{quote(s.name)} OWNER TO {quote(target)};"
            for s in o.objects if s.owner != target]
    return out


def explain(o: Ownership, database: str) -> str:
    """One message: what is wrong and the statements that fix it."""
    fixes = " ".join(fix_statements(o))
    return (f"database {database}: " + "; ".join(problems(o)) + f". Fix, as a superuser: {fixes} ({ROLES_SQL_HINT})")


def migration_role(o: Ownership) -> str | None:
    """The role migrations must run as so what they create belongs to the schema's owner: None when that is
    `o.role` already (or the schema is new and `o.role` will own it)."""
    if not o.exists or o.schema_owner == o.role:
        return None
    return o.schema_owner if o.schema_owner in o.may_become else None


def alter_owner(schema: str, obj: StateObject, owner: str) -> sql.Composed:
    """ALTER TABLE/SEQUENCE/VIEW schema.name OWNER TO owner, with the form the object's kind needs."""
    return sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
        sql.SQL(_ALTER.get(obj.kind, "TABLE")), sql.Identifier(schema), sql.Identifier(obj.name), sql.Identifier(owner))


def quote(name: str) -> str:
    """An identifier as it must be written in a statement shown to the operator."""
    if name and (name[0].isalpha() or name[0] == "_") and name.replace("_", "a").isalnum() and name.islower():
        return name
    return '"' + name.replace('"', '""') + '"'


_OWNERSHIP = """
SELECT n.nspname IS NOT NULL, pg_get_userbyid(n.nspowner), current_user,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = %s
"""
_OBJECTS = """
SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
 ORDER BY c.relname
"""


def read_ownership(conn: PgConnection, schema: str) -> Ownership:
    """The ownership readings of the state schema `schema` for the connection's current role."""
    with conn.cursor() as cur:
        cur.execute(_OWNERSHIP, (schema,))
        exists, schema_owner, role, superuser = cur.fetchone()
        objects: tuple[StateObject, ...] = ()
        if exists:
            cur.execute(_OBJECTS, (schema,))
            objects = tuple(StateObject(r[0], r[1], r[2]) for r in cur.fetchall())
        owners = sorted({o.owner for o in objects} | ({schema_owner} if exists else set()) | {role})
        cur.execute(sql.SQL("SELECT r, pg_has_role(current_user, r, 'USAGE'), pg_has_role(current_user, r, 'MEMBER')"
                            " FROM unnest(%s::text[]) r"), (owners,))
        rights = cur.fetchall()
    return Ownership(schema, schema_owner if exists else None, role, bool(superuser),
                     frozenset(r for r, usage, _ in rights if usage), frozenset(r for r, _, member in rights if member),
                     objects)

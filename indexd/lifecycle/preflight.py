"""Is this database ready for indexd? One pure decision over the readings `preflight_readings` takes.

Each check is `ok` or `missing`, with what it is for and the exact statement or shell line that fixes it. A
required piece missing makes `indexd check` fail; an optional one is reported and never fails anything. What
is required depends on the configuration: creating indexes and cancelling backends matter when indexd builds
or drops indexes (mode approve/auto, or drop_unused), CREATEDB when it test-restores backups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from indexd.state.ownership import Ownership, fix_statements, problems, quote

MIN_SERVER_VERSION = 150000
STATS = "pg_stat_statements"
HYPOPG = "hypopg"
QUALSTATS = "pg_qualstats"
TRGM = "pg_trgm"
QUALSTATS_FULL = 0.9  # share of pg_qualstats.max in use from which a table of pg_qualstats counts as full
# Every HypoPG object the advisor uses (advisor/whatif.py; a unit test keeps the two in step). The view
# hypopg_list_indexes calls hypopg() with the reader's own rights, so both are needed.
HYPOPG_FUNCTIONS = ("hypopg", "hypopg_create_index", "hypopg_drop_index", "hypopg_reset")
HYPOPG_VIEWS = ("hypopg_list_indexes",)
ROLES_SQL = "psql -d DB -v app_owner=OWNER -f sql/roles.sql (as a superuser)"
OPTIONAL_EXTENSIONS = {
    QUALSTATS: "the real constants behind pg_stat_statements' $1: the advisor costs partial indexes on a rare "
               "value, skewed values and keys hidden in index expressions (meta ->> $1) with them; without it, "
               "advice costs the generic plan and says which statements pg_qualstats would sharpen",
    TRGM: "lets the advisor propose GIN trigram indexes for LIKE/ILIKE '%text%' and similarity searches; without "
          "it, advice names those statements and the CREATE EXTENSION that would serve them",
}


@dataclass(frozen=True)
class HypoObject:
    kind: str  # function | view
    name: str  # the bare name (hypopg_create_index)
    signature: str  # schema-qualified, as a GRANT takes it: public.hypopg_create_index(text)
    allowed: bool


@dataclass(frozen=True)
class QualstatsRoom:
    """What pg_qualstats can keep: the constants the advisor reads come from its shared tables."""

    max_entries: int  # pg_qualstats.max: the size of its predicate table and of its example-statement table
    predicates: int  # entries in pg_qualstats() now
    examples: int  # entries in pg_qualstats_example_queries() now
    track_constants: bool  # pg_qualstats.track_constants: off keeps no constant at all
    sample_rate: float  # the share of statements it samples (pg_qualstats.sample_rate; -1: 1 / max_connections)


@dataclass(frozen=True)
class Readings:
    database: str  # the real database name
    server_version: str
    server_version_num: int
    preload: tuple[str, ...] | None  # shared_preload_libraries; None: the role may not see it
    stats_loaded: bool | None  # pg_stat_statements answers (None: unknown, e.g. not created)
    available: frozenset[str]  # extensions installed on the server host
    created: frozenset[str]  # extensions created in this database
    standby: bool  # pg_is_in_recovery()
    login: str  # session_user: the role in the DSN
    superuser: bool
    read_all_stats: bool  # member of pg_read_all_stats (or superuser)
    signal_backend: bool  # member of pg_signal_backend (or superuser)
    createdb: bool  # CREATEDB (or superuser)
    create_on_database: bool  # may CREATE SCHEMA in this database
    hypopg: tuple[HypoObject, ...]  # the objects HYPOPG_FUNCTIONS / HYPOPG_VIEWS found, with the role's right
    tables: int  # user tables advice may target (partitions counted through their parent)
    indexable: int  # of those, tables the role may CREATE INDEX on (owner, or member of the owner)
    table_owners: tuple[str, ...]  # owners of the others
    state: Ownership
    superuser_owners: frozenset[str] = frozenset()  # those of table_owners that are superusers
    qualstats: QualstatsRoom | None = None  # None: pg_qualstats is not created, not loaded or not readable

    @property
    def role(self) -> str:
        return self.state.role


@dataclass(frozen=True)
class Needs:
    """What the configuration asks of this database."""

    builds: bool  # indexing.mode approve/auto, or drop_unused enabled
    test_restores: bool  # backups enabled: test restores create a scratch database on this server
    restore_target: str | None = None  # a server configured for test restores instead (password-free)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    required: bool
    detail: str
    fix: tuple[str, ...] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        return "ok" if self.ok else "missing"

    @property
    def failing(self) -> bool:
        return self.required and not self.ok


def decide(r: Readings, needs: Needs) -> list[Check]:
    """Every check, in the order an operator fixes them: server, extensions, role, state schema."""
    checks = [_version(r), _role_kind(r), _connected_as(r), *_preload(r), *_extensions(r), _stats_privilege(r)]
    if r.qualstats is not None:
        checks.append(_qualstats_room(r.qualstats))
    hypo = _hypopg_privileges(r)
    if hypo is not None:
        checks.append(hypo)
    checks += [_tables(r, needs), _scratch_databases(r, needs), _signal(r, needs), _state(r)]
    return checks


def ready(checks: list[Check]) -> bool:
    return not any(c.failing for c in checks)


def _superuser_fix(r: Readings, statement: str) -> str:
    return f"{statement}  -- as a superuser, in database {quote(r.database)}"


def _version(r: Readings) -> Check:
    ok = r.server_version_num >= MIN_SERVER_VERSION
    return Check("server version", ok, True, f"PostgreSQL {r.server_version} ({'' if ok else 'not '}supported: 15 "
                 "or later)", () if ok else ("upgrade the server to PostgreSQL 15 or later",))


def _role_kind(r: Readings) -> Check:
    detail = ("standby (pg_is_in_recovery): read-only, advice is printed and not stored, nothing is built or "
              "dropped" if r.standby else "primary")
    return Check("server role", True, True, detail)


def _connected_as(r: Readings) -> Check:
    acting = "" if r.role == r.login else f", acting as {quote(r.role)} (its sessions start as that role)"
    return Check("connected as", True, True, f"{quote(r.login)}{acting}" + (", a superuser" if r.superuser else ""))


def _preload(r: Readings) -> list[Check]:
    out = [_preloaded(r, STATS, required=True)]
    if QUALSTATS in r.available | r.created:
        out.append(_preloaded(r, QUALSTATS, required=False))
    return out


def _preloaded(r: Readings, lib: str, required: bool) -> Check:
    name = f"shared_preload_libraries has {lib}" + ("" if required else " (optional)")
    if r.preload is None:
        if lib == STATS and r.stats_loaded is not None:
            ok = r.stats_loaded
            return Check(name, ok, required, f"pg_stat_statements {'answers' if ok else 'says it is not loaded'} "
                         f"(the setting itself is hidden from {quote(r.role)})",
                         () if ok else _preload_fix((lib,)))
        return Check(name, False, False, f"cannot tell: the setting is hidden from {quote(r.role)}",
                     (f"GRANT pg_read_all_settings TO {quote(r.role)};  -- or re-run {ROLES_SQL}",))
    ok = lib in r.preload
    shown = ", ".join(r.preload) or "empty"
    return Check(name, ok, required, f"shared_preload_libraries is {shown}",
                 () if ok else _preload_fix((*r.preload, lib)))


def _preload_fix(libraries: tuple[str, ...]) -> tuple[str, ...]:
    listed = ", ".join(f"'{lib}'" for lib in libraries)
    return (f"ALTER SYSTEM SET shared_preload_libraries = {listed};  -- as a superuser",
            "systemctl restart postgresql  # it takes effect when the server starts")


def _package(r: Readings, ext: str) -> str:
    major = r.server_version_num // 10000
    if ext == HYPOPG:
        return f"apt-get install postgresql-{major}-hypopg"
    if ext == QUALSTATS:
        return f"apt-get install postgresql-{major}-pg-qualstats"
    return f"apt-get install postgresql-{major}  # {ext} ships with the server's contrib modules"


def _extensions(r: Readings) -> list[Check]:
    out = []
    for ext, required, what in ((STATS, True, "the workload: statements with their calls and time"),
                                (HYPOPG, True, "what-if costs of candidate indexes (hypothetical indexes)"),
                                (QUALSTATS, False, OPTIONAL_EXTENSIONS[QUALSTATS]),
                                (TRGM, False, OPTIONAL_EXTENSIONS[TRGM])):
        ok = ext in r.created
        fix: tuple[str, ...] = ()
        if not ok:
            install = () if ext in r.available else (_package(r, ext),)
            fix = (*install, _superuser_fix(r, f"CREATE EXTENSION {ext};"))
        kind = "" if required else " (optional)"
        out.append(Check(f"extension {ext}{kind}", ok, required, what, fix))
    return out


def _qualstats_room(q: QualstatsRoom) -> Check:
    """pg_qualstats keeps its predicates (one entry per constant) and one example statement per statement, in
    two tables of pg_qualstats.max entries each. The predicate table is full on any busy server by design: it
    evicts its least-used entries, so the constants most calls use, the ones the advisor wants, stay. The
    example table is what a full table costs the advisor: pg_qualstats_reset() keeps it, and a statement with
    no example loses the keys inside its index expressions (`meta ->> $1`). With track_constants off no constant
    is kept at all."""
    detail = (f"{q.predicates} predicates and {q.examples} example statements kept, of pg_qualstats.max "
              f"{q.max_entries} each; samples {q.sample_rate:.1%} of statements")
    if q.predicates >= QUALSTATS_FULL * q.max_entries:
        detail += " (the predicate table is full: it keeps the most used constants and drops the rarest)"
    fix: tuple[str, ...] = ()
    full = q.examples >= QUALSTATS_FULL * q.max_entries
    if full:
        detail += ("; the example table is nearly full: statements that start running now get no example, and "
                   "the keys inside their index expressions stay unknown")
        fix += (f"ALTER SYSTEM SET pg_qualstats.max = {2 * q.max_entries};  -- as a superuser",
                "systemctl restart postgresql  # it takes effect when the server starts")
    if not q.track_constants:
        detail += "; pg_qualstats.track_constants is off: it keeps no constant for the advisor"
        fix += ("ALTER SYSTEM SET pg_qualstats.track_constants = on; SELECT pg_reload_conf();  -- as a superuser",)
    return Check("pg_qualstats keeps the constants (optional)", q.track_constants and not full, False, detail, fix)


def _stats_privilege(r: Readings) -> Check:
    ok = r.superuser or r.read_all_stats
    detail = (f"{quote(r.role)} reads every role's statements" if ok else
              f"{quote(r.role)} sees only its own statements in pg_stat_statements, not the application's")
    return Check("read all of pg_stat_statements", ok, True, detail,
                 () if ok else (f"GRANT pg_read_all_stats TO {quote(r.role)};  -- or re-run {ROLES_SQL}",))


def _hypopg_privileges(r: Readings) -> Check | None:
    if HYPOPG not in r.created:
        return None  # the extension check says what to do first
    wanted = [(k, n) for k, names in (("function", HYPOPG_FUNCTIONS), ("view", HYPOPG_VIEWS)) for n in names]
    found = {(o.kind, o.name): o for o in r.hypopg}
    absent = [n for k, n in wanted if (k, n) not in found]
    denied = [o for o in r.hypopg if not o.allowed]
    fix = tuple(f"GRANT {'EXECUTE ON FUNCTION' if o.kind == 'function' else 'SELECT ON'} {o.signature} TO "
                f"{quote(r.role)};" for o in denied)
    if absent:
        fix += (f"ALTER EXTENSION hypopg UPDATE;  -- this HypoPG lacks {', '.join(absent)}",)
    if denied:
        fix += (f"-- or re-run {ROLES_SQL} (again after every CREATE EXTENSION hypopg)",)
    ok = not denied and not absent
    detail = (f"{quote(r.role)} may use all {len(wanted)} HypoPG objects indexd calls" if ok else
              f"{quote(r.role)} may not use {len(denied) + len(absent)} of {len(wanted)} HypoPG objects indexd "
              f"calls ({', '.join([o.signature for o in denied] + absent)}): the advisor would lose candidates")
    return Check("HypoPG privileges", ok, True, detail, fix)


def _tables(r: Readings, needs: Needs) -> Check:
    ok = r.indexable == r.tables
    why = "indexd builds and drops indexes" if needs.builds else "needed only to apply: mode advise builds nothing"
    detail = f"{quote(r.role)} may create indexes on {r.indexable} of {r.tables} tables; {why}"
    if r.tables == 0:
        detail = "no user tables yet"
    fix = tuple(_owner_fix(owner, r) for owner in r.table_owners)
    return Check("create indexes", ok, needs.builds, detail, () if ok else fix)


def _owner_fix(owner: str, r: Readings) -> str:
    """Membership in the owner of tables indexd cannot index; never in a superuser, whose role a member may SET
    ROLE to: those tables go to the application's owner role instead."""
    if owner in r.superuser_owners:
        return (f"ALTER TABLE ... OWNER TO <the application's owner role>;  -- for the tables (and partitions) "
                f"{quote(owner)} owns: {quote(owner)} is a superuser, never grant it to {quote(r.role)}")
    return (f"GRANT {quote(owner)} TO {quote(r.role)};  -- owner of tables indexd cannot index; or re-run "
            f"sql/roles.sql with -v app_owner={owner}")


def _scratch_databases(r: Readings, needs: Needs) -> Check:
    if needs.restore_target:
        return Check("scratch databases for test restores", True, False,
                     f"test restores go to the configured server {needs.restore_target} (its rights are not "
                     "checked from here)")
    ok = r.superuser or r.createdb
    why = "test restores of backups create a scratch database" if needs.test_restores else \
        "backups are disabled: no test restores"
    fix = (f"ALTER ROLE {quote(r.role)} CREATEDB;  -- or re-run {ROLES_SQL}; or point "
           "backups.verify.restore_dsn at another server",)
    return Check("scratch databases for test restores", ok, needs.test_restores,
                 f"{quote(r.role)} {'may' if ok else 'may not'} create databases ({why})", () if ok else fix)


def _signal(r: Readings, needs: Needs) -> Check:
    ok = r.superuser or r.signal_backend
    detail = (f"{quote(r.role)} {'may' if ok else 'may not'} cancel index builds of other indexd sessions at "
              f"stop{'' if needs.builds else ' (no builds in this configuration)'}")
    fix = (f"GRANT pg_signal_backend TO {quote(r.role)};  -- or re-run {ROLES_SQL}",)
    return Check("cancel backends", ok, needs.builds, detail, () if ok else fix)


def _state(r: Readings) -> Check:
    s = r.state
    if not s.exists:
        ok = r.superuser or r.create_on_database
        if r.standby:
            return Check("state schema", True, True, f"{quote(s.schema)} not created (a standby gets it from its "
                         "primary: run indexd migrate there)")
        fix = () if ok else (f"GRANT CREATE ON DATABASE {quote(r.database)} TO {quote(r.role)};  -- or re-run "
                             f"{ROLES_SQL}, which creates the schema",)
        return Check("state schema", ok, True, f"{quote(s.schema)} not created yet: indexd migrate creates it"
                     + ("" if ok else f", but {quote(r.role)} may not create schemas"), fix)
    wrong = problems(s)
    if wrong:
        return Check("state schema", False, True, "; ".join(wrong),
                     (*fix_statements(s), f"-- or re-run {ROLES_SQL}"))
    return Check("state schema", True, True, f"{quote(s.schema)} owned by {quote(s.schema_owner or '')}, usable "
                 f"by {quote(r.role)}")

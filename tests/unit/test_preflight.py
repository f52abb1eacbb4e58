"""The preflight decision: every check's ok / missing, whether it is required, and its fix, from readings alone."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from indexd.lifecycle.preflight import (
    HYPOPG_FUNCTIONS,
    HYPOPG_VIEWS,
    Check,
    HypoObject,
    Needs,
    QualstatsRoom,
    Readings,
    decide,
    ready,
)
from indexd.state.ownership import Ownership, StateObject

WHATIF = Path(__file__).resolve().parents[2] / "indexd" / "advisor" / "whatif.py"
ROLE = "indexd_group"


def hypo(allowed: bool = True) -> tuple[HypoObject, ...]:
    funcs = tuple(HypoObject("function", f, f"public.{f}(x)", allowed) for f in HYPOPG_FUNCTIONS)
    return funcs + tuple(HypoObject("view", v, f"public.{v}", allowed) for v in HYPOPG_VIEWS)


def state(**kw: object) -> Ownership:
    base = dict(schema="indexd", schema_owner=ROLE, role=ROLE, superuser=False, usable=frozenset({ROLE}),
                may_become=frozenset({ROLE}), objects=(StateObject("schema_version", "r", ROLE),))
    base.update(kw)
    return Ownership(**base)  # type: ignore[arg-type]


GOOD = Readings(
    database="app", server_version="15.8", server_version_num=150008, preload=("pg_stat_statements",),
    stats_loaded=True, available=frozenset({"pg_stat_statements", "hypopg", "pg_trgm"}),
    created=frozenset({"pg_stat_statements", "hypopg", "pg_trgm"}), standby=False, login="indexd",
    superuser=False, read_all_stats=True, signal_backend=True, createdb=True, create_on_database=False,
    hypopg=hypo(), tables=4, indexable=4, table_owners=(), state=state())
BUILDS = Needs(builds=True, test_restores=True)
ADVISE = Needs(builds=False, test_restores=False)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def missing(readings: Readings, needs: Needs = BUILDS) -> dict[str, Check]:
    return {c.name: c for c in decide(readings, needs) if not c.ok}


def test_everything_in_place_is_ready_with_only_optional_pieces_missing() -> None:
    checks = decide(GOOD, BUILDS)
    assert ready(checks)
    assert [c.name for c in checks if not c.ok] == ["extension pg_qualstats (optional)"]
    assert all(c.status in ("ok", "missing") for c in checks)
    assert by_name(checks)["server role"].detail == "primary"
    assert by_name(checks)["connected as"].detail == "indexd, acting as indexd_group (its sessions start as that role)"


def test_old_server_is_required_and_says_to_upgrade() -> None:
    found = missing(replace(GOOD, server_version="14.9", server_version_num=140009))
    assert found["server version"].required and "15 or later" in found["server version"].fix[0]
    assert not ready(decide(replace(GOOD, server_version_num=140009), BUILDS))


def test_preload_missing_gives_the_whole_list_to_set_and_a_restart() -> None:
    found = missing(replace(GOOD, preload=("auto_explain",), stats_loaded=False))
    fix = found["shared_preload_libraries has pg_stat_statements"].fix
    assert fix[0].startswith("ALTER SYSTEM SET shared_preload_libraries = 'auto_explain', 'pg_stat_statements';")
    assert "restart" in fix[1]


def test_hidden_preload_is_judged_by_pg_stat_statements_answering() -> None:
    assert "shared_preload_libraries has pg_stat_statements" not in missing(replace(GOOD, preload=None))
    found = missing(replace(GOOD, preload=None, stats_loaded=False))
    assert found["shared_preload_libraries has pg_stat_statements"].required
    unknown = missing(replace(GOOD, preload=None, stats_loaded=None))["shared_preload_libraries has pg_stat_statements"]
    assert not unknown.required and "pg_read_all_settings" in unknown.fix[0]


def test_pg_qualstats_preload_is_checked_only_when_present_and_never_required() -> None:
    assert not any("pg_qualstats" in n and "shared" in n for n in by_name(decide(GOOD, BUILDS)))
    present = replace(GOOD, available=GOOD.available | {"pg_qualstats"})
    check = missing(present)["shared_preload_libraries has pg_qualstats (optional)"]
    assert not check.required and "'pg_stat_statements', 'pg_qualstats'" in check.fix[0]
    assert ready(decide(present, BUILDS))


@pytest.mark.parametrize("ext", ["pg_stat_statements", "hypopg"])
def test_required_extensions_missing(ext: str) -> None:
    found = missing(replace(GOOD, created=GOOD.created - {ext}))
    check = found[f"extension {ext}"]
    assert check.required and check.fix == (f"CREATE EXTENSION {ext};  -- as a superuser, in database app",)


def test_an_extension_not_installed_on_the_host_says_which_package() -> None:
    found = missing(replace(GOOD, created=GOOD.created - {"hypopg"}, available=GOOD.available - {"hypopg"}))
    assert found["extension hypopg"].fix[0] == "apt-get install postgresql-15-hypopg"


@pytest.mark.parametrize("ext", ["pg_qualstats", "pg_trgm"])
def test_optional_extensions_say_what_they_add_and_never_fail(ext: str) -> None:
    readings = replace(GOOD, created=GOOD.created - {ext})
    check = missing(readings)[f"extension {ext} (optional)"]
    assert not check.required and "without it" in check.detail and "the advisor" in check.detail
    assert ready(decide(readings, BUILDS))


def test_without_pg_read_all_stats_the_application_statements_are_invisible() -> None:
    check = missing(replace(GOOD, read_all_stats=False))["read all of pg_stat_statements"]
    assert check.required and check.fix[0].startswith("GRANT pg_read_all_stats TO indexd_group;")


def test_each_denied_hypopg_object_gets_its_grant() -> None:
    objects = tuple(replace(o, allowed=o.name != "hypopg_list_indexes") for o in hypo())
    check = missing(replace(GOOD, hypopg=objects))["HypoPG privileges"]
    assert check.required and "1 of 5" in check.detail and "lose candidates" in check.detail
    assert check.fix[0] == "GRANT SELECT ON public.hypopg_list_indexes TO indexd_group;"
    assert "again after every CREATE EXTENSION hypopg" in check.fix[-1]
    functions = missing(replace(GOOD, hypopg=hypo(allowed=False)))["HypoPG privileges"].fix
    assert "GRANT EXECUTE ON FUNCTION public.hypopg_create_index(x) TO indexd_group;" in functions


def test_an_old_hypopg_without_an_object_asks_for_an_update() -> None:
    check = missing(replace(GOOD, hypopg=hypo()[1:]))["HypoPG privileges"]
    assert "ALTER EXTENSION hypopg UPDATE" in check.fix[0] and "hypopg" in check.detail


def test_hypopg_privileges_are_not_checked_before_the_extension_exists() -> None:
    names = by_name(decide(replace(GOOD, created=GOOD.created - {"hypopg"}, hypopg=()), BUILDS))
    assert "HypoPG privileges" not in names


def test_tables_the_role_cannot_index_are_counted_with_their_owners() -> None:
    readings = replace(GOOD, tables=5, indexable=3, table_owners=("app", "hr"))
    check = missing(readings)["create indexes"]
    assert "3 of 5 tables" in check.detail and check.required
    assert check.fix[0].startswith("GRANT app TO indexd_group;") and check.fix[1].startswith("GRANT hr TO")
    advise = missing(readings, ADVISE)["create indexes"]
    assert not advise.required and "mode advise" in advise.detail
    assert ready(decide(readings, ADVISE)) and not ready(decide(readings, BUILDS))


def test_no_user_tables_yet_is_fine() -> None:
    check = by_name(decide(replace(GOOD, tables=0, indexable=0), BUILDS))["create indexes"]
    assert check.ok and check.detail == "no user tables yet"


def test_test_restores_need_createdb_or_another_server() -> None:
    no_createdb = replace(GOOD, createdb=False)
    check = missing(no_createdb)["scratch databases for test restores"]
    assert check.required and check.fix[0].startswith("ALTER ROLE indexd_group CREATEDB;")
    assert "backups.verify.restore_dsn" in check.fix[0]
    no_restores = by_name(decide(no_createdb, replace(BUILDS, test_restores=False)))
    assert not no_restores["scratch databases for test restores"].ok
    assert not no_restores["scratch databases for test restores"].required
    elsewhere = by_name(decide(no_createdb, replace(BUILDS, restore_target="postgresql://x@scratch/postgres")))
    assert elsewhere["scratch databases for test restores"].ok


def test_cancelling_builds_needs_pg_signal_backend_when_indexd_builds() -> None:
    readings = replace(GOOD, signal_backend=False)
    assert missing(readings)["cancel backends"].fix[0].startswith("GRANT pg_signal_backend TO indexd_group;")
    assert not missing(readings, ADVISE)["cancel backends"].required


def test_a_superuser_has_every_right() -> None:
    su = replace(GOOD, superuser=True, read_all_stats=True, signal_backend=True, createdb=True,
                 state=state(role="postgres", superuser=True, usable=frozenset({"postgres", ROLE})))
    assert ready(decide(su, BUILDS))


def test_a_missing_state_schema_is_made_by_migrate_when_the_role_may() -> None:
    absent = state(schema_owner=None, objects=())
    check = by_name(decide(replace(GOOD, state=absent, create_on_database=True), BUILDS))["state schema"]
    assert check.ok and "indexd migrate creates it" in check.detail
    refused = missing(replace(GOOD, state=absent, create_on_database=False))["state schema"]
    assert refused.required and refused.fix[0].startswith("GRANT CREATE ON DATABASE app TO indexd_group;")


def test_state_tables_of_another_role_are_named_with_the_alter_statements() -> None:
    locked = state(objects=(StateObject("schema_version", "r", "postgres"),))
    check = missing(replace(GOOD, state=locked))["state schema"]
    assert check.required and "belong to 'postgres'" in check.detail
    assert check.fix[0] == "ALTER TABLE indexd.schema_version OWNER TO indexd_group;"
    assert "sql/roles.sql" in check.fix[-1]


def test_a_standby_is_read_only_and_ready() -> None:
    standby = replace(GOOD, standby=True, state=state(schema_owner=None, objects=()))
    checks = by_name(decide(standby, BUILDS))
    assert "standby" in checks["server role"].detail and "read-only" in checks["server role"].detail
    assert checks["state schema"].ok and "primary" in checks["state schema"].detail
    assert ready(list(checks.values()))


def test_every_hypopg_object_the_advisor_calls_is_checked() -> None:
    text = WHATIF.read_text(encoding="utf-8")
    called = set(re.findall(r"\b(hypopg(?:_[a-z_]+)?)\b(?!\.)", text)) - {"hypopg_list_indexes"}
    called = {name for name in called if re.search(rf"{name}\s*\(", text)}
    assert called, "the scan finds the advisor's HypoPG calls"
    assert called <= set(HYPOPG_FUNCTIONS)
    views = {v for v in ("hypopg_list_indexes",) if re.search(rf"FROM {v}\b", text)}
    assert views <= set(HYPOPG_VIEWS)


def test_tables_a_superuser_owns_are_never_fixed_by_granting_the_superuser() -> None:
    readings = replace(GOOD, tables=5, indexable=3, table_owners=("app", "postgres"),
                       superuser_owners=frozenset({"postgres"}))
    check = missing(readings)["create indexes"]
    assert check.fix[0].startswith("GRANT app TO indexd_group;")
    assert not any(f.startswith("GRANT postgres") for f in check.fix)
    assert check.fix[1].startswith("ALTER TABLE ... OWNER TO <the application's owner role>;")
    assert "postgres is a superuser, never grant it to indexd_group" in check.fix[1]


def test_a_nearly_full_pg_qualstats_asks_for_room_and_never_fails() -> None:
    roomy = replace(GOOD, qualstats=QualstatsRoom(1000, 120, 40, True, 0.01))
    check = by_name(decide(roomy, BUILDS))["pg_qualstats keeps the constants (optional)"]
    assert check.ok and "120 predicates and 40 example statements kept, of pg_qualstats.max 1000" in check.detail
    assert "samples 1.0% of statements" in check.detail
    # a full predicate table is the normal state of a busy server: it keeps the most used constants
    busy = by_name(decide(replace(GOOD, qualstats=QualstatsRoom(1000, 990, 40, True, 0.01)), BUILDS))
    assert busy["pg_qualstats keeps the constants (optional)"].ok
    assert "keeps the most used constants" in busy["pg_qualstats keeps the constants (optional)"].detail
    full = replace(GOOD, qualstats=QualstatsRoom(1000, 300, 950, True, 0.01))
    check = missing(full)["pg_qualstats keeps the constants (optional)"]
    assert not check.required and "get no example" in check.detail and ready(decide(full, BUILDS))
    assert check.fix[0].startswith("ALTER SYSTEM SET pg_qualstats.max = 2000;") and "restart" in check.fix[1]
    off = missing(replace(GOOD, qualstats=QualstatsRoom(1000, 0, 0, False, 1.0)))
    assert "keeps no constant" in off["pg_qualstats keeps the constants (optional)"].detail
    assert "pg_qualstats keeps" not in " ".join(by_name(decide(GOOD, BUILDS)))  # not created: no reading

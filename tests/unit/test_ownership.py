"""The state schema's ownership rule, decided from readings alone."""

from __future__ import annotations

from indexd.state.ownership import Ownership, StateObject, explain, fix_statements, migration_role, problems, quote

TABLES = (StateObject("schema_version", "r", "indexd_group"), StateObject("recommendations", "r", "indexd_group"))


def owned(schema_owner: str | None = "indexd_group", role: str = "indexd_group", objects=TABLES,
          usable: set[str] | None = None, may_become: set[str] | None = None, superuser: bool = False) -> Ownership:
    usable = {role} if usable is None else usable
    return Ownership("indexd", schema_owner, role, superuser, frozenset(usable),
                     frozenset(usable if may_become is None else may_become), objects)


def test_the_owner_itself_is_fine_and_migrates_as_itself() -> None:
    o = owned()
    assert problems(o) == [] and migration_role(o) is None and fix_statements(o) == []


def test_a_missing_schema_is_no_problem_and_its_creator_will_own_it() -> None:
    o = owned(schema_owner=None, objects=())
    assert not o.exists and problems(o) == [] and migration_role(o) is None


def test_a_superuser_migrates_as_the_schema_owner() -> None:
    o = owned(role="postgres", usable={"postgres", "indexd_group"}, superuser=True)
    assert problems(o) == []
    assert migration_role(o) == "indexd_group"


def test_a_member_of_the_owner_migrates_as_the_owner() -> None:
    o = owned(role="indexd", usable={"indexd", "indexd_group"})
    assert migration_role(o) == "indexd_group"


def test_a_member_without_set_role_right_migrates_as_itself() -> None:
    o = owned(role="indexd", usable={"indexd", "indexd_group"}, may_become={"indexd"})
    assert migration_role(o) is None


def test_tables_left_to_a_superuser_lock_the_group_role_out_with_the_fix() -> None:
    objects = (StateObject("schema_version", "r", "postgres"), StateObject("snapshots_id_seq", "S", "postgres"),
               StateObject("recommendations", "r", "indexd_group"))
    o = owned(objects=objects)
    found = problems(o)
    assert len(found) == 1
    assert "2 state table(s) of 'indexd' belong to 'postgres'" in found[0]
    assert fix_statements(o) == ["ALTER TABLE indexd.schema_version OWNER TO indexd_group;",
                                 "ALTER SEQUENCE indexd.snapshots_id_seq OWNER TO indexd_group;"]
    message = explain(o, "main")
    assert message.startswith("database main: ") and "ALTER TABLE indexd.schema_version OWNER TO" in message
    assert "sql/roles.sql" in message


def test_a_schema_owned_by_a_stranger_is_given_to_the_role() -> None:
    o = owned(schema_owner="postgres", objects=(StateObject("schema_version", "r", "postgres"),))
    assert any("belongs to 'postgres'" in p for p in problems(o))
    assert fix_statements(o) == ["ALTER SCHEMA indexd OWNER TO indexd_group;",
                                 "ALTER TABLE indexd.schema_version OWNER TO indexd_group;"]


def test_tables_of_a_role_we_act_as_are_usable() -> None:
    o = owned(role="indexd", usable={"indexd", "indexd_group", "old_owner"},
              objects=(StateObject("pause", "r", "old_owner"),))
    assert problems(o) == []
    assert o.strangers() == (StateObject("pause", "r", "old_owner"),)


def test_identifiers_in_fixes_are_quoted_when_they_must_be() -> None:
    assert quote("indexd_group") == "indexd_group"
    assert quote("IdxState") == '"IdxState"'
    assert quote("a-b") == '"a-b"'
    assert quote('we"ird') == '"we""ird"'

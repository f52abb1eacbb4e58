"""Index definitions as shapes, and the one redundancy rule (`covers`), without a server."""

from __future__ import annotations

import pytest

from indexd.advisor.model import ExistingIndex, IndexCandidate, IndexKey
from indexd.statements.indexdef import NotAnIndex, covers, parse_index, predicate_conjuncts, stored_columns


def idx(text: str):
    return parse_index(text)


def test_pg_get_indexdef_and_our_create_sql_read_alike() -> None:
    ours = IndexCandidate("public", "users", (IndexKey(expression="lower(email)"), IndexKey("at", descending=True)),
                          where="status = 'pending'", include=("id",))
    theirs = idx("CREATE INDEX users_x ON public.users USING btree (lower((email)::text), at DESC) INCLUDE (id) "
                 "WHERE (status = 'pending'::text)")
    assert ours.shape() == theirs


def test_existing_index_shape_from_its_definition_or_its_fields() -> None:
    with_def = ExistingIndex("public", "i", "t", ("a", "lower(b)"), definition=(
        "CREATE INDEX i ON public.t USING btree (a, lower(b))"))
    without = ExistingIndex("public", "i", "t", ("a", "lower(b)"))
    assert with_def.shape().keys == without.shape().keys


@pytest.mark.parametrize(("existing", "wanted", "expected"), [
    ("CREATE INDEX ON t (a, b)", "CREATE INDEX ON t (a)", True),  # prefix
    ("CREATE INDEX ON t (a, b)", "CREATE INDEX ON t (a, b)", True),  # the same
    ("CREATE INDEX ON t (a, b)", "CREATE INDEX ON t (b)", False),  # not a prefix
    ("CREATE INDEX ON t (a)", "CREATE INDEX ON t (a, b)", False),  # shorter
    ("CREATE INDEX ON t (a DESC, b DESC)", "CREATE INDEX ON t (a, b)", True),  # a backward scan reads it
    ("CREATE INDEX ON t (a, b DESC)", "CREATE INDEX ON t (a, b)", False),  # mixed order differs
    ("CREATE INDEX ON t (a)", "CREATE INDEX ON t (a) WHERE s = 'x'", False),  # reads all rows to find its own
    ("CREATE INDEX ON t (a) WHERE s = 'x'", "CREATE INDEX ON t (a)", False),  # holds fewer rows
    ("CREATE INDEX ON t (a) WHERE s = 'x'", "CREATE INDEX ON t (a) WHERE s = 'x' AND k > 1", False),
    ("CREATE INDEX ON t (a, b) WHERE s = 'x' AND k > 1", "CREATE INDEX ON t (a) WHERE k > 1 AND s = 'x'", True),
    ("CREATE INDEX ON t (a) WHERE (s)::text = 'x'::text", "CREATE INDEX ON t (a) WHERE s = 'x'", True),
    ("CREATE INDEX ON t (a)", "CREATE INDEX ON t (a) INCLUDE (c)", False),  # the INCLUDE is needed
    ("CREATE INDEX ON t (a, c)", "CREATE INDEX ON t (a) INCLUDE (c)", True),  # c is stored as a key
    ("CREATE INDEX ON t (a) INCLUDE (c, d)", "CREATE INDEX ON t (a) INCLUDE (c)", True),
    ("CREATE INDEX ON t USING hash (a)", "CREATE INDEX ON t (a)", False),  # another method
    ("CREATE INDEX ON t USING gin (a, b)", "CREATE INDEX ON t USING gin (a)", False),  # no prefix rule there
    ("CREATE INDEX ON t (a text_pattern_ops)", "CREATE INDEX ON t (a)", False),  # another operator class
    ("CREATE UNIQUE INDEX ON t (lower(e))", "CREATE INDEX ON t ((lower(e)))", True),
    ("CREATE INDEX ON t (a COLLATE \"C\")", "CREATE INDEX ON t (a)", False),
])
def test_covers(existing: str, wanted: str, expected: bool) -> None:
    assert covers(idx(existing), idx(wanted)) is expected


def test_stored_columns_are_keys_expressions_include_and_predicate() -> None:
    shape = idx("CREATE INDEX ON t (a, lower(b), (c + d)) INCLUDE (e) WHERE f IS NULL AND g > 0")
    assert stored_columns(shape) == {"a", "b", "c", "d", "e", "f", "g"}
    assert stored_columns(idx('CREATE INDEX ON t ("Mixed Case")')) == {"Mixed Case"}


def test_predicates_split_into_conjuncts() -> None:
    assert predicate_conjuncts("a = 1 AND (b > 2 AND c IS NULL)") == {"a = 1", "b > 2", "c IS NULL"}
    assert predicate_conjuncts(None) == frozenset()


def test_anything_but_one_create_index_is_refused() -> None:
    for text in ("SELECT 1", "CREATE INDEX ON t (a); CREATE INDEX ON t (b)", "CREATE INDEX ON"):
        with pytest.raises(NotAnIndex):
            parse_index(text)

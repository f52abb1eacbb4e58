"""Index classes beyond a column B-tree, on a hand-built catalog: which predicate yields which class, and which
yields none; the workload-wide choices; existing indexes; and the pure models behind sizes and GIN costs."""

from __future__ import annotations

from indexd.advisor.candidates import Candidates, generate
from indexd.advisor.classes import extension_notes
from indexd.advisor.classsize import BLOCK, brin_size, gin_size, posting_bytes, rare_entries
from indexd.advisor.expressions import canonical, gin_family
from indexd.advisor.model import Catalog, Column, ExistingIndex, IndexCandidate, IndexKey, Table
from indexd.advisor.sampling import EntryStats, duj1
from indexd.config.schema import IndexingSettings
from indexd.statements.statement import Statement

SETTINGS = IndexingSettings(min_table_rows=1000, max_columns=3)


def col(name: str, typ: str, width: int = 8, nd: float = -1.0, **kw) -> Column:
    return Column(name, typ, avg_width=width, n_distinct=nd, null_frac=kw.pop("null_frac", 0.0), **kw)


DOCS = Table("public", "docs", "r", 200_000, 5000, (
    col("id", "bigint", correlation=1.0), col("tenant_id", "integer", 4, 300), col("email", "text", 20, 2000),
    col("meta", "jsonb", 80), col("tags", "text[]", 30), col("body", "text", 200, collation="C"),
    col("title", "character varying(200)", 40, collation="en_US.utf8"), col("tsv", "tsvector", 100),
    col("created_at", "timestamp with time zone", correlation=0.99),
    col("updated_at", "timestamp with time zone", correlation=0.1),
    col("deleted_at", "timestamp with time zone", null_frac=0.97, correlation=1.0),
    col("kind", "integer", 4, 1000, most_common_vals=("1", "2"), most_common_freqs=(0.001, 0.001)),
    col("status", "text", 6, 3, most_common_vals=("done", "new", "pending"), most_common_freqs=(0.9, 0.08, 0.02)),
))
SMALL = Table("public", "small", "r", 50_000, 300, (col("at", "date", 4, correlation=1.0),))
CATALOG = Catalog(tables={t.qualified: t for t in (DOCS, SMALL)}, extensions=frozenset({"pg_trgm"}))


def run(*queries: str, catalog: Catalog = CATALOG) -> Candidates:
    return generate([Statement(q) for q in queries], catalog, SETTINGS)


def show(c: IndexCandidate) -> str:
    keys = ", ".join(k.label() for k in c.keys)
    method = "" if c.method == "btree" else f"{c.method} "
    return f"{c.table} {method}({keys})" + (f" WHERE {c.where}" if c.where else "")


def cands(query: str, catalog: Catalog = CATALOG) -> set[str]:
    return {show(c) for c in run(query, catalog=catalog).by_statement[0]}


# ---- expression keys ------------------------------------------------------------------------------------------
def test_expression_keys_of_one_column() -> None:
    assert "docs ((meta ->> 'external_id'))" in cands("SELECT id FROM docs WHERE meta->>'external_id' = $1")
    assert "docs ((CAST(created_at AS date)))" in cands("SELECT id FROM docs WHERE created_at::date = $1")
    assert "docs ((date_trunc('day', created_at)))" in cands(
        "SELECT count(*) FROM docs GROUP BY date_trunc('day', created_at)")
    assert "docs ((lower(email)))" in cands("SELECT id FROM docs ORDER BY lower(email) LIMIT 10")
    # a parameter inside the expression, two columns, an aggregate: nothing an index can hold
    assert not any("(" in c.split(" ", 1)[1][1:] for c in cands("SELECT id FROM docs WHERE meta->>$1 = $2"))
    assert cands("SELECT id FROM docs WHERE lower(email || body) = $1") == set()
    assert "docs ((sum(tenant_id)))" not in cands("SELECT tenant_id FROM docs GROUP BY 1 ORDER BY sum(tenant_id)")


def test_canonical_spelling_matches_pg_get_indexdef() -> None:
    assert canonical("(meta ->> 'external_id'::text)") == canonical("meta ->> 'external_id'")
    assert canonical("to_tsvector('simple'::regconfig, body)") == canonical("to_tsvector('simple', body)")
    assert canonical("lower(email)") != canonical("upper(email)")


# ---- GIN ------------------------------------------------------------------------------------------------------
def test_jsonb_path_ops_only_when_the_whole_workload_uses_containment() -> None:
    alone = run("SELECT id FROM docs WHERE meta @> $1")
    assert {show(c) for c in alone.by_statement[0]} == {"docs gin (meta jsonb_path_ops)"}
    both = run("SELECT id FROM docs WHERE meta @> $1", "SELECT id FROM docs WHERE meta ? $1")
    assert {show(c) for c in both.all} == {"docs gin (meta)"}  # one index serves both: the default jsonb_ops
    assert "docs gin ((meta -> 'a') jsonb_path_ops)" in cands("SELECT id FROM docs WHERE meta->'a' @> $1")


def test_arrays_text_search_and_trigrams() -> None:
    assert cands("SELECT id FROM docs WHERE tags && $1") == {"docs gin (tags)"}
    assert cands("SELECT id FROM docs WHERE $1 <@ tags") == {"docs gin (tags)"}  # tags @> $1
    assert cands("SELECT id FROM docs WHERE tsv @@ to_tsquery($1)") == {"docs gin (tsv)"}
    assert cands("SELECT id FROM docs WHERE to_tsvector('simple', body) @@ plainto_tsquery('simple', $1)") == {
        "docs gin ((to_tsvector('simple', body)))"}
    assert cands("SELECT id FROM docs WHERE to_tsvector(body) @@ plainto_tsquery($1)") == set()  # not immutable
    for query in ("SELECT id FROM docs WHERE title ILIKE $1", "SELECT id FROM docs WHERE title LIKE '%x%'",
                  "SELECT id FROM docs WHERE title ~* 'x'", "SELECT id FROM docs WHERE title % 'x'"):
        assert "docs gin (title gin_trgm_ops)" in cands(query), query
    assert "docs gin ((lower(body)) gin_trgm_ops)" in cands("SELECT id FROM docs WHERE lower(body) LIKE $1")
    assert not any("gin" in c for c in cands("SELECT id FROM docs WHERE body LIKE 'abc%'"))  # a B-tree range


def test_no_gin_where_it_cannot_serve() -> None:
    assert not any("gin" in c for c in cands("SELECT id FROM docs WHERE meta @> $1 OR id = $2"))
    assert cands("SELECT d.id FROM docs d JOIN docs e ON e.tags && d.tags WHERE d.id = $1") == {"docs (id)"}
    assert cands("SELECT id FROM docs WHERE status ~~ $1 AND meta = $2") >= {"docs (meta)"}  # jsonb equality
    assert not any("gin" in c for c in cands("SELECT id FROM docs WHERE body <> $1"))


def test_trigram_without_pg_trgm_names_the_statements_and_the_extension() -> None:
    bare = Catalog(tables=CATALOG.tables)
    statements = [Statement("SELECT id FROM docs WHERE title ILIKE $1"), Statement("SELECT 1 FROM docs")]
    result = generate(statements, bare, SETTINGS)
    assert result.needs_extension == {"pg_trgm": [0]}
    assert not any(c.method == "gin" for c in result.all)
    (note,) = extension_notes(result.needs_extension, statements, "app")
    assert "1 statement(s) would be served by a trigram GIN index" in note
    assert "CREATE EXTENSION pg_trgm; in database app" in note and "title ILIKE $1" in note


def test_gin_conjuncts_are_kept_for_costing() -> None:
    result = run("SELECT id FROM docs WHERE meta @> $1 AND tags && $2")
    uses = {show(c): [(u.operator, u.clause) for u in found] for (_, c), found in result.gin_uses.items()}
    assert uses == {"docs gin (meta jsonb_path_ops)": [("@>", "meta @> $1")],
                    "docs gin (tags)": [("&&", "tags && $2")]}


def test_existing_gin_indexes_serve_their_candidates() -> None:
    def with_index(definition: str, keys: tuple[str, ...]) -> Catalog:
        index = ExistingIndex("public", "i", "docs", keys, method="gin", definition=definition)
        return Catalog(tables=CATALOG.tables, indexes=(index,), extensions=CATALOG.extensions)
    default = with_index("CREATE INDEX i ON public.docs USING gin (meta)", ("meta",))
    assert run("SELECT id FROM docs WHERE meta @> $1", catalog=default).all == set()
    narrow = with_index("CREATE INDEX i ON public.docs USING gin (meta jsonb_path_ops)", ("meta",))
    assert run("SELECT id FROM docs WHERE meta @> $1", catalog=narrow).all == set()
    assert {show(c) for c in run("SELECT id FROM docs WHERE meta ? $1", catalog=narrow).all} == {"docs gin (meta)"}
    tsv = with_index("CREATE INDEX i ON public.docs USING gin (to_tsvector('simple'::regconfig, body))",
                     ("to_tsvector('simple'::regconfig, body)",))
    assert run("SELECT id FROM docs WHERE to_tsvector('simple', body) @@ to_tsquery('simple', $1)",
               catalog=tsv).all == set()
    btree = Catalog(tables=CATALOG.tables, indexes=(ExistingIndex(
        "public", "e", "docs", ("(meta ->> 'external_id'::text)",),
        definition="CREATE INDEX e ON public.docs USING btree (((meta ->> 'external_id'::text)))"),))
    assert run("SELECT id FROM docs WHERE meta->>'external_id' = $1", catalog=btree).all == set()


# ---- BRIN, sparse and category partial indexes, shared leading columns ---------------------------------------------
def test_brin_for_ranges_on_a_large_table_in_the_columns_order() -> None:
    assert "docs brin (created_at)" in cands("SELECT count(*) FROM docs WHERE created_at >= $1")
    assert "docs brin (created_at)" in cands("SELECT count(*) FROM docs WHERE created_at BETWEEN $1 AND $2")
    assert not any("brin" in c for c in cands("SELECT * FROM docs WHERE created_at = $1"))  # a point lookup
    assert not any("brin" in c for c in cands("SELECT * FROM docs WHERE updated_at >= $1"))  # not in its order
    assert not any("brin" in c for c in cands("SELECT * FROM small WHERE at >= $1"))  # 300 pages


def test_sparse_column_partial_index() -> None:
    assert "docs (deleted_at) WHERE deleted_at IS NOT NULL" in cands("SELECT id FROM docs WHERE deleted_at > $1")
    assert "docs (deleted_at, id) WHERE deleted_at IS NOT NULL" not in cands(
        "SELECT id FROM docs WHERE deleted_at IS NULL AND id = $1")
    assert not any("IS NOT NULL" in c for c in cands("SELECT id FROM docs WHERE created_at > $1"))


def test_partial_index_only_on_a_rare_value_of_a_category() -> None:
    assert "docs (created_at) WHERE status = 'pending'" in cands(
        "SELECT id FROM docs WHERE status = 'pending' ORDER BY created_at LIMIT 10")
    # kind has 1000 values, each rare: a partial index per value would be one index per value
    assert not any("WHERE" in c for c in cands("SELECT id FROM docs WHERE kind = 2 ORDER BY created_at"))


def test_order_leading_with_the_columns_other_statements_share() -> None:
    alone = run("SELECT id FROM docs WHERE tenant_id = $1 AND email = $2").by_statement[0]
    assert show(alone[0]) == "docs (email, tenant_id)"  # the most selective first
    shared = run("SELECT id FROM docs WHERE tenant_id = $1 AND email = $2",
                 "SELECT count(*) FROM docs WHERE tenant_id = $1").by_statement[0]
    assert "docs (tenant_id, email)" in {show(c) for c in shared}


# ---- subqueries -----------------------------------------------------------------------------------------------
def test_predicates_inside_subqueries_get_their_own_candidates() -> None:
    scalar = "SELECT d.id, (SELECT count(*) FROM docs e WHERE e.tenant_id = d.id) FROM docs d WHERE d.email = $1"
    assert {"docs (tenant_id)", "docs (email)"} <= cands(scalar)
    exists = "SELECT id FROM docs d WHERE EXISTS (SELECT 1 FROM docs e WHERE e.tenant_id = d.id AND e.kind = $1)"
    assert "docs (tenant_id)" in cands(exists) or "docs (kind, tenant_id)" in cands(exists)
    assert "docs (tenant_id)" in cands("SELECT id FROM docs WHERE id IN (SELECT tenant_id FROM docs WHERE kind = $1)")
    assert "docs gin (tags)" in cands("WITH t AS (SELECT id FROM docs WHERE tags && $1) SELECT count(*) FROM t")


# ---- names ---------------------------------------------------------------------------------------------------------
def test_names_say_the_class_and_the_expression() -> None:
    expr = IndexCandidate("public", "docs", (IndexKey(expression="meta ->> 'external_id'"),))
    assert expr.name().startswith("indexd_docs_meta_external_id_")
    gin = IndexCandidate("public", "docs", (IndexKey(column="meta", opclass="jsonb_path_ops"),), method="gin")
    assert gin.name().startswith("indexd_docs_gin_meta_") and gin.name() != IndexCandidate(
        "public", "docs", (IndexKey(column="meta"),), method="gin").name()
    long = IndexCandidate("public", "docs", (IndexKey(expression="to_tsvector('simple', " + "x" * 80 + ")"),),
                          method="gin")
    assert len(long.name()) <= 63


# ---- models -------------------------------------------------------------------------------------------------------
def test_gin_families() -> None:
    assert gin_family("jsonb", "?") == "jsonb" and gin_family("jsonb", "<@") is None
    assert gin_family("integer[]", "&&") == "array" and gin_family("integer[]", "?") is None
    assert gin_family("character varying", "~~*") == "trigram" and gin_family("integer", "~~") is None


def test_rare_entries_stand_for_what_the_sample_missed() -> None:
    keys, each = rare_entries(1000, 0, 0.1)  # seen once each, never twice: unique values
    assert each == 1.0 and abs(keys - 10_000) < 1
    keys, each = rare_entries(180, 250, 0.05)  # seen once and twice alike: ~50 rows each
    assert 30 < each < 70 and 430 < keys < 700
    assert rare_entries(10, 5, 1.0) == (15.0, 20 / 15)


def test_duj1_distinct_estimate() -> None:
    assert duj1(1000, 1000, 1000, 100_000) == 100_000  # all unique
    assert duj1(1000, 10, 0, 100_000) == 10  # ten values, all seen often
    assert duj1(100, 50, 10, 80) == 50  # the sample is the whole


def test_posting_lists_of_clustered_rows_are_smaller() -> None:
    spread = posting_bytes(1000, 1000, 2000, 30)
    clustered = posting_bytes(1000, 40, 2000, 30)
    assert clustered < spread / 1.5 and posting_bytes(1, 1, 2000, 30) == 8


def test_brin_and_gin_sizes() -> None:
    assert brin_size(DOCS, IndexCandidate("public", "docs", (IndexKey("created_at"),), method="brin")) == 3 * BLOCK
    unique = EntryStats(5000, 5000, 5000, ((1, 5000, 8.0, 1.0),))
    sized = gin_size(DOCS, unique, "tsvector")  # 200,000 unique words of ~9 bytes, 36-byte tuples
    assert 200_000 * 36 / 0.5 * 0.8 < sized < 200_000 * 36 / 0.5 * 1.2
    few = EntryStats(5000, 5000, 5000, ((5000, 3, 3.0, 125.0),))
    assert gin_size(DOCS, few, "trigram") < sized / 5  # three entries on every row: posting trees

from __future__ import annotations

import pytest

from indexd.advisor.catalog import load_catalog
from indexd.db.pool import Database
from indexd.state.migrations import migrate

SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.users (id bigint PRIMARY KEY, email text NOT NULL, status text, note text)
    WITH (fillfactor = 70);
INSERT INTO app.users SELECT g, 'u' || g || '@x.org', CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'done' END,
    CASE WHEN g % 2 = 0 THEN 'n' END FROM generate_series(1, 2000) g;
CREATE INDEX users_lower_email ON app.users (lower(email));
CREATE INDEX users_pending ON app.users (id DESC) INCLUDE (email) WHERE status = 'pending';
CREATE UNIQUE INDEX users_email ON app.users (email);
CREATE TABLE events (id bigint, at date NOT NULL, kind int) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2025-06-01' + (g % 400), g % 7 FROM generate_series(1, 3000) g;
CREATE INDEX events_at ON events (at);
CREATE VIEW pending_users AS SELECT id, email FROM app.users WHERE status = 'pending';
CREATE MATERIALIZED VIEW kinds AS SELECT kind, count(*) AS n FROM events GROUP BY kind;
CREATE TABLE "Weird Table" ("Col" int, other text COLLATE "POSIX");
CREATE TABLE odd_types (tags int[], doc jsonb, area box);
INSERT INTO odd_types SELECT ARRAY[g % 3, g % 5], jsonb_build_object('a', g % 4, 'b', 'x,y'),
    box(point(g % 2, 0), point(1, 1)) FROM generate_series(1, 300) g;
CREATE EXTENSION postgres_fdw;
CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1');
CREATE FOREIGN TABLE remote_things (id int, name text) SERVER loop;
ANALYZE;
"""


@pytest.fixture
def catalog(database: Database, pg_conn):
    migrate(database)  # the state schema exists and must stay out of the catalog
    with pg_conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute("UPDATE app.users SET note = 'x' WHERE id <= 10")
        cur.execute("SELECT pg_stat_force_next_flush()")
    with database.connection() as conn:
        return load_catalog(conn)


def test_tables_and_kinds(catalog) -> None:
    kinds = {key: t.kind for key, t in catalog.tables.items()}
    assert kinds == {
        "app.users": "r", "public.events": "p", "public.events_2025": "r", "public.events_2026": "r",
        "public.pending_users": "v", "public.kinds": "m", 'public.Weird Table': "r", "public.remote_things": "f",
        "public.odd_types": "r",
    }  # no state schema, no system catalogs, no extension objects (pg_stat_statements and hypopg views)
    assert catalog.search_path == ("public",)
    users = catalog.tables["app.users"]
    assert users.rows == 2000 and users.pages > 0 and users.fillfactor == 70
    assert users.writes_per_second > 0 and catalog.tables["public.remote_things"].writes_per_second == 0


def test_partitions_sum_into_the_parent(catalog) -> None:
    events = catalog.tables["public.events"]
    assert events.rows == 3000 and events.pages > 0 and events.writes_per_second > 0
    assert catalog.tables["public.events_2025"].parent == "public.events"
    assert catalog.tables["public.events_2025"].rows + catalog.tables["public.events_2026"].rows == 3000
    assert events.parent is None


def test_views_keep_their_definitions(catalog) -> None:
    view = catalog.tables["public.pending_users"]
    assert "FROM app.users" in view.view_definition and "'pending'::text" in view.view_definition
    assert [c.name for c in view.columns] == ["id", "email"]
    assert "GROUP BY" in catalog.tables["public.kinds"].view_definition
    assert catalog.tables["app.users"].view_definition is None


def test_columns_carry_types_and_statistics(catalog) -> None:
    users = catalog.tables["app.users"]
    assert [c.name for c in users.columns] == ["id", "email", "status", "note"]
    email, status, note = users.column("email"), users.column("status"), users.column("note")
    assert email.type == "text" and email.n_distinct == -1 and email.avg_width > 0 and email.collation == "C"
    assert users.column("id").type == "bigint" and users.column("id").collation is None
    assert status.most_common_vals == ("done", "pending")
    assert status.most_common_freqs == pytest.approx((0.99, 0.01))
    assert note.null_frac == pytest.approx(0.5)
    weird = catalog.tables["public.Weird Table"]
    assert weird.column("Col").type == "integer" and weird.column("other").collation == "POSIX"
    partitioned = catalog.tables["public.events"].column("kind")
    assert partitioned.n_distinct == 7  # the parent's statistics cover all partitions


def test_existing_indexes(catalog) -> None:
    users = {i.name: i for i in catalog.indexes_on(catalog.tables["app.users"])}
    assert set(users) == {"users_pkey", "users_lower_email", "users_pending", "users_email"}
    assert users["users_pkey"].keys == ("id",) and users["users_pkey"].is_primary
    assert users["users_lower_email"].keys == ("lower(email)",)
    pending = users["users_pending"]
    assert pending.keys == ("id",) and pending.include == ("email",) and pending.where == "(status = 'pending'::text)"
    assert pending.definition.startswith("CREATE INDEX users_pending ON app.users USING btree (id DESC)")
    assert users["users_email"].is_unique and not users["users_email"].is_primary
    assert all(i.is_valid and i.size_bytes > 0 and i.method == "btree" for i in users.values())
    events_at = [i for i in catalog.indexes if i.name == "events_at"]
    assert events_at and events_at[0].table == "events" and events_at[0].keys == ("at",)


def test_statistics_of_array_json_and_geometric_columns(catalog) -> None:
    odd = catalog.tables["public.odd_types"]
    assert len(odd.column("tags").most_common_vals) == 15 and "{0,0}" in odd.column("tags").most_common_vals
    assert any('"b": "x,y"' in v for v in odd.column("doc").most_common_vals)
    assert odd.column("area").most_common_vals == ()  # box arrays use ';' between elements: left out

from __future__ import annotations

import psycopg2.errors
import pytest

from indexd.config.schema import Settings
from indexd.db.pool import Database
from indexd.lifecycle import bloat, health
from indexd.lifecycle.findings import Finding
from indexd.state.migrations import migrate

SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, region int NOT NULL, note text,
                       during tstzrange, EXCLUDE USING gist (during WITH &&));
INSERT INTO accounts SELECT g, 'user' || g || '@example.com', g % 50, 'n' || g,
       tstzrange('2020-01-01'::timestamptz + g * interval '1 hour',
                 '2020-01-01'::timestamptz + (g + 1) * interval '1 hour')
  FROM generate_series(1, 5000) g;
CREATE INDEX accounts_id_copy ON accounts (id);
CREATE INDEX accounts_region ON accounts (region);
CREATE INDEX accounts_region_note ON accounts (region, note);
CREATE INDEX accounts_region_active ON accounts (region) WHERE note IS NOT NULL;
CREATE INDEX accounts_note ON accounts (note);
CREATE TABLE events (id bigint, payload text);
INSERT INTO events SELECT g, repeat('x', 40) || g FROM generate_series(1, 40000) g;
CREATE INDEX events_payload ON events (payload);
DELETE FROM events WHERE id % 10 <> 0;
VACUUM ANALYZE events;
ANALYZE accounts;
"""


def _by_index(findings: list[Finding]) -> dict[str, Finding]:
    return {f.index: f for f in findings}


def test_report_finds_each_kind_and_never_proposes_constraint_indexes(database: Database, pg_conn) -> None:
    with pg_conn.cursor() as cur:
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                cur.execute(statement)
        cur.execute("SELECT count(*) FROM accounts WHERE note = 'n5'")  # accounts_note is used
    # a failed unique build leaves an INVALID index behind
    with pg_conn.cursor() as cur, pytest.raises(psycopg2.errors.UniqueViolation):
        cur.execute("CREATE UNIQUE INDEX CONCURRENTLY accounts_region_unique ON accounts (region)")
    pg_conn.close()  # flush this backend's statistics (index scans) before reading them
    rep = health.report(database, Settings(), database.settings, min_bloat_bytes=256 * 1024)

    constraint_backed = {"accounts_pkey", "accounts_email_key", "accounts_during_excl"}
    proposed = {f.index for f in rep.unused + rep.duplicate + rep.invalid if f.sql and "DROP" in f.sql}
    assert not proposed & constraint_backed

    unused = _by_index(rep.unused)
    assert "events_payload" in unused and "accounts_region_note" in unused
    assert "accounts_note" not in unused  # it was scanned
    assert unused["events_payload"].evidence["scans"] == 0
    assert unused["events_payload"].size_bytes > 0
    assert not unused["events_payload"].evidence["mature"]  # the default unused_for is 30 days

    dup = _by_index(rep.duplicate)
    assert dup["accounts_id_copy"].kind == "duplicate"
    assert dup["accounts_id_copy"].evidence["duplicate_of"] == "accounts_pkey"
    assert dup["accounts_region"].kind == "redundant"
    assert dup["accounts_region"].evidence["covered_by"] == "accounts_region_note"
    assert "accounts_region_active" not in dup  # partial: not redundant
    assert dup["accounts_id_copy"].sql == 'DROP INDEX CONCURRENTLY "public"."accounts_id_copy";'

    invalid = _by_index(rep.invalid)
    assert invalid["accounts_region_unique"].evidence["made_by"] == "someone else"
    assert "duplicates" in invalid["accounts_region_unique"].action
    assert "accounts_region_unique" not in unused  # invalid ones are reported as invalid only

    bloated = _by_index(rep.bloated)
    assert "events_payload" in bloated
    ev = bloated["events_payload"].evidence
    assert ev["bloat_ratio"] > 0.7 and ev["actual_pages"] > 5 * ev["expected_pages"]
    assert bloated["events_payload"].sql == 'REINDEX INDEX CONCURRENTLY "public"."events_payload";'
    assert "accounts_pkey" not in bloated


def test_estimate_is_close_for_a_fresh_index(database: Database, pg_conn) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id bigint, label text)")
        cur.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
        cur.execute("CREATE INDEX t_label ON t (label)")
        cur.execute("CREATE INDEX t_id ON t (id)")
        cur.execute("CREATE INDEX t_lower_label ON t (lower(label))")
        cur.execute("CREATE INDEX t_id_label ON t (id) INCLUDE (label)")
        cur.execute("CREATE INDEX t_label_id ON t (label, id)")
        cur.execute("ANALYZE t")
    with database.connection() as conn:
        indexes = health.read_indexes(conn, "indexd")
        block_size, inputs = bloat.read_inputs(conn, [ix.oid for ix in indexes])
    assert len(inputs) == 5
    for item in inputs:
        est = bloat.estimate(item, block_size)
        assert est is not None
        assert 0.8 < est.actual_pages / est.expected_pages < 1.25, est
    rep = health.report(database, Settings(), database.settings, min_bloat_bytes=0, min_bloat_ratio=0.3)
    assert rep.bloated == []


def test_own_indexes_are_recognised_and_state_schema_is_skipped(database: Database, pg_conn) -> None:
    migrate(database)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (a int, b int)")
        cur.execute("CREATE INDEX indexd_t_a_12345678 ON t (a)")
        cur.execute("CREATE INDEX indexd_t_b_87654321 ON t (b)")  # our prefix, but no recommendation of ours
        cur.execute(
            "INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns,"
            " index_name, create_sql) VALUES ('built', 'f1', 'public', 't', '[\"a\"]', 'indexd_t_a_12345678',"
            " 'CREATE INDEX CONCURRENTLY indexd_t_a_12345678 ON public.t (a)') RETURNING id")
        rec_id = cur.fetchone()[0]
        cur.execute("INSERT INTO indexd.mutation_log (actor, action, phase, outcome, recommendation_id, at)"
                    " VALUES ('t', 'create_index', 'outcome', 'succeeded', %s, now() - interval '40 days')",
                    (rec_id,))
    rep = health.report(database, Settings(), database.settings)
    unused = _by_index(rep.unused)
    assert unused["indexd_t_a_12345678"].own
    assert not unused["indexd_t_b_87654321"].own
    assert unused["indexd_t_b_87654321"].evidence["created"] == "unknown"
    assert all(f.schema != "indexd" for f in rep.unused + rep.duplicate + rep.bloated)
    # ours was built 40 days ago, but the statistics of this fresh cluster cover less than that
    assert rep.stats_since is not None
    assert unused["indexd_t_a_12345678"].evidence["stats_since"] == rep.stats_since.isoformat()


def test_pgstatindex_measures_the_suspects_when_installed(database: Database, pg_conn) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE EXTENSION pgstattuple")
        cur.execute("CREATE TABLE events (id bigint, payload text)")
        cur.execute("INSERT INTO events SELECT g, repeat('x', 40) || g FROM generate_series(1, 40000) g")
        cur.execute("CREATE INDEX events_payload ON events (payload)")
        cur.execute("CREATE INDEX events_id ON events (id)")
        cur.execute("DELETE FROM events WHERE id % 10 <> 0")
        cur.execute("VACUUM ANALYZE events")
    rep = health.report(database, Settings(), database.settings, min_bloat_bytes=256 * 1024)
    found = _by_index(rep.bloated)
    assert found["events_payload"].evidence["method"] == "pgstatindex"
    assert found["events_payload"].evidence["bloat_ratio"] > 0.7
    with pg_conn.cursor() as cur:
        cur.execute("REINDEX INDEX events_payload")
    rep = health.report(database, Settings(), database.settings, min_bloat_bytes=256 * 1024)
    assert "events_payload" not in _by_index(rep.bloated)

"""`indexd indexes` as a user runs it: a subprocess against a schema with one index of each kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2.errors
import pytest

from indexd.db.pool import Database
from indexd.lifecycle.pause import pause
from indexd.state.migrations import migrate

HOSTILE_INDEX = 'items "by" note'
SCHEMA = [
    'CREATE TABLE "Order Items" (id bigint PRIMARY KEY, sku text NOT NULL UNIQUE, qty int NOT NULL, note text,'
    " during tstzrange, EXCLUDE USING gist (during WITH &&))",
    "INSERT INTO \"Order Items\" SELECT g, 'sku-' || g, g % 20, md5(g::text),"
    " tstzrange('2020-01-01'::timestamptz + g * interval '1 hour', '2020-01-01'::timestamptz + (g + 1) * interval"
    " '1 hour') FROM generate_series(1, 5000) g",
    'CREATE INDEX "Order Items_id_again" ON "Order Items" (id)',  # duplicate of the primary key
    'CREATE INDEX order_items_qty ON "Order Items" (qty)',  # prefix of the next one
    'CREATE INDEX order_items_qty_note ON "Order Items" (qty, note)',
    f'CREATE INDEX "{HOSTILE_INDEX.replace(chr(34), chr(34) * 2)}" ON "Order Items" (note)',  # unused
    "CREATE TABLE churn (id bigint, payload text)",
    "INSERT INTO churn SELECT g, repeat('p', 60) || g FROM generate_series(1, 60000) g",
    "CREATE INDEX churn_payload ON churn (payload)",
    "DELETE FROM churn WHERE id % 20 <> 0",
    "VACUUM ANALYZE churn",
    'ANALYZE "Order Items"',
]
CONSTRAINT_INDEXES = {"Order Items_pkey", "Order Items_sku_key", "Order Items_during_excl"}


@pytest.fixture
def schema(pg_conn) -> None:
    with pg_conn.cursor() as cur:
        for statement in SCHEMA:
            cur.execute(statement)
        with pytest.raises(psycopg2.errors.UniqueViolation):  # leaves an INVALID index behind
            cur.execute('CREATE UNIQUE INDEX CONCURRENTLY order_items_qty_unique ON "Order Items" (qty)')


# The command with its wall clock moved ahead: drop_unused.unused_for is at least 1h, more than a test's statistics
# can cover, so the drop tests run it "later" (indexd reads the clock through indexd.clock.utcnow alone).
LATER = (
    "import sys\nfrom datetime import timedelta\nimport indexd.clock as clock\nnow = clock.utcnow\n"
    "clock.utcnow = lambda: now() + timedelta(hours={hours})\nfrom indexd.cli import main\nsys.exit(main())\n"
)


def run(*args: str, config: Path | None = None, hours_later: float = 0) -> subprocess.CompletedProcess[str]:
    """The command in an empty folder, without INDEXD_* variables: only --dsn (and --config when given) count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    entry = ["-c", LATER.format(hours=hours_later)] if hours_later else ["-m", "indexd"]
    command = [sys.executable, *entry, *(["--config", str(config)] if config else []), "indexes", *args]
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=empty)


def _findings(out: list[dict], section: str) -> dict[str, dict]:
    (db,) = out
    return {f["index"]: f for f in db[section]}


def test_report_finds_each_kind_as_json_and_text(pg_dsn: str, pg_dbname: str, schema: None) -> None:
    done = run("--dsn", pg_dsn, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)

    unused = _findings(out, "unused")
    assert HOSTILE_INDEX in unused
    assert unused[HOSTILE_INDEX]["sql"] == 'DROP INDEX CONCURRENTLY "public"."items ""by"" note";'
    assert unused[HOSTILE_INDEX]["table"] == "Order Items"
    assert unused[HOSTILE_INDEX]["evidence"]["scans"] == 0

    duplicate = _findings(out, "duplicate")
    assert duplicate["Order Items_id_again"]["kind"] == "duplicate"
    assert duplicate["Order Items_id_again"]["evidence"]["duplicate_of"] == "Order Items_pkey"
    assert duplicate["Order Items_id_again"]["sql"] == 'DROP INDEX CONCURRENTLY "public"."Order Items_id_again";'
    assert duplicate["order_items_qty"]["kind"] == "redundant"

    invalid = _findings(out, "invalid")
    assert invalid["order_items_qty_unique"]["evidence"]["made_by"] == "someone else"

    bloated = _findings(out, "bloated")
    assert "churn_payload" in bloated
    assert bloated["churn_payload"]["evidence"]["bloat_ratio"] > 0.5
    assert bloated["churn_payload"]["sql"] == 'REINDEX INDEX CONCURRENTLY "public"."churn_payload";'

    (db,) = out
    assert db["database"] == pg_dbname  # --dsn names the database after its dbname
    for section in ("unused", "duplicate", "invalid", "bloated"):
        for finding in db[section]:
            if finding["index"] in CONSTRAINT_INDEXES:
                assert finding["sql"] is None or not finding["sql"].startswith("DROP"), finding
                assert not finding["droppable"]
    assert "drops" not in db

    done = run("--dsn", pg_dsn)  # the same as text
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for title in ("Unused (", "Duplicate (", "Invalid (", "Bloated ("):
        assert title in text
    assert 'sql:      DROP INDEX CONCURRENTLY "public"."items ""by"" note";' in text
    assert 'REINDEX INDEX CONCURRENTLY "public"."churn_payload";' in text


def test_bad_dsn_fails_cleanly_without_the_password(pg_cluster) -> None:
    done = run("--dsn", f"postgresql://nobody:s3cret-pw@127.0.0.1:{pg_cluster.port}/no_such_db", "--json")
    assert done.returncode == 1
    assert "s3cret-pw" not in done.stderr + done.stdout
    (failed,) = json.loads(done.stdout)  # the listing still names the database, with its error
    assert failed["database"] == "no_such_db" and "no_such_db" in failed["error"]
    assert "indexd: no_such_db: indexes failed: " in done.stderr and "Traceback" not in done.stderr


def _drop_config(tmp_path: Path) -> Path:
    path = tmp_path / "indexd.yaml"
    path.write_text(
        "indexing:\n"
        "  windows:\n"
        "    - days: daily\n"
        "      start: \"00:00\"\n"
        "      end: \"23:59:59\"\n"
        "  throttle:\n"
        "    max_cpu_pct: 100\n"
        "    cpu_sample: 0.1s\n"
        "    max_active_backends_pct: 100\n"
        "    max_waiting_backends: 1000\n"
        "  drop_unused:\n"
        "    enabled: true\n"
        "    unused_for: 1h\n"
        "    only_own: true\n",
        encoding="utf-8",
    )
    return path


def _own_unused_index(database: Database, pg_conn) -> None:
    migrate(database)
    with pg_conn.cursor() as cur:
        cur.execute('CREATE INDEX indexd_order_items_qty_1a2b3c4d ON "Order Items" (qty, id)')
        cur.execute(
            "INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns, index_name,"
            " create_sql) VALUES ('kept', 'fp', 'public', 'Order Items', '[\"qty\", \"id\"]',"
            " 'indexd_order_items_qty_1a2b3c4d', 'CREATE INDEX CONCURRENTLY ...')")


def _exists(pg_conn, name: str) -> bool:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (name,))
        return cur.fetchone()[0] == 1


def test_drop_unused_drops_only_our_own(pg_dsn: str, schema: None, database: Database, pg_conn,
                                        tmp_path: Path) -> None:
    _own_unused_index(database, pg_conn)
    done = run("--dsn", pg_dsn, "--json", "--drop-unused", config=_drop_config(tmp_path), hours_later=2)
    assert done.returncode == 0, done.stderr
    (db,) = json.loads(done.stdout)
    assert [(d["index"], d["outcome"]) for d in db["drops"]] == [("indexd_order_items_qty_1a2b3c4d", "dropped")]
    assert not _exists(pg_conn, "indexd_order_items_qty_1a2b3c4d")
    assert _exists(pg_conn, HOSTILE_INDEX)  # not ours: only_own
    assert all(_exists(pg_conn, name) for name in CONSTRAINT_INDEXES)
    with pg_conn.cursor() as cur:
        cur.execute("SELECT phase, outcome FROM indexd.mutation_log WHERE action = 'drop_index' ORDER BY id")
        assert cur.fetchall() == [("intent", "started"), ("outcome", "succeeded")]
        cur.execute("SELECT status FROM indexd.recommendations WHERE index_name = 'indexd_order_items_qty_1a2b3c4d'")
        assert cur.fetchone()[0] == "reverted"


def test_drop_unused_is_refused_while_paused(pg_dsn: str, schema: None, database: Database, pg_conn,
                                             tmp_path: Path) -> None:
    _own_unused_index(database, pg_conn)
    pause(database, None, "incident")
    done = run("--dsn", pg_dsn, "--drop-unused", config=_drop_config(tmp_path), hours_later=2)
    assert done.returncode == 3, done.stderr
    assert "refused: public.indexd_order_items_qty_1a2b3c4d: paused by" in done.stdout
    assert _exists(pg_conn, "indexd_order_items_qty_1a2b3c4d")


def test_drop_unused_disabled_drops_nothing(pg_dsn: str, schema: None, database: Database, pg_conn) -> None:
    _own_unused_index(database, pg_conn)
    done = run("--dsn", pg_dsn, "--drop-unused")
    assert done.returncode == 3
    assert "drop_unused.enabled is false" in done.stderr and "set it to true" in done.stderr
    assert _exists(pg_conn, "indexd_order_items_qty_1a2b3c4d")

"""A build made by `indexd apply` gets a real verdict: apply snapshots the workload right before it builds and
right after, so the statements that ran before the build are its baseline even when no capture ran before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, IndexingSettings, Settings, VerifySettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.verify import verify_built
from indexd.state.migrations import migrate
from indexd.workload.capture import take_snapshot
from tests.support.lifecycle import rec_status, run_lookups

ROOT = Path(__file__).resolve().parents[2]
LOOKUP = "SELECT * FROM items WHERE sku = %s"
NORMALISED = "SELECT * FROM items WHERE sku = $1"
INDEX = "indexd_items_sku_a1b2c3d4"


@pytest.fixture
def items(pg_conn, database: Database) -> int:
    """The table, the state schema, and an approved recommendation for an index on items (sku)."""
    migrate(database)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, sku bigint NOT NULL, note text)")
        cur.execute("INSERT INTO items SELECT g, g * 7, md5(g::text) FROM generate_series(1, 100000) g")
        cur.execute("ANALYZE items")
        cur.execute(
            "INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns, index_name,"
            " create_sql, queries, improvement_pct, write_overhead, benefit_ms_per_s) VALUES ('approved', 'items-sku',"
            " 'public', 'items', '[\"sku\"]', %s, %s, %s, 90, 1, 10) RETURNING id",
            (INDEX, f"CREATE INDEX CONCURRENTLY {INDEX} ON public.items (sku)",
             json.dumps([{"query": NORMALISED, "calls": 40}])))
        return int(cur.fetchone()[0])


def _workload(cluster: EmbeddedCluster, dbname: str, calls: int) -> None:
    run_lookups(cluster, dbname, LOOKUP, calls)


def _apply(tmp_path: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "indexd.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {dsn}\nindexing:\n  mode: approve\n"
                      "  throttle:\n    max_cpu_pct: 100\n    cpu_sample: 100ms\n    max_active_backends_pct: 100\n"
                      "logging:\n  file: null\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    return subprocess.run([sys.executable, "-m", "indexd", "--config", str(config), "apply", "--now", "--yes"],
                          capture_output=True, text=True, env=env, timeout=180, check=False, cwd=ROOT)


def _verify(database: Database) -> list:
    indexing = replace(IndexingSettings(), verify=VerifySettings(after=timedelta(0), min_calls=20))
    db_settings: DatabaseSettings = replace(database.settings, indexing=indexing)
    return verify_built(database, Settings(), db_settings, now=utcnow() + timedelta(seconds=1))


def _snapshots(pg_conn) -> int:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM indexd.snapshots")
        return int(cur.fetchone()[0])


def test_statements_that_ran_before_apply_are_the_baseline(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn,
                                                           database: Database, items: int, tmp_path: Path) -> None:
    _workload(pg_cluster, pg_dbname, 40)  # no capture ran: no snapshot exists yet
    assert _snapshots(pg_conn) == 0
    run = _apply(tmp_path, pg_cluster.dsn(pg_dbname))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"built    public.{INDEX}" in run.stdout
    assert _snapshots(pg_conn) == 2  # right before the build, right after it
    _workload(pg_cluster, pg_dbname, 40)
    take_snapshot(database)  # what the daemon's capture job does
    (record,) = _verify(database)
    assert record.verdict == "kept", record.reasons
    assert record.evidence["baseline"].startswith("since the statistics reset")
    assert record.evidence["statements"][0]["calls_before"] == 40
    assert rec_status(pg_conn, items) == "kept"


def test_inconclusive_only_when_the_statements_truly_did_not_run_before(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                                        pg_conn, database: Database, items: int,
                                                                        tmp_path: Path) -> None:
    run = _apply(tmp_path, pg_cluster.dsn(pg_dbname))
    assert run.returncode == 0, run.stdout + run.stderr
    _workload(pg_cluster, pg_dbname, 40)
    take_snapshot(database)
    (record,) = _verify(database)
    assert record.verdict == "inconclusive" and "no baseline" in record.reasons[0]

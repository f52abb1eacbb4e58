"""indexd against a real hot standby (pg_basebackup -R of a primary, streaming): advice works read-only (HypoPG's
hypothetical indexes live in the backend), nothing is written or built there, and an index only the standby
scans is never "unused" on the primary once the standby is listed in databases[].replicas."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest

from indexd.cli import main
from indexd.clock import utcnow
from indexd.config.schema import DatabaseSettings, DropUnusedSettings, IndexingSettings, Settings, ThrottleSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.lifecycle.health import report
from indexd.lifecycle.unused import drop_unused
from indexd.service.jobs import JobRunner
from indexd.service.runtime import DatabaseRuntime, Runtime
from indexd.state.migrations import migrate
from tests.support.cluster import new_database

DBNAME = "shop"
REPLAY_TIMEOUT_S = 30.0
OWN_INDEX = "indexd_orders_status_1a2b3c4d"


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[EmbeddedCluster, EmbeddedCluster]]:
    """A primary with a small shop, and its streaming hot standby (each on its own loopback port)."""
    primary = EmbeddedCluster().start()
    standby = None
    try:
        new_database(primary, DBNAME)
        conn = primary.connect(DBNAME)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status int NOT "
                        "NULL, total int)")
            cur.execute("INSERT INTO orders SELECT g, g % 5000, g % 97, g % 700 FROM generate_series(1, 50000) g")
            cur.execute("ANALYZE orders")
        conn.close()
        standby = primary.make_standby()
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def caught_up(primary: EmbeddedCluster, standby: EmbeddedCluster) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    (lsn,) = primary.fetch("SELECT pg_current_wal_lsn()::text")[0]
    deadline = time.monotonic() + REPLAY_TIMEOUT_S
    while time.monotonic() < deadline:
        (done,) = standby.fetch("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", params=(lsn,))[0]
        if done:
            return
        time.sleep(0.05)
    raise AssertionError(f"the standby did not replay up to {lsn} in {REPLAY_TIMEOUT_S:.0f}s")


def run_on(capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "indexd.yaml"
    path.write_text(config, encoding="utf-8")
    code = main([*args, "--config", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def config_for(dsn: str, tmp_path: Path, mode: str = "advise") -> str:
    return (f"databases:\n  - name: main\n    dsn: {dsn}\nindexing:\n  mode: {mode}\n  min_calls: 1\n"
            "  windows:\n    - days: daily\n      start: \"00:00\"\n      end: \"23:59:59\"\n"
            f"backups:\n  dir: {tmp_path / 'backups'}\nlogging:\n  file: null\nhttp:\n  enabled: false\n")


def standby_workload(standby: EmbeddedCluster) -> None:
    conn = standby.connect(DBNAME)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_statements_reset()")
        for n in range(1, 31):
            cur.execute("SELECT id, total FROM orders WHERE customer_id = %s", (n * 13,))
    conn.close()


def test_recommend_on_a_standby_advises_and_stores_nothing(clusters: tuple[EmbeddedCluster, EmbeddedCluster],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    primary, standby = clusters
    caught_up(primary, standby)
    standby_workload(standby)
    code, out, err = run_on(capsys, tmp_path, config_for(standby.dsn(DBNAME), tmp_path), "recommend", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [(r["table"], r["columns"]) for r in doc["recommendations"]] == [("public.orders", ["customer_id"])]
    assert "id" not in doc["recommendations"][0]  # not stored, so no id
    assert "advice not stored: standby: read-only" in err and "Traceback" not in err
    assert primary.fetch("SELECT to_regnamespace('indexd')", DBNAME) == [(None,)]  # no migration anywhere

    code, out, err = run_on(capsys, tmp_path, config_for(standby.dsn(DBNAME), tmp_path), "check")
    assert code == 0, out + err
    assert "server role: standby" in out


def test_mutations_refuse_on_a_standby(clusters: tuple[EmbeddedCluster, EmbeddedCluster], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    primary, standby = clusters
    db = Database(DatabaseSettings(name="main", dsn=primary.dsn(DBNAME)))
    try:
        migrate(db)  # on the primary, where it belongs; it reaches the standby by replication
    finally:
        db.close()
    primary.execute("INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns,"
                    " index_name, create_sql) VALUES ('approved', 'fp-standby', 'public', 'orders', '[\"total\"]',"
                    " 'indexd_orders_total_0badf00d', 'CREATE INDEX CONCURRENTLY indexd_orders_total_0badf00d"
                    " ON public.orders (total)')", DBNAME)
    caught_up(primary, standby)
    config = config_for(standby.dsn(DBNAME), tmp_path, mode="auto")

    code, out, err = run_on(capsys, tmp_path, config, "apply", "--yes", "--now")
    assert code == 3, out + err
    assert "indexd: main: apply refused: apply on main: standby: read-only" in err
    for command in (["approve", "1"], ["pause"]):
        code, _, err = run_on(capsys, tmp_path, config, *command)
        assert code == 3 and "standby: read-only" in err, (command, err)
    code, out, err = run_on(capsys, tmp_path, config, "migrate")
    assert code == 0 and "standby: read-only, replicated from the primary" in out, err
    code, out, err = run_on(capsys, tmp_path, config, "status", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["server"]["role"] == "standby"
    assert primary.fetch("SELECT count(*) FROM pg_indexes WHERE indexname = 'indexd_orders_total_0badf00d'",
                         DBNAME) == [(0,)]


def test_the_daemon_on_a_standby_advises_and_backs_up_but_never_mutates(
        clusters: tuple[EmbeddedCluster, EmbeddedCluster], tmp_path: Path) -> None:
    primary, standby = clusters
    caught_up(primary, standby)
    standby_workload(standby)
    target = DatabaseSettings(name="main", dsn=standby.dsn(DBNAME),
                              indexing=IndexingSettings(mode="auto", min_calls=1))
    settings = Settings(databases=(target,))
    settings = replace(settings, backups=replace(settings.backups, dir=str(tmp_path / "backups")))
    target = replace(target, backups=settings.backups)
    runtime = Runtime(replace(settings, databases=(target,)))
    runtime.databases["main"] = DatabaseRuntime(target, Database(target))
    runner = JobRunner(runtime)
    try:
        outcomes = {job: runner.run(job, "main") for job in ("capture", "advise", "apply", "verify", "backup")}
    finally:
        runtime.databases["main"].db.close()
    assert runtime.databases["main"].standby
    assert outcomes["capture"].outcome == "skipped" and "standby: read-only" in outcomes["capture"].message
    assert outcomes["advise"].outcome == "ok" and "not stored (standby: read-only)" in outcomes["advise"].message
    assert "CREATE INDEX CONCURRENTLY" in outcomes["advise"].message
    for job in ("apply", "verify"):
        assert outcomes[job].outcome == "skipped" and "standby: read-only" in outcomes[job].message, job
    assert outcomes["backup"].outcome == "ok", outcomes["backup"].message


def _drop_settings(replicas: tuple[str, ...], dsn: str) -> DatabaseSettings:
    indexing = IndexingSettings(
        drop_unused=DropUnusedSettings(enabled=True, unused_for=timedelta(hours=1)),
        throttle=ThrottleSettings(max_cpu_pct=100, cpu_sample=timedelta(seconds=0.1), max_active_backends_pct=100,
                                  max_waiting_backends=1000),
        windows=())
    return DatabaseSettings(name="main", dsn=dsn, indexing=indexing, replicas=replicas)


def _unused(db: Database, target: DatabaseSettings, later: object) -> dict[str, bool]:
    found = report(db, Settings(databases=(target,)), target, now=later)  # type: ignore[arg-type]
    return {f.index: f.droppable for f in found.unused}


def test_an_index_only_the_standby_scans_is_never_unused(clusters: tuple[EmbeddedCluster, EmbeddedCluster]) -> None:
    primary, standby = clusters
    migrate_db = Database(DatabaseSettings(name="main", dsn=primary.dsn(DBNAME)))
    try:
        migrate(migrate_db)
    finally:
        migrate_db.close()
    primary.execute(f"CREATE INDEX {OWN_INDEX} ON orders (status)", DBNAME)
    primary.execute("INSERT INTO indexd.recommendations (status, fingerprint, table_schema, table_name, columns,"
                    f" index_name, create_sql) VALUES ('kept', 'fp-status', 'public', 'orders', '[\"status\"]',"
                    f" '{OWN_INDEX}', 'CREATE INDEX CONCURRENTLY ...')", DBNAME)
    caught_up(primary, standby)
    later = utcnow() + timedelta(hours=2)
    listed = _drop_settings((standby.dsn(DBNAME),), primary.dsn(DBNAME))
    unlisted = _drop_settings((), primary.dsn(DBNAME))

    db = Database(listed)
    try:
        # Unscanned anywhere: with the standby listed (and read) it is droppable; unlisted, the standby forbids it.
        assert _unused(db, listed, later)[OWN_INDEX] is True
        assert _unused(db, unlisted, later)[OWN_INDEX] is False
        # Now a read replica's query uses it: on the primary it still shows 0 scans.
        conn = psycopg2.connect(standby.dsn(DBNAME))
        with conn.cursor() as cur:
            cur.execute("SET enable_seqscan = off")
            cur.execute("SELECT count(*) FROM orders WHERE status = 3")
            cur.execute("EXPLAIN SELECT count(*) FROM orders WHERE status = 3")
            assert OWN_INDEX in " ".join(r[0] for r in cur.fetchall())
        conn.close()  # a backend's counters reach the shared statistics by the time it exits
        deadline = time.monotonic() + 10
        while OWN_INDEX in _unused(db, listed, later) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert primary.fetch(f"SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = '{OWN_INDEX}'",
                             DBNAME) == [(0,)]
        assert OWN_INDEX not in _unused(db, listed, later)
        found = report(db, Settings(databases=(listed,)), listed, now=later)
        dropped = drop_unused(db, Settings(databases=(listed,)), listed, found, now=later)
        assert [d for d in dropped if d.index == OWN_INDEX] == []
        assert primary.fetch(f"SELECT count(*) FROM pg_class WHERE relname = '{OWN_INDEX}'", DBNAME) == [(1,)]
        # A listed replica that cannot be read leaves nothing droppable.
        broken = replace(listed, replicas=("postgresql://postgres@127.0.0.1:1/shop",))
        assert all(not droppable for droppable in _unused(db, broken, later).values())
    finally:
        db.close()

"""Test restores as a least-privilege role (no superuser): with CREATEDB the backup is restored without what only
a superuser may create (HypoPG, pg_stat_statements: named in the result); without CREATEDB the test cannot run,
says why, and the backup stays verified. The checksum's time and the test restore's are separate facts, in the
manifest, the catalog, `backup list` and `status`."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from indexd.backup.catalog import find_backup
from indexd.backup.dump import run_backup
from indexd.backup.manifest import update_manifest
from indexd.backup.scratch import test_restore
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 6, 25, tzinfo=UTC)
_n = itertools.count()


@dataclass
class Role:
    name: str
    password: str
    dsn: str


def _superuser(cluster: EmbeddedCluster, dbname: str, *statements: str) -> None:
    for statement in statements:
        cluster.execute(statement, dbname)


@pytest.fixture
def roles(pg_cluster: EmbeddedCluster, pg_dbname: str) -> Iterator[dict[str, Role]]:
    """Two login roles without superuser: `creator` may create databases (CREATEDB), `plain` may not. The
    application's table belongs to `creator`; `plain` may read it. The database has HypoPG and
    pg_stat_statements (only a superuser may create those) and pg_trgm (trusted: its owner may)."""
    n = next(_n)
    made = {kind: Role(f"lp_{kind}_{n}", f"pw-{kind}", "") for kind in ("creator", "plain")}
    for kind, role in made.items():
        extra = " CREATEDB" if kind == "creator" else ""
        _superuser(pg_cluster, pg_dbname, f"CREATE ROLE {role.name} LOGIN PASSWORD '{role.password}'{extra}",
                   f"GRANT CREATE ON DATABASE {pg_dbname} TO {role.name}")
        role.dsn = pg_cluster.dsn(pg_dbname, role.name, role.password)
    creator, plain = made["creator"].name, made["plain"].name
    _superuser(pg_cluster, pg_dbname, "CREATE EXTENSION IF NOT EXISTS pg_trgm",
               "CREATE TABLE public.orders (id int PRIMARY KEY, customer text, total numeric)",
               "INSERT INTO public.orders SELECT i, 'customer ' || i % 50, i FROM generate_series(1, 1200) i",
               "CREATE INDEX orders_customer_trgm ON public.orders USING gin (customer gin_trgm_ops)",
               f"ALTER TABLE public.orders OWNER TO {creator}", f"GRANT SELECT ON public.orders TO {plain}")
    try:
        yield made
    finally:
        names = ", ".join(r.name for r in made.values())
        _superuser(pg_cluster, pg_dbname, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN "
                                          f"('{creator}', '{plain}')", f"DROP OWNED BY {names} CASCADE")
        for role in made.values():
            _superuser(pg_cluster, "postgres", f"DROP ROLE IF EXISTS {role.name}")


def _settings(tmp_path: Path, role: Role) -> Settings:
    backups = BackupSettings(dir=str(tmp_path / "backups"))
    return Settings(databases=(DatabaseSettings(name="main", dsn=role.dsn, backups=backups),), backups=backups)


def _catalog(role: Role) -> list[tuple[Any, ...]]:
    db = Database(DatabaseSettings(name="main", dsn=role.dsn))
    try:
        return db.run(lambda c: _fetch(c, "SELECT status, verified_at, test_restore_at, test_restore_result, "
                                          "test_restore_detail FROM indexd.backups"))
    finally:
        db.close()


def _fetch(conn: Any, statement: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall()


def test_a_role_with_createdb_restores_without_the_superuser_extensions(pg_cluster: EmbeddedCluster,
                                                                        roles: dict[str, Role],
                                                                        tmp_path: Path) -> None:
    role = roles["creator"]
    db = Database(DatabaseSettings(name="main", dsn=role.dsn))
    try:
        migrate(db)  # the catalog, in the role's own state schema
    finally:
        db.close()
    settings = _settings(tmp_path, role)
    backup = run_backup(settings, settings.databases[0], now=T0)
    checksum_at = find_backup(settings, backup.id).verified_at
    when = T0 + timedelta(days=7)
    test = test_restore(settings, backup.id, now=when)
    assert test.result == "ok" and test.ok and test.status == "verified", test.detail
    assert "EXTENSION hypopg (only a superuser may create it)" in test.left_out
    assert "EXTENSION pg_stat_statements (only a superuser may create it)" in test.left_out
    assert not any("pg_trgm" in x for x in test.left_out)  # trusted: created by the scratch database's owner
    assert test.tables_compared >= 1 and "left out: EXTENSION hypopg" in test.detail
    info = find_backup(settings, backup.id)
    assert info.status == "verified" and info.verified_at == checksum_at  # the checksum's fact is untouched
    assert info.manifest["restore_test"]["result"] == "ok" and info.manifest["restore_test"]["at"] == when.isoformat()
    ((status, verified_at, tested_at, result, detail),) = _catalog(role)
    assert (status, verified_at, tested_at, result) == ("verified", checksum_at, when, "ok")
    assert "hypopg" in detail
    leftover = "SELECT count(*) FROM pg_database WHERE datname LIKE 'indexd\\_verify\\_%%'"
    assert pg_cluster.fetch(leftover)[0][0] == 0


def indexd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    return subprocess.run([sys.executable, "-m", "indexd", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=ROOT)


def test_without_createdb_the_test_restore_says_why_and_the_backup_stays_verified(roles: dict[str, Role],
                                                                                   tmp_path: Path) -> None:
    role = roles["plain"]
    config = tmp_path / "indexd.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {role.dsn}\nbackups:\n  dir: {tmp_path / 'backups'}\n"
                      "logging:\n  file: null\n")
    settings = _settings(tmp_path, role)
    backup = run_backup(settings, settings.databases[0], now=T0)
    test = test_restore(settings, backup.id)
    assert test.result == "error" and not test.ok and test.status == "verified"
    assert f"role '{role.name}' may not create databases (CREATEDB)" in test.detail
    assert f"ALTER ROLE {role.name} CREATEDB" in test.detail and "--target-dsn" in test.detail
    info = find_backup(settings, backup.id)
    assert info.status == "verified" and info.error is None
    assert info.manifest["restore_test"]["result"] == "error"

    # The command line: the checksum is fine, the test could not run (exit 1), the backup is not in question.
    run = indexd("--config", str(config), "backup", "verify", backup.id, "--restore")
    assert run.returncode == 1
    assert "checksum ok" in run.stdout and "test restore could not run" in run.stderr
    assert "stays verified" in run.stderr and "CREATEDB" in run.stderr
    (listed,) = json.loads(indexd("--config", str(config), "backup", "list", "--json").stdout)
    assert listed["status"] == "verified" and listed["checksum_verified_at"] is not None
    assert listed["test_restore_result"] == "error" and "CREATEDB" in listed["test_restore_detail"]
    human = indexd("--config", str(config), "backup", "list").stdout
    assert "checksum ok (UTC)" in human and "test restore (UTC)" in human and "error 20" in human
    assert f"test restore of {backup.id}: error: " in human

    # On a server (and as a role) that may create databases, the same backup restores: --target-dsn.
    elsewhere = roles["creator"].dsn
    again = indexd("--config", str(config), "backup", "verify", backup.id, "--restore", "--target-dsn", elsewhere)
    assert again.returncode == 0, again.stderr
    assert "test restore ok" in again.stdout
    assert find_backup(settings, backup.id).manifest["restore_test"]["result"] == "ok"


def test_rows_counted_on_both_sides_within_the_inserts_since(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                              roles: dict[str, Role], tmp_path: Path) -> None:
    """A table without a count at backup time is counted on both sides: rows inserted since explain more rows
    in the source; more rows than every insert since can explain are a data problem."""
    settings = _settings(tmp_path, roles["creator"])
    backup = run_backup(settings, settings.databases[0], now=T0)
    info = find_backup(settings, backup.id)
    info = update_manifest(info, row_counts=[r for r in info.manifest["row_counts"] if r[1] != "orders"])
    pg_cluster.execute("INSERT INTO public.orders SELECT i, 'late', i FROM generate_series(5001, 5100) i",
                       pg_dbname)
    pg_cluster.execute("SELECT pg_stat_force_next_flush()", pg_dbname)
    test = test_restore(settings, backup.id)
    assert test.result == "ok", test.detail
    assert not any(x.startswith("public.orders") for x in test.not_compared)

    # Claim the counters at backup time already held every insert made since: 100 rows are unexplained.
    counters = info.manifest["table_counters"]
    now_ins = pg_cluster.fetch("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'orders'", pg_dbname)[0][0]
    counters["tables"] = [[s, t, now_ins if t == "orders" else i, d] for s, t, i, d in counters["tables"]]
    update_manifest(find_backup(settings, backup.id), table_counters=counters)
    bad = test_restore(settings, backup.id)
    assert bad.result == "failed" and bad.status == "failed"
    assert any(m.startswith("public.orders: 1200 rows restored, but the source has 1300 now") for m in bad.mismatches)

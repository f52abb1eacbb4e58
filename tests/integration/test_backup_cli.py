"""The backup commands and the operator scripts, run as processes against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from indexd.backup.catalog import list_backups
from indexd.backup.dump import run_backup
from indexd.config.load import load_settings
from indexd.embedded import EmbeddedCluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any, tmp_path: Path) -> Path:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 500) i")
    path = tmp_path / "indexd.yaml"
    path.write_text(
        "databases:\n"
        f"  - name: main\n    dsn: {pg_cluster.dsn(pg_dbname)}\n"
        f"  - name: broken\n    dsn: postgresql://postgres@127.0.0.1:{pg_cluster.port}/no_such_database\n"
        f"backups:\n  dir: {tmp_path / 'backups'}\n  retention:\n    keep_last: 1\n    keep_days: 0s\n"
        "logging:\n  file: null\n"
    )
    return path


def indexd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    return subprocess.run([sys.executable, "-m", "indexd", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=120, check=False, cwd=ROOT)


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an operator script with no terminal on stdin, pointing it at this interpreter's indexd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    env["INDEXD_BIN"] = str(Path(sys.executable).with_name("indexd"))
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120, check=False, cwd=ROOT)


def test_run_list_verify(config: Path, pg_cluster: EmbeddedCluster) -> None:
    run = indexd("--config", str(config), "backup", "run")
    assert run.returncode == 1, run.stderr  # 'broken' fails ...
    assert "main: backup main-" in run.stdout and "verified" in run.stdout  # ... 'main' is still backed up
    assert "indexd: broken: backup failed: " in run.stderr and "no_such_database" in run.stderr
    assert len([line for line in run.stderr.splitlines() if "broken" in line]) == 1, run.stderr  # once, one line
    listed = json.loads(indexd("--config", str(config), "backup", "list", "--json").stdout)
    assert [(b["database"], b["status"], b["policy"]) for b in listed] == [("main", "verified", "keep")]
    backup_id = listed[0]["id"]

    human = indexd("--config", str(config), "backup", "list")
    # Lower-case headers, as every other table of the command line.
    assert backup_id in human.stdout and human.stdout.startswith("id ") and " policy" in human.stdout

    verified = indexd("--config", str(config), "backup", "verify", backup_id, "--restore")
    assert verified.returncode == 0, verified.stderr
    assert "checksum ok" in verified.stdout and "test restore ok" in verified.stdout

    wrong = indexd("--config", str(config), "backup", "verify", backup_id, "--database", "broken")
    assert wrong.returncode == 2 and f"backup {backup_id} belongs to 'main', not 'broken'" in wrong.stderr


def test_verify_restore_of_a_database_not_configured_names_its_own_option(config: Path, tmp_path: Path,
                                                                          pg_cluster: EmbeddedCluster) -> None:
    """The backup's database left the configuration: --target-dsn (as for restore) or --dsn says where to
    test-restore it, and the error says so."""
    settings = load_settings(str(config))
    backup_id = run_backup(settings, settings.database("main")).id
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"databases: []\nbackups:\n  dir: {tmp_path / 'backups'}\nlogging:\n  file: null\n")
    refused = indexd("--config", str(bare), "backup", "verify", backup_id, "--restore")
    assert refused.returncode == 2, refused.stderr
    assert "pass --target-dsn DSN (or --dsn) to say which server to test-restore it on" in refused.stderr
    assert "checksum ok" not in refused.stdout  # refused before doing anything
    elsewhere = indexd("--config", str(bare), "backup", "verify", backup_id, "--restore",
                       "--dsn", pg_cluster.dsn("postgres"))
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "test restore ok" in elsewhere.stdout
    target = indexd("--config", str(bare), "backup", "verify", backup_id, "--restore",
                    "--target-dsn", pg_cluster.dsn("postgres"))
    assert target.returncode == 0, target.stderr
    assert "test restore ok" in target.stdout



def test_prune(config: Path) -> None:
    settings = load_settings(str(config))
    main = settings.database("main")
    old, new = (run_backup(settings, main, now=datetime(2026, 1, d, tzinfo=UTC)).id for d in (1, 2))
    dry = json.loads(indexd("--config", str(config), "backup", "prune", "--database", "main", "--dry-run",
                            "--json").stdout)
    (listed,) = dry
    assert listed["database"] == "main" and listed["dry_run"] is True
    assert {r["id"]: r["action"] for r in listed["backups"]} == {old: "delete", new: "keep"}
    pruned = indexd("--config", str(config), "backup", "prune", "--database", "main")
    assert pruned.returncode == 0 and "1 kept, 1 deleted" in pruned.stdout
    assert [b.id for b in list_backups(settings)] == [new]


def test_restore_without_tty_or_yes_exits_2(config: Path, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    settings = load_settings(str(config))
    backup_id = run_backup(settings, settings.database("main")).id
    refused = indexd("--config", str(config), "restore", backup_id, "--target-db", pg_dbname, stdin="yes\n")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    unknown = indexd("--config", str(config), "restore", "main-nope", "--target-db", "x")
    assert unknown.returncode == 2 and "no backup 'main-nope'" in unknown.stderr


def test_scripts(config: Path, pg_cluster: EmbeddedCluster, pg_dbname: str) -> None:
    helped = script("backup.sh", "-h")
    assert helped.returncode == 0 and "usage: backup.sh" in helped.stdout
    assert script("backup.sh", "-x").returncode == 2
    took = script("backup.sh", "-c", str(config), "-d", "main", "-p", "-n")
    assert took.returncode == 0, took.stderr
    assert "main: backup main-" in took.stdout and "would delete" in took.stdout
    backup_id = json.loads(indexd("--config", str(config), "backup", "list", "--json").stdout)[0]["id"]

    assert "usage: restore.sh" in script("restore.sh", "-h").stdout
    assert script("restore.sh", "only-one-argument").returncode == 2
    refused = script("restore.sh", "-c", str(config), backup_id, pg_dbname)
    assert refused.returncode == 2 and "no terminal" in refused.stderr
    target = f"{pg_dbname}_from_script"
    try:
        done = script("restore.sh", "-c", str(config), "-y", backup_id, target)
        assert done.returncode == 0, done.stderr
        assert f"restored {backup_id} into {target}" in done.stdout
        assert pg_cluster.fetch("SELECT count(*) FROM t", target)[0][0] == 500
    finally:
        pg_cluster.drop_database(target)


def test_an_unreachable_server_is_one_line_without_libpq_hints(tmp_path: Path) -> None:
    path = tmp_path / "down.yaml"
    path.write_text("databases:\n  - name: down\n    dsn: postgresql://postgres:s3cret@127.0.0.1:1/app\n"
                    f"backups:\n  dir: {tmp_path / 'backups'}\nlogging:\n  file: null\n"
                    "retry:\n  attempts: 1\n")
    run = indexd("--config", str(path), "backup", "run")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
    assert run.stderr.startswith("indexd: down: backup failed: ") and "Connection refused" in run.stderr
    assert "Is the server running" not in run.stderr and "s3cret" not in run.stderr

"""The password of a backup's connection is never on a command line (ps), in an environment variable, a log
line, a manifest or an error message."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from psycopg2 import sql

from indexd.backup.dump import run_backup
from indexd.backup.restore import restore
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.embedded import EmbeddedCluster
from indexd.errors import BackupError

PASSWORD = "s3cr:et@pw\\x"  # ':' and '\\' must be escaped in a passfile


@pytest.fixture
def role(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any):  # type: ignore[no-untyped-def]
    name = f"bk_{os.getpid()}"
    with pg_conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD %s").format(sql.Identifier(name)), (PASSWORD,))
        cur.execute("DROP EXTENSION IF EXISTS hypopg; DROP EXTENSION IF EXISTS pg_stat_statements")
        cur.execute(sql.SQL("CREATE TABLE t (id int, v text)"))
        cur.execute("INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i")
        cur.execute(sql.SQL("ALTER TABLE t OWNER TO {}").format(sql.Identifier(name)))
    yield name
    for db in ("secret_restore",):
        pg_cluster.drop_database(db)
    pg_cluster.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)), dbname=pg_dbname)
    pg_cluster.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _slow_pg_dump(tmp_path: Path) -> Path:
    real = shutil.which("pg_dump")
    stub = tmp_path / "pg_dump"
    stub.write_text(f'#!/bin/sh\nsleep 1\nexec {real} "$@"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return stub


def _watch_children(done: threading.Event) -> list[tuple[str, str]]:
    """(cmdline, environ) of every descendant process seen while `done` is not set."""
    seen: list[tuple[str, str]] = []
    me = psutil.Process()
    while not done.is_set():
        for child in me.children(recursive=True):
            try:
                cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = Path(f"/proc/{child.pid}/environ").read_bytes().replace(b"\0", b"\n").decode()
            except OSError:
                continue
            seen.append((cmdline, environ))
        time.sleep(0.02)
    return seen


def test_password_never_visible(pg_cluster: EmbeddedCluster, pg_dbname: str, role: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("INDEXD_PG_DUMP", str(_slow_pg_dump(tmp_path)))
    dsn = pg_cluster.dsn(pg_dbname, user=role, password=PASSWORD)
    backups = BackupSettings(dir=str(tmp_path / "backups"))
    config = tmp_path / "indexd.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {dsn}\n")
    settings = Settings(databases=(DatabaseSettings(name="main", dsn=dsn, backups=backups),), backups=backups,
                        source=str(config))
    done = threading.Event()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: (results.append(run_backup(settings, settings.databases[0])),
                                              done.set()))
    worker.start()
    try:
        seen = _watch_children(done)
    finally:
        done.set()
        worker.join(30)
    assert results and results[0].verified
    dumps = [(c, e) for c, e in seen if "pg_dump" in c]
    assert dumps, "never saw the running pg_dump"
    for cmdline, environ in seen:
        assert PASSWORD not in cmdline and "s3cr" not in cmdline
        assert "s3cr" not in environ and "PGPASSWORD=" not in environ
    assert any("PGPASSFILE=" in e for _, e in dumps)
    assert "s3cr" not in caplog.text
    manifest = results[0].manifest_path.read_text()
    assert "s3cr" not in manifest and "***" in manifest
    # The temporary passfile pg_dump was given is gone once pg_dump has finished.
    passfiles = {line.split("=", 1)[1] for _, e in dumps for line in e.splitlines() if line.startswith("PGPASSFILE=")}
    assert passfiles and not any(Path(p).exists() for p in passfiles)

    restore(settings, results[0].id, "secret_restore")
    assert pg_cluster.fetch("SELECT count(*) FROM t", "secret_restore")[0][0] == 100


def test_wrong_password_error_shows_no_password(pg_cluster: EmbeddedCluster, pg_dbname: str, role: str,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = pg_cluster.dsn(pg_dbname, user=role, password="wrong-" + PASSWORD)
    backups = BackupSettings(dir=str(tmp_path / "backups"))
    settings = Settings(databases=(DatabaseSettings(name="main", dsn=dsn, backups=backups),), backups=backups)
    with pytest.raises(BackupError) as info:
        run_backup(settings, settings.databases[0], now=datetime(2026, 1, 1, tzinfo=UTC))
    assert "s3cr" not in str(info.value) and "s3cr" not in caplog.text
    assert "password authentication failed" in str(info.value)

"""Backups under faults: pg_dump dying halfway, hanging, cancelled; a full disk; leftovers of a crash."""

from __future__ import annotations

import contextlib
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from indexd.backup import verify
from indexd.backup.catalog import backup_readings, list_backups, scan
from indexd.backup.dump import run_backup
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.embedded import EmbeddedCluster
from indexd.errors import BackupError

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _settings(backup_dir: Path, dsn: str, **kw: Any) -> Settings:
    backups = BackupSettings(dir=str(backup_dir), **kw)
    return Settings(databases=(DatabaseSettings(name="main", dsn=dsn, backups=backups),), backups=backups)


def _stub(tmp_path: Path, body: str) -> str:
    """A pg_dump stand-in: finds its --file= argument, then runs `body`."""
    path = tmp_path / "pg_dump"
    path.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --file=*) out="${a#--file=}";; esac; done\n'
        f"{body}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name not in
                  (".lock", ".failures.jsonl"))


@pytest.fixture
def one_good(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any, tmp_path: Path) -> tuple[Settings, str]:
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t AS SELECT i FROM generate_series(1, 1000) i")
    settings = _settings(tmp_path / "backups", pg_cluster.dsn(pg_dbname))
    return settings, run_backup(settings, settings.databases[0], now=T0).id


def test_pg_dump_failing_halfway_lists_nothing(one_good: tuple[Settings, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings, good = one_good
    monkeypatch.setenv("INDEXD_PG_DUMP", _stub(tmp_path, 'head -c 50000 /dev/urandom > "$out"\n'
                                                         'echo "pg_dump: error: simulated crash" >&2; exit 1'))
    with pytest.raises(BackupError, match="simulated crash"):
        run_backup(settings, settings.databases[0], now=T0 + timedelta(hours=6))
    folder = tmp_path / "backups" / "main"
    assert [b.id for b in list_backups(settings)] == [good]
    assert _hidden(folder) == []  # the partial file is gone
    assert verify.verify_backup(tmp_path / "backups", good).ok  # the older backup is intact
    readings = backup_readings(settings)["main"]
    assert readings.failures == 1 and readings.consecutive_failures == 1 and readings.backups == 1


def test_hanging_pg_dump_is_killed_at_the_timeout(one_good: tuple[Settings, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settings, good = one_good
    monkeypatch.setenv("INDEXD_PG_DUMP", _stub(tmp_path, 'echo half > "$out"; sleep 60'))
    db = settings.databases[0]
    from dataclasses import replace

    db = replace(db, backups=replace(db.backups, timeout=timedelta(seconds=1)))
    started = time.monotonic()
    with pytest.raises(BackupError, match="timed out"):
        run_backup(settings, db, now=T0 + timedelta(hours=6))
    assert time.monotonic() - started < 10
    assert [b.id for b in list_backups(settings)] == [good]
    assert _hidden(tmp_path / "backups" / "main") == []


def test_cancel_stops_a_running_backup(one_good: tuple[Settings, str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings, good = one_good
    monkeypatch.setenv("INDEXD_PG_DUMP", _stub(tmp_path, 'echo half > "$out"; sleep 60'))
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(BackupError, match="cancelled"):
        run_backup(settings, settings.databases[0], now=T0 + timedelta(hours=6), cancel=cancel)
    assert [b.id for b in list_backups(settings)] == [good]


def test_leftovers_of_a_crash_are_cleaned_by_the_next_run(one_good: tuple[Settings, str], tmp_path: Path) -> None:
    settings, good = one_good
    folder = tmp_path / "backups" / "main"
    (folder / ".main-20261123T000000Z.partial").write_bytes(b"half")
    (folder / "main-20261122T000000Z.dump").write_bytes(b"renamed, but no manifest")
    assert {b.status for b in scan(folder)} == {"verified", "partial"}
    assert [b.id for b in list_backups(settings)] == [good]  # leftovers are never listed
    run_backup(settings, settings.databases[0], now=T0 + timedelta(hours=6))
    assert _hidden(folder) == []
    assert not (folder / "main-20261122T000000Z.dump").exists()
    assert len(list_backups(settings)) == 2


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_free_space_check_refuses_before_dumping(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                 tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "small") as small:
        settings = _settings(small, pg_cluster.dsn(pg_dbname))
        with pytest.raises(BackupError, match=r"not enough free space .* need about .* free_space_factor 1.2"):
            run_backup(settings, settings.databases[0], now=T0)
        assert list_backups(settings) == []


def test_disk_full_during_the_dump(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
                                   tmp_path: Path) -> None:
    with pg_conn.cursor() as cur:  # about 2 MB of incompressible text, dumped uncompressed
        cur.execute("CREATE TABLE noise AS SELECT md5(random()::text) || md5(random()::text) AS h "
                    "FROM generate_series(1, 40000)")
    with tiny_tmpfs(tmp_path / "small") as small:
        settings = _settings(small, pg_cluster.dsn(pg_dbname), compression=0, free_space_factor=0.0)
        with pytest.raises(BackupError, match="disk full") as info:
            run_backup(settings, settings.databases[0], now=T0)
        assert "No space left on device" in str(info.value)
        assert list_backups(settings) == []
        assert _hidden(small / "main") == []
        assert shutil.disk_usage(small).used < 256 * 1024  # nothing half-written left behind


def test_a_dump_with_a_damaged_manifest_is_never_taken_for_a_leftover(one_good: tuple[Settings, str],
                                                                      tmp_path: Path) -> None:
    settings, good = one_good
    folder = tmp_path / "backups" / "main"
    (folder / f"{good}.manifest.json").write_text("{damaged")
    run_backup(settings, settings.databases[0], now=T0 + timedelta(hours=6))
    assert (folder / f"{good}.dump").exists()


def test_unreadable_dump_is_listed_as_failed_and_the_run_fails(one_good: tuple[Settings, str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings, good = one_good
    stub = tmp_path / "pg_restore"
    stub.write_text("#!/bin/sh\necho 'pg_restore: error: could not read input file: end of file' >&2\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("INDEXD_PG_RESTORE", str(stub))
    with pytest.raises(BackupError, match="failed verification.*end of file"):
        run_backup(settings, settings.databases[0], now=T0 + timedelta(hours=6))
    statuses = {b.id: b.status for b in list_backups(settings)}
    assert statuses[good] == "verified" and sorted(statuses.values()) == ["failed", "verified"]
    assert backup_readings(settings)["main"].consecutive_failures == 1

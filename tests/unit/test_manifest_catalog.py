"""The catalog on disk: what a folder of dumps and manifests means, without any database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from indexd.backup.catalog import (
    backup_readings,
    failures,
    find_backup,
    list_backups,
    record_failure,
    scan,
)
from indexd.backup.manifest import backup_id, write_json_atomic
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.errors import UsageError

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _settings(root: Path) -> Settings:
    backups = BackupSettings(dir=str(root))
    return Settings(databases=(DatabaseSettings(name="main", dsn="host=x dbname=y", backups=backups),),
                    backups=backups)


def _backup(folder: Path, at: datetime, status: str = "verified", duration: float = 2.5) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    bid = backup_id("main", at)
    (folder / f"{bid}.dump").write_bytes(b"data")
    write_json_atomic(folder / f"{bid}.manifest.json", {
        "id": bid, "database": "main", "status": status, "format": "custom", "started_at": at.isoformat(),
        "finished_at": (at + timedelta(seconds=duration)).isoformat(), "size_bytes": 4, "duration_s": duration,
        "verified_at": at.isoformat() if status == "verified" else None,
    })
    return bid


def test_scan_sees_manifests_and_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "main"
    good = _backup(folder, T0)
    (folder / ".main-20261123T070000Z.partial").write_bytes(b"half")
    (folder / "main-20261123T080000Z.dump").write_bytes(b"no manifest")
    (folder / ".lock").write_bytes(b"")
    found = {b.id: b.status for b in scan(folder)}
    assert found == {good: "verified", "main-20261123T070000Z": "partial", "main-20261123T080000Z": "partial"}
    assert [b.id for b in scan(folder, leftovers=False)] == [good]


def test_damaged_manifest_protects_its_dump(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "main"
    bid = _backup(folder, T0)
    (folder / f"{bid}.manifest.json").write_text("{oops")
    assert scan(folder) == []
    assert "unreadable backup manifest" in caplog.text


def test_list_and_find_need_only_the_disk(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ids = [_backup(tmp_path / "main", T0 + timedelta(hours=h)) for h in (6, 0)]
    _backup(tmp_path / "other", T0)  # a database no longer in the configuration is still listed
    assert [b.id for b in list_backups(settings, "main")] == sorted(ids)
    assert len(list_backups(settings)) == 3
    assert find_backup(settings, ids[0]).started_at == T0 + timedelta(hours=6)
    with pytest.raises(UsageError, match="backup list"):
        find_backup(settings, "main-19990101T000000Z")


def test_readings_from_manifests_and_the_failure_log(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    folder = tmp_path / "main"
    _backup(folder, T0, duration=4.0)
    _backup(folder, T0 + timedelta(hours=6), duration=3.0)
    record_failure(folder, "main-x", T0 + timedelta(hours=1), "early failure, before the last success")
    record_failure(folder, "main-y", T0 + timedelta(hours=12), "password=hunter2 failed")
    _backup(folder, T0 + timedelta(hours=18), status="failed")
    reading = backup_readings(settings)["main"]
    assert reading.last_success == T0 + timedelta(hours=6, seconds=3)
    assert reading.last_duration_s == 3.0 and reading.last_size_bytes == 4 and reading.backups == 2
    assert reading.failures == 3 and reading.consecutive_failures == 2
    assert "hunter2" not in (folder / ".failures.jsonl").read_text()


def test_failure_log_keeps_the_last_hundred(tmp_path: Path) -> None:
    for i in range(130):
        record_failure(tmp_path, f"main-{i}", T0, "x")
    kept = failures(tmp_path)
    assert len(kept) == 100 and kept[-1]["id"] == "main-129" and kept[0]["id"] == "main-30"


def test_readings_of_a_database_without_backups(tmp_path: Path) -> None:
    reading = backup_readings(_settings(tmp_path))["main"]
    assert reading.last_success is None and reading.backups == 0 and reading.failures == 0

"""Manifests, checksums and the private, atomic way they are written."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from indexd.backup.manifest import (
    backup_id,
    check_name,
    checksum_files,
    read_manifest,
    redact_config_text,
    update_manifest,
    write_json_atomic,
)
from indexd.errors import BackupError
from indexd.private import ensure_private_dir


def test_backup_id_is_utc_and_sortable() -> None:
    at = datetime(2026, 11, 23, 6, 25, 0, tzinfo=UTC)
    assert backup_id("main", at) == "main-20261123T062500Z"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_bad_folder_names_are_refused(name: str) -> None:
    with pytest.raises(BackupError):
        check_name(name)


def test_hostile_but_valid_names_pass() -> None:
    assert check_name('we"ird db') == 'we"ird db'


def test_checksum_of_a_file(tmp_path: Path) -> None:
    f = tmp_path / "x.dump"
    f.write_bytes(b"hello")
    digest, files = checksum_files(f)
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert files == [{"name": "x.dump", "size": 5, "sha256": digest}]


def test_checksum_of_a_directory_changes_with_any_file(tmp_path: Path) -> None:
    d = tmp_path / "x.dir"
    d.mkdir()
    (d / "toc.dat").write_bytes(b"toc")
    (d / "3001.dat.gz").write_bytes(b"data")
    first, files = checksum_files(d)
    assert [f["name"] for f in files] == ["3001.dat.gz", "toc.dat"]
    (d / "3001.dat.gz").write_bytes(b"datA")
    assert checksum_files(d)[0] != first
    (d / "3001.dat.gz").write_bytes(b"data")
    assert checksum_files(d)[0] == first
    (d / "extra").write_bytes(b"")
    assert checksum_files(d)[0] != first


def test_atomic_json_is_private_and_complete(tmp_path: Path) -> None:
    folder = ensure_private_dir(tmp_path / "b" / "main")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    target = folder / "m.manifest.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["m.manifest.json"]


def test_private_dir_tightens_existing_permissions(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    ensure_private_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_read_and_update_manifest(tmp_path: Path) -> None:
    path = tmp_path / "main-20261123T062500Z.manifest.json"
    write_json_atomic(path, {"id": "main-20261123T062500Z", "database": "main", "format": "directory",
                             "status": "completed", "started_at": "2026-11-23T06:25:00+00:00", "size_bytes": 9})
    info = read_manifest(path)
    assert info.path == tmp_path / "main-20261123T062500Z.dir"
    assert info.started_at == datetime(2026, 11, 23, 6, 25, tzinfo=UTC)
    when = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    updated = update_manifest(info, status="verified", verified_at=when)
    assert updated.status == "verified" and updated.verified_at == when
    assert read_manifest(path).verified_at == when


def test_unreadable_manifest_is_a_backup_error(tmp_path: Path) -> None:
    path = tmp_path / "x.manifest.json"
    path.write_text("{not json")
    with pytest.raises(BackupError, match="unreadable"):
        read_manifest(path)


def test_config_copy_is_redacted() -> None:
    text = (
        "databases:\n  - name: main\n    dsn: postgresql://app:hunter2@db:5432/app\n"
        "    password: hunter3\nhttp:\n  token: abc123\n  other_dsn: host=x password=hunter4\n"
    )
    redacted = redact_config_text(text)
    for secret in ("hunter2", "hunter3", "abc123", "hunter4"):
        assert secret not in redacted
    assert "name: main" in redacted

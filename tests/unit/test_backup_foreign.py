"""Hostile manifests: a manifest indexd did not write as it stands is foreign. Prune, list, verify and restore
never follow it out of the database's backup folder, never follow a symbolic link, and delete nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from indexd.backup import catalog
from indexd.backup.catalog import find_backup, list_backups, prune, scan
from indexd.backup.manifest import FOREIGN, backup_id, write_json_atomic
from indexd.backup.restore import restore
from indexd.backup.scratch import test_restore
from indexd.backup.verify import find_in_dir, verify_backup
from indexd.cli import main
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.errors import BackupError

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=400)
OLD_ID = backup_id("main", OLD)


@pytest.fixture(autouse=True)
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Catalog rows prune would write (the catalog mirror lives in a database, outside these tests)."""
    rows: list[tuple[str, str | None]] = []
    monkeypatch.setattr(catalog, "record_in_catalog", lambda db, info, status=None: rows.append((info.id, status)))
    return rows


class Scene:
    """A backups dir with one good backup of `main`, and a decoy folder beside it that must survive."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "backups"
        self.folder = self.root / "main"
        self.folder.mkdir(parents=True)
        self.decoy = tmp / "decoy"
        (self.decoy / "victim.dir").mkdir(parents=True)
        (self.decoy / "victim.dump").write_bytes(b"precious")
        (self.decoy / "victim.dir" / "toc.dat").write_bytes(b"precious")
        (tmp / "decoy-20200101T000000Z.dump").write_bytes(b"precious")
        self.good = backup_id("main", NOW - timedelta(hours=1))
        (self.folder / f"{self.good}.dump").write_bytes(b"good")
        self.manifest(f"{self.good}.manifest.json", id=self.good, status="verified",
                      started_at=(NOW - timedelta(hours=1)).isoformat())

    def manifest(self, name: str, **fields: Any) -> Path:
        data = {"id": OLD_ID, "database": "main", "format": "custom", "status": "failed",
                "started_at": OLD.isoformat(), "error": "boom"}
        data.update(fields)
        write_json_atomic(self.folder / name, data)
        return self.folder / name

    def settings(self) -> Settings:
        backups = BackupSettings(dir=str(self.root))
        return Settings(databases=(DatabaseSettings(name="main", dsn="host=x dbname=y", backups=backups),),
                        backups=backups)

    def files(self) -> dict[str, str]:
        """Every path under the scene (links not followed) with what it is: nothing may change."""
        out = {}
        for top, dirs, names in os.walk(self.tmp):
            for name in dirs + names:
                path = Path(top, name)
                if path.is_symlink():
                    out[str(path)] = f"link -> {os.readlink(path)}"
                else:
                    out[str(path)] = "dir" if path.is_dir() else path.read_bytes().decode(errors="replace")
        return out


def _id_up_and_out(s: Scene) -> str:
    s.manifest(f"{OLD_ID}.manifest.json", id="../../decoy/victim")
    return "../../decoy/victim"


def _id_up_and_out_directory(s: Scene) -> str:
    s.manifest(f"{OLD_ID}.manifest.json", id="../../decoy/victim", format="directory")
    return "../../decoy/victim"


def _id_absolute(s: Scene) -> str:
    bid = str(s.decoy / "victim")
    s.manifest(f"{OLD_ID}.manifest.json", id=bid)
    return bid


def _database_up_and_out(s: Scene) -> str:
    s.manifest(f"{OLD_ID}.manifest.json", id="../../decoy-20200101T000000Z", database="../../decoy")
    return "../../decoy-20200101T000000Z"


def _database_absolute(s: Scene) -> str:
    bid = f"{s.tmp}/decoy-20200101T000000Z"
    s.manifest(f"{OLD_ID}.manifest.json", id=bid, database=f"{s.tmp}/decoy")
    return bid


def _format_up_and_out(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dump").write_bytes(b"in the folder")
    s.manifest(f"{OLD_ID}.manifest.json", format="../../decoy/victim")
    return OLD_ID


def _file_name_is_not_the_id(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dump").write_bytes(b"another backup's data")
    s.manifest("main-20250101T000000Z.manifest.json")
    return OLD_ID


def _symlinked_manifest(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dump").write_bytes(b"in the folder")
    target = s.decoy / f"{OLD_ID}.manifest.json"
    write_json_atomic(target, {"id": OLD_ID, "database": "main", "format": "custom", "status": "failed",
                               "started_at": OLD.isoformat()})
    (s.folder / f"{OLD_ID}.manifest.json").symlink_to(target)
    return OLD_ID


def _symlinked_data_file(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dump").symlink_to(s.decoy / "victim.dump")
    s.manifest(f"{OLD_ID}.manifest.json")
    return OLD_ID


def _symlinked_directory(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dir").symlink_to(s.decoy / "victim.dir")
    s.manifest(f"{OLD_ID}.manifest.json", format="directory")
    return OLD_ID


def _link_inside_directory(s: Scene) -> str:
    (s.folder / f"{OLD_ID}.dir").mkdir()
    (s.folder / f"{OLD_ID}.dir" / "toc.dat").symlink_to(s.decoy / "victim.dump")
    s.manifest(f"{OLD_ID}.manifest.json", format="directory")
    return OLD_ID


HOSTILE: dict[str, Callable[[Scene], str]] = {f.__name__.lstrip("_"): f for f in (
    _id_up_and_out, _id_up_and_out_directory, _id_absolute, _database_up_and_out, _database_absolute,
    _format_up_and_out, _file_name_is_not_the_id, _symlinked_manifest, _symlinked_data_file,
    _symlinked_directory, _link_inside_directory)}


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Scene, str]:
    scene = Scene(tmp_path)
    return scene, HOSTILE[request.param](scene)


def test_prune_deletes_nothing_of_a_hostile_manifest(hostile: tuple[Scene, str]) -> None:
    scene, shown = hostile
    before = scene.files()
    decisions = prune(scene.settings().databases[0], now=NOW)
    assert scene.files() == before
    foreign = [d for d in decisions if d.backup.status == FOREIGN]
    assert len(foreign) == 1 and foreign[0].keep and foreign[0].backup.id == shown
    assert foreign[0].backup.path.parent == scene.folder


def test_list_shows_it_as_foreign(hostile: tuple[Scene, str], caplog: pytest.LogCaptureFixture) -> None:
    scene, shown = hostile
    listed = {b.id: b for b in list_backups(scene.settings(), "main")}
    assert listed[scene.good].status == "verified"
    assert listed[shown].status == FOREIGN and listed[shown].error
    assert listed[shown].manifest_path is None
    assert "is foreign" in caplog.text and str(scene.folder) in caplog.text


def test_verify_and_restore_refuse_it(hostile: tuple[Scene, str]) -> None:
    scene, shown = hostile
    before = scene.files()
    settings = scene.settings()
    assert find_backup(settings, shown).status == FOREIGN
    with pytest.raises(BackupError, match="refusing to verify .* is foreign"):
        verify_backup(scene.root, shown)
    with pytest.raises(BackupError, match="refusing to test-restore"):
        test_restore(settings, shown)
    with pytest.raises(BackupError, match="refusing to restore .* is foreign"):  # before any connection
        restore(settings, shown, "somewhere", assume_yes=True)
    assert scene.files() == before


def test_the_command_line_lists_and_refuses_it(hostile: tuple[Scene, str], capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    scene, shown = hostile
    config = scene.tmp / "indexd.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1:1/app\n"
                      f"backups:\n  dir: {scene.root}\nlogging:\n  file: null\n")
    before = scene.files()
    base = ["--config", str(config)]
    assert main([*base, "backup", "list", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[shown]["foreign"] is True and rows[shown]["status"] == FOREIGN and rows[shown]["foreign_reason"]
    assert rows[scene.good]["foreign"] is False
    assert main([*base, "backup", "list"]) == 0
    human = capsys.readouterr().out
    assert "foreign manifest(s)" in human and "never touched" in human
    assert main([*base, "backup", "prune"]) == 0
    assert main([*base, "backup", "verify", shown]) == 1
    assert "is foreign" in capsys.readouterr().err
    assert main([*base, "restore", shown, "--target-db", "x", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "refusing to restore" in err and "Traceback" not in err
    assert scene.files() == before


def test_a_symlinked_leftover_is_not_removed(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    (scene.folder / f"{OLD_ID}.dump").symlink_to(scene.decoy / "victim.dump")
    (scene.folder / f".{OLD_ID}.partial").symlink_to(scene.decoy / "victim.dir")
    before = scene.files()
    decisions = prune(scene.settings().databases[0], now=NOW)
    assert scene.files() == before
    assert sorted(d.backup.status for d in decisions) == [FOREIGN, FOREIGN, "verified"]


def test_own_backups_are_still_pruned(tmp_path: Path, recorded: list[tuple[str, str | None]]) -> None:
    scene = Scene(tmp_path)
    (scene.folder / f"{OLD_ID}.dir").mkdir()
    (scene.folder / f"{OLD_ID}.dir" / "toc.dat").write_bytes(b"old")
    scene.manifest(f"{OLD_ID}.manifest.json", format="directory")
    assert [b.status for b in scan(scene.folder)] == ["failed", "verified"]
    prune(scene.settings().databases[0], now=NOW)
    assert sorted(p.name for p in scene.folder.iterdir()) == [f"{scene.good}.dump", f"{scene.good}.manifest.json"]
    assert recorded == [(OLD_ID, "deleted")]  # the catalog mirror (a database) is outside this test


def test_a_foreign_manifest_claiming_an_id_of_ours_never_hides_it(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    scene.manifest("main-20000101T000000Z.manifest.json", id=scene.good)  # claims the good backup's id
    settings = scene.settings()
    assert sorted(b.status for b in list_backups(settings) if b.id == scene.good) == [FOREIGN, "verified"]
    assert find_backup(settings, scene.good).status == "verified"
    assert find_in_dir(scene.root, scene.good).status == "verified"

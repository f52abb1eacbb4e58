"""`indexd demo --keep` leaves a configuration beside its cluster, so every command works on it as written."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

from indexd.config.checks import check_runnable
from indexd.config.load import load_settings
from indexd.demo import DEMO_NAME, demo_settings, write_kept_config


def test_the_kept_cluster_gets_a_valid_configuration(tmp_path: Path) -> None:
    dsn = "postgresql://postgres@127.0.0.1:45123/shop"
    path = write_kept_config(tmp_path, dsn)
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = load_settings(str(path))
    check_runnable(settings)  # what check-config and the daemon ask beyond a valid file
    (db,) = settings.databases
    assert (db.name, db.dsn) == (DEMO_NAME, dsn)
    _, demo = demo_settings(dsn, tmp_path / "backups", datetime.now(UTC))
    assert demo.name == db.name  # the demo's backups belong to the configured database
    assert db.indexing.mode == "approve" and db.indexing.windows == ()  # approve, then apply builds at once
    assert Path(db.backups.dir) == tmp_path / "backups" and settings.logging.file is None

"""Restore never destroys or litters: templates and the admin database are refused, missing privileges are
named, every failure removes its scratch database, and the swap has no moment where the data exists nowhere
(a failure is injected before each of its steps, and a real competing session makes one fail)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from indexd.backup.dump import BackupResult, run_backup
from indexd.backup.restore import restore
from indexd.backup.swap import DROP_OLD, RENAME_IN, STEPS
from indexd.cli import main
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.embedded import EmbeddedCluster
from indexd.errors import BackupError, UsageError
from tests.support.cluster import new_database

T0 = datetime(2026, 11, 23, 6, 25, tzinfo=UTC)
LEFTOVERS = ("SELECT datname FROM pg_database WHERE datname LIKE 'indexd\\_restore\\_%%' "
             "OR datname LIKE 'indexd\\_old\\_%%' ORDER BY 1")


class Injected(Exception):
    """The failure a test injects into a step of the swap."""


def _rows(cluster: EmbeddedCluster, dbname: str) -> list[tuple[Any, ...]]:
    return cluster.fetch("SELECT * FROM t ORDER BY 1", dbname)


def _open(cluster: EmbeddedCluster, dbname: str) -> bool:
    return bool(cluster.fetch("SELECT datallowconn FROM pg_database WHERE datname = %s", params=(dbname,))[0][0])


@pytest.fixture
def scene(pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn: Any,
          tmp_path: Path) -> Iterator[tuple[Settings, BackupResult, str]]:
    """A backup of a table `t` with two rows, and an existing database whose `t` holds one precious row."""
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'backed up'), (2, 'x')")
    backups = BackupSettings(dir=str(tmp_path / "backups"))
    settings = Settings(databases=(DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname), backups=backups),),
                        backups=backups)
    result = run_backup(settings, settings.databases[0], now=T0)
    existing = f"{pg_dbname}_existing"
    new_database(pg_cluster, existing, extensions=())
    pg_cluster.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (9, 'precious')",
                       dbname=existing)
    try:
        yield settings, result, existing
    finally:
        pg_cluster.drop_database(existing)
        for (name,) in pg_cluster.fetch(LEFTOVERS):
            pg_cluster.drop_database(name)


@pytest.fixture
def plain_role(pg_cluster: EmbeddedCluster) -> Iterator[tuple[str, str]]:
    """A login role without CREATEDB (and owning nothing); its name and password."""
    name, password = f"rs_plain_{secrets.token_hex(3)}", secrets.token_hex(8)
    pg_cluster.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    try:
        yield name, password
    finally:
        pg_cluster.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("target", ["postgres", "template1", "template0"])
def test_templates_and_the_admin_database_are_refused(pg_cluster: EmbeddedCluster, scene: Any, target: str) -> None:
    settings, result, _ = scene
    with pytest.raises(UsageError, match=f"--target-db {target}: refusing") as info:
        restore(settings, result.id, target, assume_yes=True)
    assert info.value.exit_code == 2
    assert pg_cluster.fetch(LEFTOVERS) == []


def test_the_command_line_refuses_postgres_without_a_traceback(pg_cluster: EmbeddedCluster, scene: Any,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    settings, result, _ = scene
    config = tmp_path / "indexd.yaml"
    config.write_text(f"databases:\n  - name: main\n    dsn: {settings.databases[0].dsn}\n"
                      f"backups:\n  dir: {settings.backups.dir}\nlogging:\n  file: null\n")
    for _ in range(2):  # a second attempt finds nothing left behind by the first either
        assert main(["--config", str(config), "restore", result.id, "--target-db", "postgres", "--yes"]) == 2
        err = capsys.readouterr().err
        assert "refusing to restore into 'postgres'" in err and "Traceback" not in err
    assert pg_cluster.fetch(LEFTOVERS) == []


@pytest.mark.parametrize("step", [s for s in STEPS if s != DROP_OLD])
def test_a_failure_before_any_step_of_the_swap_leaves_the_target_as_it_was(
        pg_cluster: EmbeddedCluster, scene: Any, step: str) -> None:
    settings, result, existing = scene
    seen: list[str] = []

    def fail_at(name: str) -> None:
        seen.append(name)
        if name == step:
            raise Injected(name)

    with pytest.raises(Injected):
        restore(settings, result.id, existing, assume_yes=True, swap_hook=fail_at)
    assert seen[-1] == step
    assert _rows(pg_cluster, existing) == [(9, "precious")]
    assert _open(pg_cluster, existing)
    assert pg_cluster.fetch(LEFTOVERS) == []


def test_a_failed_drop_of_the_old_copy_keeps_the_restore(pg_cluster: EmbeddedCluster, scene: Any) -> None:
    settings, result, existing = scene

    def fail_at(name: str) -> None:
        if name == DROP_OLD:
            raise psycopg2.OperationalError("injected")

    outcome = restore(settings, result.id, existing, assume_yes=True, swap_hook=fail_at)
    assert _rows(pg_cluster, existing) == [(1, "backed up"), (2, "x")]
    assert outcome.kept_old and outcome.kept_old.startswith("indexd_old_")
    assert not _open(pg_cluster, outcome.kept_old)  # closed before the swap; the old data is all there
    pg_cluster.execute(f"ALTER DATABASE {outcome.kept_old} WITH ALLOW_CONNECTIONS true")
    assert _rows(pg_cluster, outcome.kept_old) == [(9, "precious")]
    assert pg_cluster.fetch(LEFTOVERS) == [(outcome.kept_old,)]


def test_a_session_holding_the_scratch_database_fails_the_rename_and_everything_is_undone(
        pg_cluster: EmbeddedCluster, scene: Any) -> None:
    settings, result, existing = scene
    held: list[Any] = []

    def hold_scratch(name: str) -> None:
        if name == RENAME_IN:  # a real competing session on the restored database: its RENAME must fail
            scratch = pg_cluster.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'indexd\\_restore\\_%%'")
            held.append(pg_cluster.connect(scratch[0][0]))

    try:
        with pytest.raises(BackupError, match="failed to rename the restored database in: .*other users"):
            restore(settings, result.id, existing, assume_yes=True, swap_hook=hold_scratch)
    finally:
        for conn in held:
            conn.close()
    assert held and _rows(pg_cluster, existing) == [(9, "precious")]
    assert _open(pg_cluster, existing)
    assert pg_cluster.fetch(LEFTOVERS) == []


def test_open_sessions_on_the_target_are_ended_and_the_swap_completes(pg_cluster: EmbeddedCluster,
                                                                      scene: Any) -> None:
    settings, result, existing = scene
    app = pg_cluster.connect(existing)
    try:
        outcome = restore(settings, result.id, existing, assume_yes=True)
    finally:
        app.close()
    assert outcome.replaced_existing and outcome.kept_old is None
    assert _rows(pg_cluster, existing) == [(1, "backed up"), (2, "x")]
    assert _open(pg_cluster, existing)
    assert pg_cluster.fetch(LEFTOVERS) == []


@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_role_without_createdb_is_told_the_fix(pg_cluster: EmbeddedCluster, scene: Any, plain_role: Any,
                                                 into: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    settings, result, existing = scene
    role, password = plain_role
    target = existing if into == "existing" else f"{existing}_new"
    dsn = pg_cluster.dsn("postgres", user=role, password=password)
    with pytest.raises(BackupError, match=f"role '{role}' may not create databases.*ALTER ROLE {role} CREATEDB"):
        restore(settings, result.id, target, target_dsn=dsn, assume_yes=True)
    config = tmp_path / "indexd.yaml"
    config.write_text(f"backups:\n  dir: {settings.backups.dir}\nlogging:\n  file: null\n")
    assert main(["--config", str(config), "restore", result.id, "--target-db", target, "--target-dsn", dsn,
                 "--yes"]) == 1
    err = capsys.readouterr().err
    assert "CREATEDB" in err and "--target-dsn" in err and "Traceback" not in err and password not in err
    assert _rows(pg_cluster, existing) == [(9, "precious")]
    assert pg_cluster.fetch(LEFTOVERS) == []
    assert pg_cluster.fetch("SELECT 1 FROM pg_database WHERE datname = %s", params=(f"{existing}_new",)) == []


def test_a_role_that_does_not_own_the_target_is_refused(pg_cluster: EmbeddedCluster, scene: Any,
                                                        plain_role: Any) -> None:
    settings, result, existing = scene
    role, password = plain_role
    pg_cluster.execute(f"ALTER ROLE {role} CREATEDB")
    dsn = pg_cluster.dsn("postgres", user=role, password=password)
    with pytest.raises(BackupError, match=f"cannot replace database '{existing}', which belongs to"):
        restore(settings, result.id, existing, target_dsn=dsn, assume_yes=True)
    assert _rows(pg_cluster, existing) == [(9, "precious")]
    assert pg_cluster.fetch(LEFTOVERS) == []

"""`indexd backup list` reads the manifests on disk only: these runs need no server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from indexd.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "indexd.yaml"
    path.write_text(f"databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1:1/app\n"
                    f"backups:\n  dir: {tmp_path / 'backups'}\nlogging:\n  file: null\n")
    return path


def test_list_of_an_unknown_database_is_a_usage_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "backup", "list", "--database", "nope"]) == 2
    assert "no database named 'nope'" in capsys.readouterr().err


def test_list_of_a_configured_database_without_backups_is_empty(config: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "backup", "list", "--database", "main"]) == 0
    assert capsys.readouterr().out.strip() == "no backups"


@pytest.mark.parametrize("name", ["backup.sh", "restore.sh"])
def test_scripts_answer_long_options(name: str) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / name
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and f"usage: {name}" in helped.stdout
    wrong = subprocess.run([str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and "unknown option --bogus" in wrong.stderr


@pytest.mark.parametrize("name", ["", "x" * 64])
def test_restore_refuses_a_target_name_postgres_would_reject_or_cut(config: Path, name: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "restore", "main-20260101T000000Z", "--target-db", name, "--yes"]) == 2
    assert "--target-db: a database name has 1 to 63 bytes" in capsys.readouterr().err

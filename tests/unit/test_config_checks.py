"""`check-config --production`: each hardening check fires on its own and is quiet on a hardened setup."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from indexd.config.checks import production_problems
from indexd.config.load import load_settings
from indexd.errors import ConfigError
from indexd.private import ensure_private_dir

HARDENED = """\
environment: production
databases:
  - name: main
    dsn: postgresql://indexd@db1.internal:5432/app?sslmode=verify-full
    password_file: {pw}
backups:
  dir: {backups}
logging:
  level: INFO
http:
  listen: 127.0.0.1:9470
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    pw = tmp_path / "main.password"
    pw.write_text("s3cret\n", encoding="utf-8")
    pw.chmod(0o600)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o750)
    backups.chmod(0o750)
    return {"pw": pw, "backups": backups, "config": tmp_path / "indexpilot_config.yaml"}


def render(text: str, paths: dict[str, Path]) -> str:
    return textwrap.dedent(text).replace("{pw}", str(paths["pw"])).replace("{backups}", str(paths["backups"]))


def check(paths: dict[str, Path], text: str | None = None, env: dict[str, str] | None = None,
          mode: int = 0o640) -> list[str]:
    body = render(text or HARDENED, paths)
    config = paths["config"]
    config.write_text(body, encoding="utf-8")
    config.chmod(mode)
    settings = load_settings(str(config), env={})
    return production_problems(settings, config, env=env or {})


def test_hardened_configuration_passes(setup: dict[str, Path]) -> None:
    assert check(setup) == []


def test_development_environment(setup: dict[str, Path]) -> None:
    found = check(setup, HARDENED.replace("environment: production", "environment: development"))
    assert found == ["environment: is 'development'; set environment: production"]


def test_debug_logging(setup: dict[str, Path]) -> None:
    found = check(setup, HARDENED.replace("level: INFO", "level: DEBUG"))
    assert len(found) == 1 and found[0].startswith("logging.level: DEBUG")


@pytest.mark.parametrize("dsn", [
    "postgresql://indexd:hunter2@db1.internal/app?sslmode=require",
    "postgresql://indexd@db1.internal/app?sslmode=require&password=hunter2",
    "host=db1.internal dbname=app sslmode=require password=hunter2",
    "postgresql://indexd:${PW:-hunter2}@db1.internal/app?sslmode=require",
])
def test_plaintext_password_in_the_file(setup: dict[str, Path], dsn: str) -> None:
    text = HARDENED.replace("postgresql://indexd@db1.internal:5432/app?sslmode=verify-full", f"'{dsn}'")
    found = check(setup, text, env={"PW": ""})
    assert len(found) == 1, found
    assert found[0].startswith("databases.main.dsn (line 4): the password is written in the file")
    assert "hunter2" not in found[0]


def test_password_from_a_variable_is_fine(setup: dict[str, Path]) -> None:
    text = HARDENED.replace("indexd@db1", "indexd:${DB_PASSWORD}@db1")
    config = setup["config"]
    config.write_text(render(text, setup), encoding="utf-8")
    config.chmod(0o600)
    settings = load_settings(str(config), env={"DB_PASSWORD": "s3cret"})
    assert production_problems(settings, config, env={}) == []


def test_password_file_readable_by_others(setup: dict[str, Path]) -> None:
    setup["pw"].chmod(0o644)
    assert check(setup) == [f"databases.main.password_file: {setup['pw']} is readable by group or others; chmod 600 it"]


def test_missing_password_file(setup: dict[str, Path]) -> None:
    setup["pw"].unlink()
    (problem,) = check(setup)
    assert problem.startswith("databases.main.password_file: cannot stat")


@pytest.mark.parametrize("dsn, env, weak", [
    ("postgresql://indexd@db1.internal/app", {}, True),
    ("postgresql://indexd@db1.internal/app?sslmode=prefer", {"PGSSLMODE": "require"}, True),
    ("postgresql://indexd@db1.internal/app", {"PGSSLMODE": "verify-ca"}, False),
    ("postgresql://indexd@db1.internal/app?sslmode=require", {}, False),
    ("host=/var/run/postgresql dbname=app", {}, False),
    ("dbname=app", {}, False),
    ("dbname=app", {"PGHOST": "db1.internal"}, True),
    ("host=/tmp hostaddr=10.0.0.1 dbname=app", {}, True),
])
def test_sslmode(setup: dict[str, Path], dsn: str, env: dict[str, str], weak: bool) -> None:
    text = HARDENED.replace("postgresql://indexd@db1.internal:5432/app?sslmode=verify-full", f"'{dsn}'")
    found = check(setup, text, env=env)
    assert bool(found) == weak, found
    if weak:
        assert found[0].startswith("databases.main.dsn: ") and "sslmode=verify-full" in found[0]


def test_http_beyond_loopback_is_refused_before_the_hardening_checks(setup: dict[str, Path]) -> None:
    text = HARDENED.replace("127.0.0.1:9470", "0.0.0.0:9470")
    with pytest.raises(ConfigError, match=r"^http\.listen \(line 11\): 0\.0\.0\.0:9470 is reachable from other hosts"):
        check(setup, text)
    assert check(setup, text + "  token_file: /etc/indexd/token\n") == []
    assert check(setup, HARDENED.replace("127.0.0.1:9470", "'[::1]:9470'")) == []


def test_world_readable_config_file(setup: dict[str, Path]) -> None:
    found = check(setup, mode=0o644)
    assert found == [f"configuration file {setup['config']}: is world-readable; chmod o-rwx it"]


def test_world_writable_backups_dir(setup: dict[str, Path]) -> None:
    setup["backups"].chmod(0o777)
    found = check(setup)
    assert found == [f"backups.dir {setup['backups']}: is world-readable and writable; chmod o-rwx it"]


def test_stat_readings_are_injectable(setup: dict[str, Path]) -> None:
    config = setup["config"]
    config.write_text(render(HARDENED, setup), encoding="utf-8")
    settings = load_settings(str(config), env={})

    def open_to_all(path: str) -> os.stat_result:
        real = os.stat(path)
        return os.stat_result((real.st_mode | 0o777,) + tuple(real)[1:])

    found = production_problems(settings, config, env={}, stat=open_to_all)
    assert len(found) == 3  # config file, password file, backups dir


def test_shipped_production_example_is_hardened() -> None:
    example = Path(__file__).resolve().parents[2] / "config/examples/production.yaml"
    settings = load_settings(str(example), env={})

    def private(path: str) -> os.stat_result:
        return os.stat_result((0o100600, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    assert production_problems(settings, example, env={}, stat=private) == []


def test_a_backups_dir_indexd_creates_passes_its_own_production_check(setup: dict[str, Path]) -> None:
    setup["backups"].rmdir()
    setup["backups"] = setup["backups"].parent / "var" / "lib" / "indexd" / "backups"
    old_umask = os.umask(0o022)  # the usual umask: plain mkdir -p would make every folder 0755
    try:
        ensure_private_dir(setup["backups"] / "main")  # what the first backup of `main` does
    finally:
        os.umask(old_umask)
    for folder in (setup["backups"] / "main", setup["backups"], setup["backups"].parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert check(setup) == []


def test_a_replica_dsn_with_a_password_in_the_file(setup: dict[str, Path]) -> None:
    text = HARDENED.replace("    password_file: {pw}\n", "    password_file: {pw}\n    replicas:\n"
                            "      - postgresql://indexd@db2.internal:5432/app?sslmode=verify-full\n"
                            "      - postgresql://indexd:s3cret@db3.internal:5432/app?sslmode=verify-full\n")
    found = check(setup, text)
    assert found == ["databases.main.replicas[1] (line 8): the password is written in the file; take it from the "
                     "environment (${VAR} or PGPASSWORD), a password_file or ~/.pgpass"]

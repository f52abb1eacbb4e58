"""`indexd check-config` and `indexd migrate` as an operator runs them: a separate process, real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from indexd.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


def indexd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_") and k not in ("LOG_LEVEL", "ENVIRONMENT")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "indexd", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_config_on_a_good_file(tmp_path: Path) -> None:
    result = indexd("--config", str(REPO / "indexpilot_config.yaml"), "check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"configuration OK: {REPO / 'indexpilot_config.yaml'}, 1 database\n"


def test_check_config_found_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "indexpilot_config.yaml").write_text(
        "databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1/app\n", encoding="utf-8")
    result = indexd("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout and "1 database" in result.stdout


def test_check_config_refuses_what_the_daemon_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("databases: []\n", encoding="utf-8")
    result = indexd("--config", "empty.yaml", "check-config", cwd=tmp_path)
    assert result.returncode == 2 and "databases: none configured" in result.stderr
    (tmp_path / "token.yaml").write_text(
        "databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1/app\n"
        "http:\n  token_file: /nonexistent/indexd-token\n", encoding="utf-8")
    result = indexd("--config", "token.yaml", "check-config", cwd=tmp_path)
    assert result.returncode == 2 and "http.token_file: cannot read /nonexistent/indexd-token" in result.stderr
    (tmp_path / "password.yaml").write_text(
        "databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1/app\n"
        "    password_file: /nonexistent/main.password\n", encoding="utf-8")
    result = indexd("--config", "password.yaml", "check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert "databases.main.password_file: cannot read /nonexistent/main.password" in result.stderr


def test_check_config_on_a_broken_file_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(textwrap.dedent("""\
        databases:
          - name: main
            dsn: postgresql://indexd:hunter2@127.0.0.1/app
        indexing:
          mode: turbo
        logging:
          levl: INFO
        """), encoding="utf-8")
    result = indexd("--config", str(config), "check-config", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"configuration {config} is invalid: 2 problems",
        "  indexing.mode (line 5): must be one of advise, approve, auto (got 'turbo')",
        "  logging.levl (line 7): unknown key 'levl' (did you mean 'level'?)",
    ]


def test_check_config_production(tmp_path: Path) -> None:
    config = tmp_path / "indexpilot_config.yaml"
    config.write_text("databases:\n  - name: main\n    dsn: postgresql://indexd:hunter2@10.1.2.3/app\n",
                      encoding="utf-8")
    config.chmod(0o600)
    result = indexd("--config", str(config), "check-config", "--production", cwd=tmp_path)
    assert result.returncode == 2
    assert "is not ready for production: 3 problems" in result.stderr
    assert "databases.main.dsn (line 3): the password is written in the file" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_migrate_with_dsn_twice(tmp_path: Path, pg_dsn: str) -> None:
    first = indexd("migrate", "--dsn", pg_dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    name = pg_dsn.rsplit("/", 1)[-1]
    assert first.stdout.startswith(f"{name}: applied 001")
    second = indexd("migrate", "--dsn", pg_dsn, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"{name}: up to date (version ")


def test_migrate_reports_a_failing_database_and_runs_the_others(tmp_path: Path, pg_dsn: str) -> None:
    config = tmp_path / "indexpilot_config.yaml"
    config.write_text(textwrap.dedent(f"""\
        databases:
          - name: gone
            dsn: postgresql://indexd:hunter2@127.0.0.1:{free_port()}/nothing
            timeouts:
              connect: 2s
          - name: main
            dsn: {pg_dsn}
        retry:
          attempts: 1
          max_elapsed: 1s
        logging:
          file: null
        """), encoding="utf-8")
    result = indexd("migrate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("main: applied 001")
    assert any(line.startswith("indexd: gone: migrate failed: ") for line in result.stderr.splitlines()), result.stderr
    assert "hunter2" not in result.stderr


def test_http_beyond_loopback_without_a_token_is_refused_by_check_config_and_run(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "open.yaml"
    body = "databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1/app\nhttp:\n  listen: 0.0.0.0:{port}\n"
    config.write_text(body.format(port=port), encoding="utf-8")
    expected = f"http.listen (line 5): 0.0.0.0:{port} is reachable from other hosts"
    checked = indexd("--config", str(config), "check-config", cwd=tmp_path)
    assert checked.returncode == 2 and expected in checked.stderr, checked.stderr
    ran = indexd("--config", str(config), "run", cwd=tmp_path)
    assert ran.returncode == 2 and expected in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing was served, not even briefly
    token = tmp_path / "token"
    token.write_text("t0ken\n", encoding="utf-8")
    config.write_text(body.format(port=port) + f"  token_file: {token}\n", encoding="utf-8")
    assert indexd("--config", str(config), "check-config", cwd=tmp_path).returncode == 0
    config.write_text(body.format(port=port).replace("0.0.0.0", "127.0.0.1"), encoding="utf-8")
    assert indexd("--config", str(config), "check-config", cwd=tmp_path).returncode == 0

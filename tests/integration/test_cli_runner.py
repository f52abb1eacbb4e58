"""The command line over several databases, as an operator runs it: one database down fails only itself (exit 1,
the others still done), a guard's refusal is exit 3, and every listing's --json is one list of objects that each
name their database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexd.embedded import EmbeddedCluster, free_port
from tests.support.cluster import new_database
from tests.support.lifecycle import candidate, insert_recommendation, make_table, rec_status

OTHER = "runner_other"


@pytest.fixture
def other_db(pg_cluster: EmbeddedCluster) -> Iterator[str]:
    """A second, empty database in the session cluster."""
    pg_cluster.drop_database(OTHER)
    new_database(pg_cluster, OTHER, extensions=())
    try:
        yield OTHER
    finally:
        pg_cluster.drop_database(OTHER)


def _config(tmp_path: Path, databases: dict[str, str], file: str = "indexd.yaml") -> Path:
    """A config with these databases (name: dsn), every guard but the pause out of the way, backups in tmp_path."""
    listed = "".join(f"  - name: {name}\n    dsn: {dsn}\n    timeouts: {{connect: 2s}}\n"
                     for name, dsn in databases.items())
    path = tmp_path / file
    path.write_text(
        f"databases:\n{listed}"
        "retry: {attempts: 1, max_elapsed: 1s}\n"
        "indexing:\n  mode: approve\n  windows: []\n  lock_timeout: 2s\n"
        "  throttle: {cpu_sample: 100ms, max_cpu_pct: 100}\n"
        f"backups: {{dir: {tmp_path / 'backups'}}}\n"
        "logging: {file: null}\n"
        f"http: {{listen: '127.0.0.1:{free_port()}'}}\n", encoding="utf-8")
    return path


def indexd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    return subprocess.run([sys.executable, "-m", "indexd", "--config", str(config), *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def _listing(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The --json output, checked to be one list of objects that each carry their database; keyed by it."""
    listed = json.loads(done.stdout)
    assert isinstance(listed, list) and all(isinstance(o, dict) and "database" in o for o in listed), listed
    return {o["database"]: o for o in listed}


def _one_error_line(done: subprocess.CompletedProcess[str], name: str, act: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.startswith(f"indexd: {name}: {act} failed: ")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_a_database_down_fails_alone(pg_dsn: str, tmp_path: Path) -> None:
    down = f"postgresql://indexd:s3cret@127.0.0.1:{free_port()}/app"
    config = _config(tmp_path, {"down": down, "main": pg_dsn})

    done = indexd(config, "migrate")
    assert done.returncode == 1 and "main: applied 001" in done.stdout
    _one_error_line(done, "down", "migrate")
    done = indexd(config, "pause", "--for", "1h", "--reason", "deploy")
    assert done.returncode == 1 and "main: paused by " in done.stdout
    _one_error_line(done, "down", "pause")
    done = indexd(config, "backup", "run")
    assert done.returncode == 1 and "main: backup main-" in done.stdout
    _one_error_line(done, "down", "backup")

    done = indexd(config, "status", "--json")
    assert done.returncode == 1
    status = _listing(done)
    assert list(status) == ["down", "main"]  # every selected database, in the config's order
    assert status["main"]["pause"]["reason"] == "deploy" and "error" not in status["main"]
    assert "error" in status["down"] and status["down"]["next_runs"]  # what needs no connection is still there
    _one_error_line(done, "down", "status")

    done = indexd(config, "indexes", "--json")
    assert done.returncode == 1
    found = _listing(done)
    assert found["main"]["indexes_checked"] >= 0 and "unused" in found["main"] and set(found["down"]) == {
        "database", "error"}

    done = indexd(config, "backup", "list", "--json")
    assert done.returncode == 0, done.stderr
    backups = json.loads(done.stdout)
    assert [(b["database"], b["status"]) for b in backups] == [("main", "verified")]

    done = indexd(config, "backup", "prune", "--dry-run", "--json")
    pruned = _listing(done)
    assert [b["action"] for b in pruned["main"]["backups"]] == ["keep"] and pruned["main"]["dry_run"] is True


def test_a_guard_refusal_is_exit_3_and_a_failure_outranks_it(pg_cluster: EmbeddedCluster, pg_dsn: str, pg_conn: Any,
                                                             other_db: str, tmp_path: Path) -> None:
    both = _config(tmp_path, {"main": pg_dsn, "other": pg_cluster.dsn(other_db)})
    assert indexd(both, "migrate").returncode == 0
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"), status="approved")
    assert indexd(both, "pause", "--database", "main", "--reason", "incident").returncode == 0

    done = indexd(both, "apply", "--yes")
    assert done.returncode == 3, done.stdout + done.stderr  # main refused by the pause, other had nothing to do
    assert "incident" in done.stdout and "other (mode approve)" in done.stdout
    assert rec_status(pg_conn, rec_id) == "approved"

    with_down = _config(tmp_path, {"main": pg_dsn, "down": f"postgresql://indexd@127.0.0.1:{free_port()}/app"},
                        "with_down.yaml")
    done = indexd(with_down, "apply", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    _one_error_line(done, "down", "apply")

    assert indexd(both, "resume", "--database", "main").returncode == 0
    done = indexd(both, "apply", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rec_status(pg_conn, rec_id) == "built"

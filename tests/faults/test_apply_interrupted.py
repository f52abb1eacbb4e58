"""`indexd apply` interrupted the hard way, then run again: the server restarted mid-build (the recommendation is
`interrupted`, one attempt counted) and the apply process SIGKILLed mid-build (the recommendation is left
`building`). Either way the next apply settles the INVALID leftover first and builds the index, without a daemon
ever starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexd.config.schema import DatabaseSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.state.migrations import migrate
from tests.faults.test_build_faults import SLOW, _attempts, _building, _slow_table, _wait_for
from tests.support.cluster import new_database
from tests.support.lifecycle import audit_rows, index_valid, rec_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(own_cluster: EmbeddedCluster, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A database with a slow-to-index table, an approved recommendation for it, and a config to apply it."""
    dsn = new_database(own_cluster, "app")
    db = Database(DatabaseSettings(name="app", dsn=dsn))
    try:
        migrate(db)
    finally:
        db.close()
    conn = own_cluster.connect("app")
    try:
        rec_id = _slow_table(conn)
        with conn.cursor() as cur:  # approved by a person, as `indexd approve` records it
            cur.execute("UPDATE indexd.recommendations SET decided_at = now(), decided_by = 'ann' WHERE id = %s",
                        (rec_id,))
    finally:
        conn.close()
    config = tmp_path / "indexd.yaml"
    config.write_text(f"databases:\n  - name: app\n    dsn: {dsn}\nindexing:\n  mode: approve\n  lock_timeout: 2s\n"
                      "  throttle:\n    max_cpu_pct: 100\n    cpu_sample: 100ms\n    max_active_backends_pct: 100\n"
                      "    pause_between_builds: 0s\nlogging:\n  file: null\n")
    yield config, rec_id


def _apply_args(config: Path) -> list[str]:
    return [sys.executable, "-m", "indexd", "--config", str(config), "apply", "--now", "--yes"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}


def _apply(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_apply_args(config), capture_output=True, text=True, env=_env(), timeout=180, check=False,
                          cwd=ROOT)


def _start_apply(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(_apply_args(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)


def _in_progress(cluster: EmbeddedCluster) -> bool:
    conn = cluster.connect("app")
    try:
        return _building(conn)
    finally:
        conn.close()


def _check(cluster: EmbeddedCluster, what):  # type: ignore[no-untyped-def]
    conn = cluster.connect("app")
    try:
        return what(conn)
    finally:
        conn.close()


def test_server_restarted_during_apply_then_the_next_apply_settles_and_builds(own_cluster: EmbeddedCluster,
                                                                              app: tuple[Path, int]) -> None:
    config, rec_id = app
    proc = _start_apply(config)
    try:
        _wait_for(lambda: _in_progress(own_cluster), timeout=60, what="the build to start")
        # The test cluster runs with synchronous_commit off: give the WAL writer time to write the audit intent
        # and the claim, which a durable server has on disk before the build starts.
        time.sleep(1.0)
        own_cluster.restart("immediate")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err  # the build failed: the run says so
    assert "connection lost" in out
    assert _check(own_cluster, lambda c: rec_status(c, rec_id)) == "interrupted"
    assert _check(own_cluster, lambda c: _attempts(c, rec_id)) == 1
    assert _check(own_cluster, lambda c: index_valid(c, "public", SLOW.name())) is False  # the INVALID leftover
    create = _check(own_cluster, lambda c: audit_rows(c, "create_index"))
    assert [(r["phase"], r["outcome"]) for r in create] == [("intent", "started"), ("outcome", "failed")]

    again = _apply(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"built    public.{SLOW.name()}" in again.stdout
    assert _check(own_cluster, lambda c: rec_status(c, rec_id)) == "built"
    assert _check(own_cluster, lambda c: index_valid(c, "public", SLOW.name())) is True
    drops = _check(own_cluster, lambda c: audit_rows(c, "drop_index"))
    assert [(r["phase"], r["outcome"], r["reason"]) for r in drops] == [
        ("intent", "started", "leftover of an interrupted build"), ("outcome", "succeeded", None)]


def test_apply_killed_mid_build_is_settled_and_built_by_the_next_apply(own_cluster: EmbeddedCluster,
                                                                       app: tuple[Path, int]) -> None:
    config, rec_id = app
    proc = _start_apply(config)
    try:
        _wait_for(lambda: _in_progress(own_cluster), timeout=60, what="the build to start")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        proc.communicate()
    _wait_for(lambda: not _in_progress(own_cluster), what="the orphaned build to stop")
    assert _check(own_cluster, lambda c: rec_status(c, rec_id)) == "building"  # nobody could settle it

    started = time.monotonic()
    again = _apply(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"built    public.{SLOW.name()}" in again.stdout
    assert time.monotonic() - started < 120
    assert _check(own_cluster, lambda c: rec_status(c, rec_id)) == "built"
    assert _check(own_cluster, lambda c: _attempts(c, rec_id)) == 1  # the killed run counted as one attempt
    create = _check(own_cluster, lambda c: audit_rows(c, "create_index"))
    assert [(r["phase"], r["outcome"]) for r in create] == [
        ("intent", "started"), ("outcome", "failed"), ("intent", "started"), ("outcome", "succeeded")]

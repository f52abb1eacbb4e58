"""The daemon as a real subprocess against a real PostgreSQL: ready, builds, backs up, reloads, stops cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.databases import STOP_BOUND_S
from indexd.simulate import drive, setup
from tests.support.daemon import DaemonProcess, daemon_config

SECRET = "pw-never-logged"


def _one(cluster: EmbeddedCluster, db: str, query: str) -> object:
    conn = cluster.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _round_done(d: DaemonProcess) -> dict | None:
    code, body = d.get("/health")
    runs = body["databases"]["main"]["last_runs"] if code == 200 else {}
    return runs if "prune" in runs else None


def test_daemon_lifecycle(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path) -> None:
    dsn = pg_cluster.dsn(pg_dbname)
    setup(dsn, "small")
    from datetime import timedelta

    drive(dsn, "small", timedelta(seconds=4))
    secret_dsn = dsn.replace("postgres@", f"postgres:{SECRET}@")  # trust auth ignores it; it must never show
    config = daemon_config(tmp_path / "indexd.yaml", secret_dsn, port=free_port(), backups_dir=tmp_path / "backups")
    d = DaemonProcess(config, tmp_path)
    try:
        assert d.wait_message("READY=1", timeout=60).startswith("READY=1\nSTATUS=running")
        runs = d.wait_for(lambda: _round_done(d), timeout=90, what="the start-up round")
        assert runs["capture"]["outcome"] == "ok", runs["capture"]
        assert runs["advise"]["outcome"] == "ok", runs["advise"]
        assert "built " in runs["apply"]["message"] and "indexd_" in runs["apply"]["message"], runs["apply"]
        assert runs["backup"]["outcome"] == "ok" and "verified" in runs["backup"]["message"]
        assert runs["backup_verify"]["outcome"] == "ok", runs["backup_verify"]
        built = _one(pg_cluster, pg_dbname, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'indexd_%'")
        assert built >= 1
        job_runs = _one(pg_cluster, pg_dbname, "SELECT count(*) FROM indexd.job_runs WHERE outcome IS NOT NULL")
        assert job_runs >= 8

        for path in ("/health/live", "/health/ready", "/health/startup"):
            code, body = d.get(path)
            assert code == 200 and body["status"] == "ok", (path, body)
        code, metrics = d.get("/metrics")
        assert code == 200 and 'indexd_database_up{database="main"} 1.0' in metrics
        assert 'indexd_job_runs_total{database="main",job_name="backup",outcome="ok"} 1.0' in metrics
        d.wait_message("WATCHDOG=1", timeout=10)

        _reload_keeps_old_config_when_bad(d, config)

        records = d.log_records()
        job_lines = [r for r in records if r.get("logger") == "indexd.service.jobs" and " on main" in r["message"]]
        assert {r["job"] for r in job_lines} >= {"capture", "advise", "apply", "verify", "backup"}
        assert all(r.get("job_id") for r in job_lines)
    finally:
        code, seconds = d.stop(timeout=STOP_BOUND_S + 15)
    text = d.log()
    assert code == 0, text[-4000:]
    assert seconds < STOP_BOUND_S
    assert "STOPPING=1" in d.messages
    assert SECRET not in text
    assert _one(pg_cluster, pg_dbname, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                       "WHERE NOT i.indisvalid") == 0
    assert _one(pg_cluster, pg_dbname, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'indexd' "
                                       "AND datname = current_database()") == 0
    assert not list((tmp_path / "backups").rglob("*partial*"))


def _reload_keeps_old_config_when_bad(d: DaemonProcess, config: Path) -> None:
    good = config.read_text(encoding="utf-8")
    config.write_text(good.replace("mode: auto", "mode: sometimes"), encoding="utf-8")
    d.signal(signal.SIGHUP)
    assert d.wait_message("RELOADING=1", timeout=10)
    assert d.wait_message("READY=1", timeout=10)
    d.wait_for(lambda: "reload refused" in d.log(), timeout=10, what="the refused reload in the log")
    code, body = d.get("/health")
    assert code == 200 and body["reloads"]["failed"] == 1 and "mode" in body["last_reload_error"]
    assert d.proc.poll() is None
    # A good file is taken: the reload counter moves and the daemon keeps serving.
    config.write_text(good.replace("mode: auto", "mode: approve"), encoding="utf-8")
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.get("/health")[1]["reloads"]["ok"] == 1, timeout=15, what="a successful reload")
    time.sleep(0.2)
    assert d.get("/health/live")[0] == 200


def test_stop_cancels_a_running_backup_within_the_bound(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                        tmp_path: Path) -> None:
    """A pg_dump that hangs (a stub that writes a little and sleeps) is cancelled on SIGTERM; nothing partial stays."""
    stub = tmp_path / "pg_dump"
    stub.write_text("#!/bin/sh\nfor a in \"$@\"; do case $a in --file=*) f=${a#--file=};; esac; done\n"
                    "echo partial > \"$f\"\nexec sleep 300\n")
    stub.chmod(0o755)
    config = daemon_config(tmp_path / "indexd.yaml", pg_cluster.dsn(pg_dbname), port=free_port(),
                           backups_dir=tmp_path / "backups")
    d = DaemonProcess(config, tmp_path, env={"INDEXD_PG_DUMP": str(stub)})
    try:
        d.wait_message("READY=1", timeout=60)
        d.wait_for(lambda: [p for p in (tmp_path / "backups").rglob("*") if "partial" in p.name], timeout=60,
                   what="the stub pg_dump to start writing")
    finally:
        code, seconds = d.stop(timeout=STOP_BOUND_S + 15)
    text = d.log()
    assert code == 0, text[-4000:]
    assert seconds < STOP_BOUND_S, f"stop took {seconds:.1f}s"
    assert "cancelling running jobs" in text
    leftovers = [p for p in (tmp_path / "backups").rglob("*") if p.is_file() and "partial" in p.name]
    assert not leftovers, leftovers
    assert _one(pg_cluster, pg_dbname, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'indexd' "
                                       "AND datname = current_database()") == 0


def test_a_bad_config_file_exits_2_before_starting(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("databases:\n  - name: main\n    dsn: postgresql://x@127.0.0.1/app\nindexing:\n  mode: often\n")
    done = subprocess.run([sys.executable, "-m", "indexd", "run", "--config", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "indexing.mode" in done.stderr

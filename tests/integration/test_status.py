"""`indexd status`: leader, pause, jobs, advice, changes and backups, with and without a running daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from indexd.config.load import load_settings
from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.app import IndexdService
from tests.support.daemon import daemon_config


def _status(config: Path, *extra: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "indexd", "status", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def _config(tmp_path: Path, sections: str) -> Path:
    """c.yaml with these sections, backups in tmp_path/b, no log file and the HTTP endpoint on a free port."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(sections + f"""backups:
  dir: {tmp_path / "b"}
logging:
  file: null
http:
  listen: 127.0.0.1:{free_port()}
""")
    return cfg


def test_status_without_a_daemon(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path) -> None:
    dsn = pg_cluster.dsn(pg_dbname).replace("postgres@", "postgres:topsecret@")
    cfg = daemon_config(tmp_path / "c.yaml", dsn, port=free_port(), backups_dir=tmp_path / "b")
    subprocess.run([sys.executable, "-m", "indexd", "migrate", "--config", str(cfg)], check=True,
                   capture_output=True, timeout=60)
    code, out, err = _status(cfg, "--json")
    assert code == 0, err
    (db,) = json.loads(out)
    assert db["database"] == "main"
    assert db["leader"] is None and db["pause"] is None
    assert db["daemon"] == "daemon not reachable: no process holds the leader lock: no daemon leads this database"
    assert set(db["next_runs"]) >= {"capture", "advise", "apply", "verify", "backup"}
    assert "topsecret" not in out
    code, text, err = _status(cfg)
    assert code == 0, err
    assert "leader: none" in text and "daemon: not reachable (not running" in text and "topsecret" not in text
    assert "no daemon leads" not in text  # the leader line says it: once
    # Every line of a database's section, its tables included, sits indented under the "== name" heading.
    section = text.split("== main", 1)[1].splitlines()[1:]
    assert section and all(line.startswith("   ") for line in section if line), text


def test_status_with_a_running_service(pg_cluster: EmbeddedCluster, pg_dbname: str, tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path / "c.yaml", pg_cluster.dsn(pg_dbname), port=free_port(), backups_dir=tmp_path / "b")
    svc = IndexdService(load_settings(str(cfg), env={}), str(cfg), env={})
    svc.start()
    try:
        for job in ("capture", "health", "backup"):
            svc.runner.run(job, "main")
        subprocess.run([sys.executable, "-m", "indexd", "pause", "--config", str(cfg), "--for", "1h", "--reason",
                        "incident 42"], check=True, capture_output=True, timeout=60)
        code, out, err = _status(cfg, "--json")
        assert code == 0, err
        (db,) = json.loads(out)
        assert db["database"] == "main" and db["daemon"]["status"] == "ok"
        assert db["leader"] is not None and db["leader"]["application_name"] == "indexd"
        assert db["pause"]["reason"] == "incident 42"
        assert db["jobs"]["capture"]["outcome"] == "ok"
        assert db["jobs"]["backup"]["outcome"] == "ok"
        assert db["backups"]["count"] == 1 and db["backups"]["latest"][0]["status"] == "verified"
        assert db["daemon"]["breaker"] == "closed" and db["daemon"]["pool"]["size"] >= 1
        assert any(c["action"] == "pause" for c in db["recent_changes"])
        code, text, err = _status(cfg)
        assert code == 0, err
        assert "PAUSED" in text and "incident 42" in text and "breaker closed" in text
    finally:
        svc.stop()


def test_a_bad_password_file_is_that_databases_error_only(pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                          tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"""
databases:
  - name: good
    dsn: {pg_cluster.dsn(pg_dbname)}
  - name: bad
    dsn: {pg_cluster.dsn(pg_dbname)}
    password_file: {tmp_path / "missing.password"}
""")
    code, out, err = _status(cfg, "--json")
    assert code == 2, err  # an unreadable password file is a configuration error, and outranks a failure
    dbs = {d["database"]: d for d in json.loads(out)}
    assert "run 'indexd migrate' first" in dbs["good"]["error"]
    subprocess.run([sys.executable, "-m", "indexd", "migrate", "--config", str(cfg), "--database", "good"],
                   check=True, capture_output=True, timeout=60)
    code, out, err = _status(cfg, "--json")
    assert code == 2, err
    dbs = {d["database"]: d for d in json.loads(out)}
    assert "error" not in dbs["good"] and dbs["good"]["pause"] is None
    assert "password_file: cannot read" in dbs["bad"]["error"]


def test_a_down_server_is_reported_at_once(tmp_path: Path) -> None:
    import time

    cfg = _config(tmp_path, f"""
databases:
  - name: down
    dsn: postgresql://indexd@127.0.0.1:{free_port()}/app
retry:
  initial_delay: 10s
""")
    started = time.monotonic()
    code, out, err = _status(cfg, "--json")
    assert code == 1, err
    (down,) = json.loads(out)
    assert down["database"] == "down" and "connect failed" in down["error"]
    assert "indexd: down: status failed: " in err and "Traceback" not in err
    assert time.monotonic() - started < 8  # one attempt, not the retry policy's 10 s backoff

"""The emergency pause on a real server: stored for every daemon, ends by itself, audited, stops builds;
and the lifecycle commands end to end (pause, resume, apply, approve, reject)."""

from __future__ import annotations

import functools
import subprocess
import sys
from datetime import time, timedelta
from pathlib import Path

import pytest

from indexd.cli import main
from indexd.clock import utcnow
from indexd.config.schema import Settings, WindowSettings
from indexd.db.pool import Database
from indexd.lifecycle.apply import apply
from indexd.lifecycle.pause import pause, resume
from indexd.lifecycle.readings import take_readings
from indexd.state.pause import active_pause
from tests.support.lifecycle import (
    audit_rows,
    candidate,
    index_valid,
    insert_recommendation,
    make_table,
    rec_status,
)


@pytest.fixture
def db(lifecycle_db) -> Database:
    # one window that is always open (a full day, every day): the pause alone must stop the build
    always = WindowSettings(start=time(0), end=time(0))
    return lifecycle_db(mode="approve", windows=(always,))


def _active(db: Database, at=None):
    with db.connection() as conn:
        return active_pause(conn, "indexd", at or utcnow())


def test_pause_ends_by_itself_and_resume_ends_it_at_once(db: Database, pg_conn) -> None:
    start = utcnow()
    made = pause(db, timedelta(hours=2), "incident 42", "ann@ops pid 7", now=start)
    assert made.until == start + timedelta(hours=2)
    assert _active(db, start + timedelta(minutes=119)) == made
    assert _active(db, start + timedelta(hours=2)) is None  # over by itself
    assert [p.id for p in resume(db, "bob@ops pid 8")] == [made.id]
    assert _active(db) is None
    assert resume(db) == []  # nothing left to resume
    rows = audit_rows(pg_conn)
    assert [(r["action"], r["phase"]) for r in rows] == [("pause", "intent"), ("pause", "outcome"),
                                                         ("resume", "intent"), ("resume", "outcome")]
    assert rows[0]["actor"] == "ann@ops pid 7" and rows[0]["reason"] == "incident 42"
    assert rows[2]["actor"] == "bob@ops pid 8"


def test_open_ended_pause_outlasts_a_timed_one(db: Database) -> None:
    timed = pause(db, timedelta(minutes=5), "short", None)
    open_ended = pause(db, None, "until we know", None)
    assert _active(db) == open_ended and _active(db, utcnow() + timedelta(days=30)) == open_ended
    assert {p.id for p in resume(db)} == {timed.id, open_ended.id}
    with pytest.raises(ValueError, match="positive"):
        pause(db, timedelta(0), "x", None)


def test_a_pause_during_the_window_builds_nothing(db: Database, pg_conn) -> None:
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    pause(db, timedelta(hours=1), "replica rebuild", "ann@ops pid 7")
    readings = functools.partial(take_readings, cpu=lambda s: 1.0)
    result = apply(db, Settings(databases=(db.settings,)), db.settings, readings_fn=readings)
    assert result.built == [] and len(result.refused) == 1 and result.all_refused
    (refused_id, reasons), = result.refused
    assert refused_id == rec_id and len(reasons) == 2  # the pause, and when the daemon tries again
    assert "paused by ann@ops pid 7" in reasons[0] and "replica rebuild" in reasons[0]
    assert reasons[1].startswith("the daemon retries at its next apply run from then on, ")
    assert rec_status(pg_conn, rec_id) == "approved" and audit_rows(pg_conn, "create_index") == []
    resume(db)
    assert [b.recommendation_id for b in apply(db, Settings(databases=(db.settings,)), db.settings,
                                               readings_fn=readings).built] == [rec_id]


# ---- the commands ----------------------------------------------------------------------------------------

def _config(tmp_path: Path, dsn: str, mode: str = "approve") -> str:
    path = tmp_path / "indexd.yaml"
    path.write_text(
        f"databases:\n  - name: main\n    dsn: {dsn}\n"
        f"indexing:\n  mode: {mode}\n  windows: []\n  lock_timeout: 2s\n"
        "  throttle: {cpu_sample: 100ms, max_cpu_pct: 100}\n"
        "logging: {file: null}\n", encoding="utf-8")
    return str(path)


def test_pause_and_resume_commands(db: Database, pg_dsn: str, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, pg_dsn)
    assert main(["--config", cfg, "pause", "--for", "90m", "--reason", "deploy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("main: paused by ") and "deploy" in out
    paused = _active(db)
    assert paused is not None and paused.reason == "deploy"
    assert timedelta(minutes=89) < paused.until - paused.paused_at <= timedelta(minutes=90)
    assert main(["--config", cfg, "pause", "--for", "soon"]) == 2
    assert "--for" in capsys.readouterr().err
    assert main(["--config", cfg, "resume"]) == 0
    assert "resumed (1 pause(s) ended)" in capsys.readouterr().out
    assert main(["--config", cfg, "resume"]) == 0
    assert "was not paused" in capsys.readouterr().out


def test_approve_reject_and_apply_commands(db: Database, pg_conn, pg_dsn: str, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, pg_dsn)
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"), status="pending")
    other = insert_recommendation(pg_conn, candidate("public", "t", "b"), status="pending")
    assert main(["--config", cfg, "approve", str(rec_id), "--reason", "ok"]) == 0
    assert f"#{rec_id} approved" in capsys.readouterr().out
    assert main(["--config", cfg, "reject", str(other)]) == 0
    assert main(["--config", cfg, "reject", str(other)]) == 2
    assert "is rejected: only pending, approved, failed" in capsys.readouterr().err
    assert main(["--config", cfg, "approve", "424242"]) == 2
    assert "no recommendation #424242" in capsys.readouterr().err

    assert main(["--config", cfg, "apply"]) == 2  # not a terminal and no --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["--config", cfg, "apply", "--dry-run"]) == 0
    assert "would build" in capsys.readouterr().out
    assert index_valid(pg_conn, "public", candidate("public", "t", "a").name()) is None

    pause(db, None, "hands off", None)
    assert main(["--config", cfg, "apply", "--yes"]) == 3  # every build refused by a guard
    assert "hands off" in capsys.readouterr().out
    resume(db)
    assert main(["--config", cfg, "apply", "--yes"]) == 0
    assert "built    public.indexd_t_a_" in capsys.readouterr().out
    assert rec_status(pg_conn, rec_id) == "built" and rec_status(pg_conn, other) == "rejected"


def test_apply_in_advise_mode_says_it_builds_nothing(db: Database, pg_conn, pg_dsn: str, tmp_path: Path,
                                                     capsys) -> None:
    cfg = _config(tmp_path, pg_dsn, mode="advise")
    make_table(pg_conn, "public", "t", rows=10)
    insert_recommendation(pg_conn, candidate("public", "t", "a"))
    assert main(["--config", cfg, "apply", "--yes"]) == 0
    assert "nothing is built" in capsys.readouterr().out


def test_pause_and_resume_say_it_once_on_the_terminal(db: Database, pg_dsn: str, tmp_path: Path) -> None:
    cfg = _config(tmp_path, pg_dsn)
    for argv, said in ((["pause", "--for", "10m", "--reason", "x"], "main: paused by "),
                       (["resume"], "main: resumed (1 pause(s) ended)")):
        done = subprocess.run([sys.executable, "-m", "indexd", "--config", cfg, *argv], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(said) and len(done.stdout.splitlines()) == 1
        assert done.stderr == ""  # not a second time as a log line

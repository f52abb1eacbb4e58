"""Events from the real code paths reach a real webhook receiver: a pause and its end, a real index build and a
failed one, leadership taken and lost, the CLI's own delivery, and the daemon (start, reload, pause expiry,
stop). The DSN carries a password (trust auth ignores it): it must never reach a body."""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from indexd import events
from indexd.cli import main
from indexd.config.schema import (
    DatabaseSettings,
    NotificationSettings,
    PoolSettings,
    Settings,
    WebhookSettings,
)
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster, free_port
from indexd.lifecycle.apply import apply
from indexd.lifecycle.leader import Leadership
from indexd.lifecycle.pause import pause, resume
from indexd.lifecycle.readings import take_readings
from indexd.service.databases import ensure_prepared
from indexd.service.notify import Notifications
from indexd.service.probe import refresh
from indexd.service.runtime import DatabaseRuntime, Runtime
from indexd.service.webhook import Backoff
from tests.support.daemon import DaemonProcess, daemon_config
from tests.support.lifecycle import candidate, insert_recommendation, make_table, rec_status
from tests.support.webhook_receiver import Receiver, receiver

SECRET = "hunter2-notify"
CALM_CPU = functools.partial(take_readings, cpu=lambda sample_s: 1.0)
FAST = Backoff(initial_s=0.05, max_s=0.2, jitter_s=0.01)


@pytest.fixture
def db_settings(pg_cluster: EmbeddedCluster, pg_dbname: str) -> DatabaseSettings:
    """The test database, reached through a DSN that spells out a password."""
    return DatabaseSettings(name="main", dsn=pg_cluster.dsn(pg_dbname, password=SECRET),
                            pool=PoolSettings(size=2, max_overflow=2))


@pytest.fixture
def hook() -> Iterator[tuple[Receiver, Notifications]]:
    """A receiver and the Notifications delivering every event to it (as JSON)."""
    with receiver() as rec:
        notes = Notifications(NotificationSettings(webhooks=(WebhookSettings(url=rec.url),)), host="db1",
                              backoff=FAST)
        notes.start()
        try:
            yield rec, notes
        finally:
            notes.close(1.0)
    assert events.subscribed() == 0
    assert not any(SECRET in r.raw.decode() for r in rec.received)


@pytest.fixture
def db(lifecycle_db: Callable[..., Database]) -> Database:
    return lifecycle_db(mode="approve", windows=(), lock_timeout=timedelta(seconds=1))


def _events(rec: Receiver, n: int) -> list[dict[str, object]]:
    return [r.body for r in rec.wait_for(n)]


def test_pause_and_resume_are_delivered(db: Database, hook: tuple[Receiver, Notifications]) -> None:
    rec, _ = hook
    made = pause(db, timedelta(hours=1), "deploy", "ann@ops")
    resume(db, "bob@ops")
    started, ended = _events(rec, 2)
    assert started["event"] == "pause_started" and started["database"] == "main"
    assert started["details"] == {"pause_id": made.id, "until": made.until.isoformat(), "reason": "deploy",
                                  "by": "ann@ops"}
    assert str(started["text"]).startswith("indexd on db1: main: indexing paused: by ann@ops at ")
    assert str(started["text"]).endswith(": deploy")
    assert ended["event"] == "pause_ended" and ended["details"]["pause_ids"] == [made.id]  # type: ignore[index]
    assert ended["text"] == "indexd on db1: main: indexing resumed: by bob@ops"


def test_a_real_build_and_a_failed_one_are_delivered(db: Database, pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                     pg_conn, hook: tuple[Receiver, Notifications]) -> None:
    rec, _ = hook
    make_table(pg_conn, "public", "orders", rows=2000)
    good = insert_recommendation(pg_conn, candidate("public", "orders", "a"))
    settings = Settings(databases=(db.settings,))
    result = apply(db, settings, db.settings, readings_fn=CALM_CPU)
    assert [b.recommendation_id for b in result.built] == [good]
    (built,) = _events(rec, 1)
    name = candidate("public", "orders", "a").name()
    assert built["event"] == "index_built" and built["database"] == "main"
    details = built["details"]
    assert isinstance(details, dict)
    assert details["index"] == f"public.{name}" and details["recommendation_id"] == good
    assert details["size_bytes"] > 0 and str(details["create_sql"]).startswith("CREATE INDEX CONCURRENTLY")

    # A build that cannot get its lock within lock_timeout fails (and is tried again later): build_failed.
    blocked = insert_recommendation(pg_conn, candidate("public", "orders", "b"))
    holder = pg_cluster.connect(pg_dbname, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        failed = apply(db, settings, db.settings, readings_fn=CALM_CPU)
    finally:
        holder.rollback()
        holder.close()
    assert [b.recommendation_id for b in failed.failed] == [blocked]
    _, event = _events(rec, 2)
    assert event["event"] == "build_failed"
    assert event["details"]["retry_later"] is True and "lock" in str(event["details"]["reason"])  # type: ignore[index]
    assert rec_status(pg_conn, blocked) == "approved"


def test_leadership_gained_and_lost_are_delivered(db: Database, pg_cluster: EmbeddedCluster, pg_dbname: str,
                                                  hook: tuple[Receiver, Notifications]) -> None:
    rec, _ = hook
    quiet = Leadership.for_database(db)  # a command's leadership for one run says nothing
    assert quiet.acquire()
    quiet.release()
    lead = Leadership.for_database(db, announce_changes=True)
    assert lead.acquire()
    pg_cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                       dbname=pg_dbname)
    assert not lead.held()
    gained, lost = _events(rec, 2)
    assert (gained["event"], lost["event"]) == ("leadership_gained", "leadership_lost")
    assert "no longer leads main" in str(lost["text"])
    time.sleep(0.1)
    assert len(rec.received) == 2


def test_a_timed_pause_that_runs_out_is_told_by_the_leading_daemon(
        db: Database, hook: tuple[Receiver, Notifications]) -> None:
    rec, _ = hook
    quiet = replace(db.settings, backups=replace(db.settings.backups, enabled=False))
    runtime = Runtime(Settings(databases=(quiet,)))
    target = runtime.databases["main"] = DatabaseRuntime(quiet, db)
    ensure_prepared(target)
    try:
        refresh(runtime, "main")  # the first look takes leadership and sets the mark
        made = pause(db, timedelta(milliseconds=600), "short", "ann@ops")
        refresh(runtime, "main")  # still paused: nothing to tell
        time.sleep(0.8)
        refresh(runtime, "main")
        refresh(runtime, "main")  # told once
        target.leadership.release()
    finally:
        target.leadership.release()
    bodies = _events(rec, 4)
    assert [b["event"] for b in bodies] == ["leadership_gained", "pause_started", "pause_ended", "leadership_lost"]
    ended = bodies[2]
    assert ended["details"]["how"] == "expired" and ended["details"]["pause_ids"] == [made.id]  # type: ignore
    assert "ran out" in str(ended["text"])
    time.sleep(0.1)
    assert len(rec.received) == 4


def test_the_pause_command_delivers_before_it_exits(db: Database, tmp_path: Path, capsys) -> None:
    with receiver() as rec:
        config = tmp_path / "indexd.yaml"
        config.write_text(
            f"databases:\n  - name: main\n    dsn: {db.settings.dsn}\nlogging: {{file: null}}\n"
            f"notifications:\n  webhooks:\n    - url: {rec.url}\n      format: slack\n"
            "      events: [pause_started]\n", encoding="utf-8")
        assert main(["--config", str(config), "pause", "--for", "1h", "--reason", "incident 7"]) == 0
        assert len(rec.received) == 1  # delivered while the command ran, not later
        assert main(["--config", str(config), "resume"]) == 0
        time.sleep(0.1)
    (got,) = rec.received
    text = got.body["text"]
    assert list(got.body) == ["text"] and "main: indexing paused" in text and "incident 7" in text
    assert SECRET not in got.raw.decode()
    assert "paused by" in capsys.readouterr().out


def test_the_daemon_notifies_reloads_its_webhooks_and_drains_at_stop(
        pg_cluster: EmbeddedCluster, pg_dbname: str, pg_conn, db: Database, tmp_path: Path) -> None:
    make_table(pg_conn, "public", "t", rows=2000)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    with receiver() as first, receiver() as second:
        hooks = f"notifications:\n  drain_timeout: 5s\n  webhooks:\n    - url: {first.url}\n"
        config = daemon_config(tmp_path / "indexd.yaml", db.settings.dsn, port=free_port(),
                               backups_dir=tmp_path / "backups", extra=hooks)
        text = config.read_text(encoding="utf-8").replace("mode: auto", "mode: approve")
        config.write_text(text, encoding="utf-8")
        d = DaemonProcess(config, tmp_path)
        try:
            d.wait_message("READY=1", timeout=60)
            names = d.wait_for(lambda: {r.body["event"] for r in first.received} >= {"leadership_gained",
                                                                                   "index_built"} or None,
                               timeout=90, what="leadership_gained and index_built at the first webhook")
            assert names and rec_status(pg_conn, rec_id) == "built"
            # SIGHUP: the second receiver takes over, for pause and leadership events only.
            config.write_text(text.replace(
                f"    - url: {first.url}\n",
                f"    - url: {second.url}\n      events: [pause_ended, leadership_lost]\n"), encoding="utf-8")
            d.signal(signal.SIGHUP)
            d.wait_for(lambda: "notifications: 1 webhook(s) after reload" in d.log(), timeout=15, what="reload")
            before = len(first.received)
            pause(db, timedelta(seconds=2), "short", "ann@ops")  # this process has no sink: the daemon tells
            (expired,) = [r.body for r in second.wait_for(1, timeout=30)]
            assert expired["event"] == "pause_ended" and expired["details"]["how"] == "expired"  # type: ignore
            code, metrics = d.get("/metrics")
            assert 'indexd_notifications_sent_total{webhook="127.0.0.1"}' in metrics
        finally:
            code, _ = d.stop(timeout=75)
        assert code == 0, d.log()[-4000:]
        lost = [r.body for r in second.wait_for(2, timeout=1)]
        assert [b["event"] for b in lost] == ["pause_ended", "leadership_lost"]  # sent before the daemon exited
        assert len(first.received) == before
    log = d.log()
    assert SECRET not in log and "secret-path" not in log
    assert not any(SECRET in r.raw.decode() for r in first.received + second.received)

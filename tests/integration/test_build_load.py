"""The latency probe on a real server: a real probe has a baseline in milliseconds; a build that runs while the
probe stays critical is cancelled and given back (not an attempt, its leftover dropped); apply does not start a
build while the probe is high, and says why and when it tries again. The probe's readings are scripted where the
test needs a load it cannot make on a shared machine (as host CPU is injected elsewhere)."""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest

from indexd.config.schema import Settings, ThrottleSettings
from indexd.db.pool import Database
from indexd.lifecycle import pacing
from indexd.lifecycle.apply import apply
from indexd.lifecycle.build import build_index
from indexd.lifecycle.ddl import prepare_session
from indexd.lifecycle.latency import LatencyProbe
from indexd.lifecycle.readings import take_readings
from indexd.state.recommendation_rows import load_recommendations
from tests.faults.test_build_faults import SLOW, _attempts, _slow_table
from tests.support.lifecycle import audit_rows, candidate, index_valid, insert_recommendation, make_table, rec_status

CALM_CPU = functools.partial(take_readings, cpu=lambda sample_s: 1.0)


class ScriptedProbe(LatencyProbe):
    """A real probe whose round trips after the first `real` samples are scripted."""

    def __init__(self, db: Database, scripted: list[float], real: int = 5) -> None:
        super().__init__(db)
        self.real, self.scripted = real, list(scripted)

    def sample(self) -> float | None:
        if self.real:
            self.real -= 1
            return super().sample()
        return self.scripted.pop(0) if len(self.scripted) > 1 else self.scripted[0]


def test_a_real_probe_has_a_baseline(lifecycle_db) -> None:
    db = lifecycle_db()
    probe = LatencyProbe(db)
    try:
        first = probe.burst()
        assert first is not None and first.baseline_ms is None and 0 < first.current_ms < 1000
        second = probe.burst()
        assert second is not None and second.baseline_ms is not None and second.samples == 5
    finally:
        probe.close()


def test_a_build_under_critical_latency_is_cancelled_and_given_back(lifecycle_db, pg_conn) -> None:
    db = lifecycle_db(lock_timeout=timedelta(seconds=2))
    rec_id = _slow_table(pg_conn)
    with db.connection() as conn:
        (rec,) = load_recommendations(conn, "indexd", ids=(rec_id,))
    probe = ScriptedProbe(db, [500.0])  # every sample during the build: far above any baseline
    probe.burst()  # the baseline: five real round trips
    try:
        result = build_index(db, rec, db.settings, probe=probe)
    finally:
        probe.close()
    assert result.outcome == "failed" and result.retry_later
    assert (result.reason or "").startswith("cancelled under load: the query latency probe stayed at 500.0 ms")
    assert rec_status(pg_conn, rec_id) == "approved" and _attempts(pg_conn, rec_id) == 0  # given back, no attempt
    assert index_valid(pg_conn, "public", SLOW.name()) is None  # the INVALID leftover is dropped
    create = audit_rows(pg_conn, "create_index")
    assert [(r["phase"], r["outcome"]) for r in create] == [("intent", "started"), ("outcome", "failed")]
    assert create[1]["reason"].startswith("cancelled under load")


def test_apply_does_not_start_a_build_while_the_probe_is_high(lifecycle_db, pg_conn,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    db = lifecycle_db(mode="approve", windows=(), throttle=ThrottleSettings(pause_between_builds=timedelta(0)))
    make_table(pg_conn, "public", "t", rows=100)
    rec_id = insert_recommendation(pg_conn, candidate("public", "t", "a"))
    probe = ScriptedProbe(db, [200.0])
    probe.burst()
    settings = Settings(databases=(db.settings,))
    plan = apply(db, settings, db.settings, readings_fn=CALM_CPU, probe=probe, dry_run=True)
    (only,) = plan.plans
    assert not only.decision.allowed and only.decision.guards == ("load",)
    assert only.decision.reasons[0].startswith("load: query latency probe 200.0 ms = ")
    assert (only.when or "").startswith("the daemon retries at its next apply run from then on, ")
    monkeypatch.setattr(pacing, "PATIENCE", timedelta(0))  # no waiting it out in a test
    result = apply(db, settings, db.settings, readings_fn=CALM_CPU, probe=probe)
    assert result.all_refused and result.refused[0][0] == rec_id
    assert rec_status(pg_conn, rec_id) == "approved" and audit_rows(pg_conn, "create_index") == []


def test_a_build_session_uses_the_configured_parallel_workers(lifecycle_db) -> None:
    db = lifecycle_db()
    conn = db.dedicated_connection(autocommit=True)
    try:
        prepare_session(conn, lock_timeout_s=1, statement_timeout_s=60,
                        parallel_workers=ThrottleSettings().build_parallel_workers)
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_parallel_maintenance_workers')")
            assert cur.fetchone()[0] == "0"  # the default keeps a build on one core
    finally:
        conn.close()

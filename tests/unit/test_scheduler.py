"""Which jobs run when: specs from the settings, misfire grace as a fraction of the interval."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from indexd.config.schedule import JOB_ORDER, interval_of, job_specs, misfire_grace, trigger, validate
from indexd.config.schema import BackupSettings, DatabaseSettings, IndexingSchedules, IndexingSettings, Settings
from indexd.errors import ConfigError

NOW = datetime(2026, 3, 2, 12, 0, 7, tzinfo=UTC)


def _settings(*dbs: DatabaseSettings) -> Settings:
    return Settings(databases=dbs)


def test_every_job_of_every_database_in_dependency_order() -> None:
    a = DatabaseSettings("a", "postgresql://x@h/a")
    b = DatabaseSettings("b", "postgresql://x@h/b", backups=BackupSettings(enabled=False))
    specs = job_specs(_settings(a, b))
    assert [s.job for s in specs if s.database == "a"] == list(JOB_ORDER)
    assert [s.job for s in specs if s.database == "b"] == [j for j in JOB_ORDER if not j.startswith("backup")]
    assert len({s.id for s in specs}) == len(specs)


def test_schedules_come_from_each_database_own_settings() -> None:
    sched = IndexingSchedules(capture="*/2 * * * *", apply="0 3 * * *")
    db = DatabaseSettings("a", "postgresql://x@h/a", indexing=IndexingSettings(schedule=sched),
                          backups=BackupSettings(schedule="15 1 * * *"))
    settings = replace(_settings(db), retention=replace(Settings().retention, schedule="5 4 * * *"))
    crons = {s.job: s.cron for s in job_specs(settings)}
    assert crons["capture"] == "*/2 * * * *"
    assert crons["apply"] == "0 3 * * *"
    assert crons["backup"] == "15 1 * * *"
    assert crons["backup_verify"] == db.backups.verify.restore_schedule
    assert crons["prune"] == "5 4 * * *"


@pytest.mark.parametrize(
    ("cron", "interval_s", "grace_s"),
    [
        ("* * * * *", 60, 15),
        ("*/5 * * * *", 300, 75),
        ("0 * * * *", 3600, 900),
        ("0 */6 * * *", 6 * 3600, 3600),  # capped at an hour
        ("30 3 * * 0", 7 * 86400, 3600),
    ],
)
def test_misfire_grace_is_a_fraction_of_the_interval(cron: str, interval_s: int, grace_s: int) -> None:
    assert interval_of(cron, NOW).total_seconds() == interval_s
    assert misfire_grace(cron, NOW) == grace_s


def test_triggers_are_utc() -> None:
    fire = trigger("0 1 * * *").get_next_fire_time(None, NOW)
    assert fire == datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


def test_bad_cron_is_a_config_error_naming_the_job() -> None:
    with pytest.raises(ConfigError):
        trigger("every minute")
    db = DatabaseSettings("a", "postgresql://x@h/a", indexing=IndexingSettings(schedule=IndexingSchedules(
        verify="61 * * * *")))
    problems = validate(_settings(db))
    assert len(problems) == 1 and "verify" in problems[0] and "databases.a" in problems[0]


def test_live_scheduler_heartbeat_reschedule_and_shutdown() -> None:
    import threading

    from indexd.service.scheduler import Scheduler

    beat, ran = threading.Event(), threading.Event()
    sched = Scheduler(run_job=lambda job, db: None, heartbeat=beat.set, probe=lambda name: None)
    assert not sched.alive()
    sched.start()
    try:
        assert beat.wait(5), "the heartbeat runs at once"
        assert sched.alive()
        a = DatabaseSettings("a", "postgresql://x@h/a")
        b = DatabaseSettings("b", "postgresql://x@h/b")
        sched.schedule(job_specs(_settings(a, b)), ["a", "b"])
        sched.run_once(ran.set, "check")
        ids = set(sched.next_runs())
        assert {"heartbeat", "a:probe", "b:probe", "a:capture", "b:prune", "a:backup_verify"} <= ids
        sched.schedule(job_specs(_settings(a)), ["a"])  # a reload that drops database b
        ids = set(sched.next_runs())
        assert "b:capture" not in ids and "b:probe" not in ids and "a:capture" in ids and "heartbeat" in ids
        assert ran.wait(5), "a run-once job runs (a reschedule leaves it alone)"
    finally:
        sched.shutdown()
    assert not sched.alive()

"""`indexd demo`: the whole cycle on a throw-away PostgreSQL, with a before/after comparison.

start a private cluster -> load the shop -> run the workload -> capture -> recommend -> build (in an open
window) -> re-run the same workload -> verify -> backup -> verify the backup by a test restore -> compare.

The workload runs use closed-loop clients (each sends its next statement when the last one returns): they give the
throughput. The per-shape before/after comparison times every shape alone (`simulate.time_alone`), so a shape's
time is that of its plan, not of what it shared the cores with, and on the same data: the "before" pass right
after the first run, the "after" pass right after the build, before the second run. (Timed after the second
run, the reports read what it had inserted: at three times the throughput it adds three times the rows to the
"today" and "last week" windows the reports aggregate, and they read 0.6x while their plans were unchanged.)

This module returns data and reports steps through a callback; the CLI prints them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from indexd.advisor.pipeline import advise
from indexd.advisor.store import save_recommendations
from indexd.backup.dump import run_backup
from indexd.backup.scratch import test_restore
from indexd.config.schema import (
    BackupSettings,
    DatabaseSettings,
    IndexingSettings,
    PoolSettings,
    RateLimitSettings,
    Settings,
    ThrottleSettings,
    VerifySettings,
    WindowSettings,
    WriteGuardSettings,
)
from indexd.db.pool import Database
from indexd.embedded import ClusterError, EmbeddedCluster
from indexd.errors import IndexdError
from indexd.lifecycle.apply import apply
from indexd.lifecycle.verify import verify_built
from indexd.simulate import WorkloadStats, drive, scenario, setup, time_alone
from indexd.state.migrations import migrate
from indexd.units import human_size
from indexd.workload.capture import take_snapshot
from indexd.workload.lookback import capture_workload

log = logging.getLogger(__name__)

DEMO_DB = "shop"
DEMO_NAME = "demo"  # the database's name in the settings: in logs, backup ids and its backups folder
WARM_UP = timedelta(seconds=2)
ALONE_ROUNDS = 30  # calls of each shape in the pass that times them one at a time
Step = Callable[[str, str, float], None]  # (step name, outcome text, seconds)


class DemoError(IndexdError):
    """The demo cannot run here (missing PostgreSQL binaries or HypoPG)."""


@dataclass
class DemoResult:
    scenario: str
    before: WorkloadStats | None = None
    after: WorkloadStats | None = None
    before_alone: WorkloadStats | None = None  # each shape timed alone, after the run
    after_alone: WorkloadStats | None = None
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    built: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)  # index name -> kept / reverted / inconclusive
    backup: dict[str, Any] | None = None
    dsn: str | None = None  # set with --keep
    cluster_dir: str | None = None
    config: str | None = None  # with --keep: a configuration for the kept cluster, so every command works on it
    stop_command: str | None = None
    elapsed_s: float = 0.0

    def comparison(self) -> list[dict[str, Any]]:
        """Per statement shape: ms per call before and after (the median call of each shape timed alone when that
        pass ran, else the workload run's mean), and the speed-up, heaviest in the workload run first."""
        if self.before is None or self.after is None:
            return []
        before = self.before_alone or self.before
        after = self.after_alone or self.after
        rows = []
        for name, _ in sorted(self.before.shapes.items(), key=lambda kv: -kv[1].total_ms):
            b, a = before.shapes.get(name), after.shapes.get(name)
            if b is None or not b.calls or a is None or not a.calls:
                continue
            speedup = b.typical_ms / a.typical_ms if a.typical_ms > 0 else None
            rows.append({"shape": name, "kind": b.kind, "calls_before": b.calls, "calls_after": a.calls,
                         "ms_before": round(b.typical_ms, 3), "ms_after": round(a.typical_ms, 3),
                         "speedup": round(speedup, 2) if speedup else None})
        return rows

    def throughput(self) -> tuple[float, float] | None:
        if self.before is None or self.after is None or not self.before.duration_s or not self.after.duration_s:
            return None
        return self.before.calls / self.before.duration_s, self.after.calls / self.after.duration_s


def demo_settings(dsn: str, backups_dir: Path, now: datetime) -> tuple[Settings, DatabaseSettings]:
    """Auto mode, a window open now, verification right after the re-run, guards sized for a demo box."""
    start = (now - timedelta(hours=1)).time().replace(microsecond=0)
    end = (now + timedelta(hours=2)).time().replace(microsecond=0)
    if end <= start:  # crossing midnight is fine for a window; make sure it is never empty
        end = dtime(23, 59, 59) if start < dtime(23, 0) else end
    indexing = IndexingSettings(
        mode="auto",
        min_calls=5,
        windows=(WindowSettings(start=start, end=end, timezone="UTC"),),
        # No application shares the throw-away cluster: a second between builds is enough to show the pacing.
        throttle=ThrottleSettings(max_cpu_pct=100.0, cpu_sample=timedelta(milliseconds=200),
                                  max_active_backends_pct=100.0, max_waiting_backends=50,
                                  pause_between_builds=timedelta(seconds=1)),
        rate_limit=RateLimitSettings(per_hour=50, per_day=100),
        write_guard=WriteGuardSettings(writes_per_second=1_000_000.0),
        verify=VerifySettings(after=timedelta(0), min_calls=10),
    )
    backups = BackupSettings(dir=str(backups_dir))
    db = DatabaseSettings(name=DEMO_NAME, dsn=dsn, pool=PoolSettings(size=2, max_overflow=2), indexing=indexing,
                          backups=backups)
    return Settings(databases=(db,), indexing=indexing, backups=backups), db


def _check_prerequisites() -> EmbeddedCluster:
    try:
        cluster = EmbeddedCluster()
    except ClusterError as exc:
        raise DemoError(f"{exc}; run 'make deps' to install PostgreSQL 15 and HypoPG") from None
    if not cluster.has_extension("hypopg"):
        raise DemoError("HypoPG is not installed (postgresql-15-hypopg): run 'make deps'")
    if not cluster.has_extension("pg_stat_statements"):
        raise DemoError("pg_stat_statements is not installed (postgresql-contrib): run 'make deps'")
    return cluster


@contextmanager
def _step(report: Step, name: str, outcome: list[str]) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    report(name, outcome[0] if outcome else "done", time.monotonic() - t0)


def run_demo(scenario_name: str = "small", *, keep: bool = False, workload: timedelta = timedelta(seconds=20),
             clients: int = 2, report: Step | None = None) -> DemoResult:
    """Run the whole cycle; the cluster is destroyed at the end unless `keep`."""
    report = report or (lambda name, outcome, seconds: None)
    sc = scenario(scenario_name)
    started = time.monotonic()
    cluster = _check_prerequisites()
    result = DemoResult(sc.name)
    kept = False
    try:
        out: list[str] = []
        with _step(report, "start PostgreSQL", out):
            cluster.start()
            dsn = cluster.create_database(DEMO_DB)
            out.append(f"private cluster on 127.0.0.1:{cluster.port}")
        _cycle(cluster, dsn, sc.name, workload, clients, result, report)
        if keep:
            kept = True
            result.dsn, result.cluster_dir = dsn, str(cluster.base_dir)
            result.config = str(write_kept_config(cluster.data_dir.parent, dsn))
            result.stop_command = _stop_command(cluster)
    finally:
        if not kept:
            cluster.destroy()
    result.elapsed_s = time.monotonic() - started
    return result


def write_kept_config(base_dir: Path, dsn: str) -> Path:
    """A configuration file for a kept demo cluster (inside its folder, removed with it): the demo database under
    the demo's own name (so its backups are found and verified), in mode approve, no window, the demo's guard
    sizes and its backups folder, logs on stderr only."""
    path = base_dir / "indexpilot_config.yaml"
    text = (
        "# Written by 'indexd demo --keep' for its throw-away cluster; removed with it.\n"
        "environment: development\n"
        f"databases:\n  - name: {DEMO_NAME}\n    dsn: {json.dumps(dsn)}\n"
        "indexing:\n  mode: approve\n  min_calls: 5\n  windows: []\n"
        "  throttle: {max_cpu_pct: 100, max_active_backends_pct: 100, max_waiting_backends: 50}\n"
        "  rate_limit: {per_hour: 50, per_day: 100}\n"
        f"backups:\n  dir: {json.dumps(str(base_dir / 'backups'))}\n"
        "logging:\n  file: null\n  format: text\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def _stop_command(cluster: EmbeddedCluster) -> str:
    stop = f"{cluster.bindir / 'pg_ctl'} -D {cluster.data_dir} stop"
    if cluster.os_user:
        stop = f"su {cluster.os_user} -s /bin/sh -c '{stop}'"
    return f"{stop} && rm -rf {cluster.base_dir}"


def _cycle(cluster: EmbeddedCluster, dsn: str, sc: str, workload: timedelta, clients: int, result: DemoResult,
           report: Step) -> None:
    assert cluster.base_dir is not None
    settings, db_settings = demo_settings(dsn, Path(cluster.base_dir) / "backups", datetime.now(UTC))
    out: list[str] = []
    with _step(report, f"load the {sc} shop", out):
        setup(dsn, sc)
        out.append(f"~{scenario(sc).approx_rows:,} rows, primary keys only")
    db = Database(db_settings, settings.retry, settings.circuit_breaker)
    try:
        migrate(db)
        cluster.execute("SELECT pg_stat_statements_reset()", dbname=DEMO_DB)
        # A short warm-up fills the caches (a fair "before") and gives every statement a row in the baseline
        # snapshot that starts the "before" window verification compares with.
        _workload(dsn, sc, WARM_UP, clients, report, "warm up")
        take_snapshot(db)
        result.before = _workload(dsn, sc, workload, clients, report, "run the workload")
        result.before_alone = _alone(dsn, report)
        _advise(db, db_settings, result, report)
        _build(db, settings, db_settings, result, report)
        result.after_alone = _alone(dsn, report)  # on the data the "before" pass read (see the module's notes)
        result.after = _workload(dsn, sc, workload, clients, report, "re-run the same workload")
        _verify(db, settings, db_settings, result, report)
        _backup(settings, db_settings, result, report)
    finally:
        db.close()


def _workload(dsn: str, sc: str, duration: timedelta, clients: int, report: Step, name: str) -> WorkloadStats:
    out: list[str] = []
    with _step(report, name, out):
        stats = drive(dsn, sc, duration, clients=clients, seed=7)
        out.append(f"{stats.calls:,} statements, {len(stats.shapes)} shapes, {clients} clients, "
                   f"{stats.calls / max(stats.duration_s, 0.001):,.0f}/s")
    return stats


def _alone(dsn: str, report: Step) -> WorkloadStats:
    out: list[str] = []
    with _step(report, "time each statement shape alone", out):
        stats = time_alone(dsn, rounds=ALONE_ROUNDS, seed=7)
        out.append(f"{ALONE_ROUNDS} calls of each of {len(stats.shapes)} shapes, one at a time")
    return stats


def _advise(db: Database, db_settings: DatabaseSettings, result: DemoResult, report: Step) -> None:
    out: list[str] = []
    with _step(report, "capture pg_stat_statements", out):
        snap = take_snapshot(db)
        out.append(f"snapshot {snap.id}: {snap.statements} statements")
    out = []
    with _step(report, "recommend indexes (HypoPG what-if)", out):
        advice = advise(db, db_settings.indexing, capture_workload(db, db_settings.indexing))
        save_recommendations(db, advice.recommendations, advice.create_sql, supersede_missing=True)
        out.append(f"{advice.analyzed_statements} statements analyzed, {len(advice.recommendations)} recommended")
    for rec in advice.recommendations:
        cand = rec.candidate
        result.recommendations.append({
            "index": cand.name(), "table": f"{cand.schema}.{cand.table}",
            "columns": [k.label() for k in cand.keys], "where": cand.where, "improvement_pct": rec.improvement_pct,
            "estimated_size_bytes": rec.estimated_size_bytes,
            "create_sql": advice.create_sql.get(cand.fingerprint()),
        })


def _build(db: Database, settings: Settings, db_settings: DatabaseSettings, result: DemoResult, report: Step) -> None:
    out: list[str] = []
    with _step(report, "build in the open window (CREATE INDEX CONCURRENTLY)", out):
        res = apply(db, settings, db_settings)
        for b in res.built:
            if b.outcome == "succeeded":
                result.built.append({"index": f"{b.index_schema}.{b.index_name}", "size_bytes": b.size_bytes,
                                     "build_s": round(b.duration_s, 2)})
        extra = f", {len(res.failed)} failed" if res.failed else ""
        extra += f", {len(res.refused)} refused by a guard" if res.refused else ""
        out.append(f"{len(result.built)} built{extra}")
        take_snapshot(db)  # the baseline the verification compares against


def _verify(db: Database, settings: Settings, db_settings: DatabaseSettings, result: DemoResult, report: Step) -> None:
    out: list[str] = []
    with _step(report, "verify the new indexes (real before/after)", out):
        take_snapshot(db)
        records = verify_built(db, settings, db_settings)
        for r in records:
            result.verdicts[f"{r.index_schema}.{r.index_name}"] = r.verdict
        counts = {v: sum(1 for r in records if r.verdict == v) for v in ("kept", "reverted", "inconclusive")}
        out.append(", ".join(f"{n} {v}" for v, n in counts.items() if n) or "nothing to judge")


def _backup(settings: Settings, db_settings: DatabaseSettings, result: DemoResult, report: Step) -> None:
    out: list[str] = []
    with _step(report, "back up (pg_dump, checksum, manifest)", out):
        b = run_backup(settings, db_settings)
        result.backup = {"id": b.id, "size_bytes": b.size_bytes, "status": b.status, "sha256": b.sha256,
                         "path": str(b.path)}
        out.append(f"{b.id}, {human_size(b.size_bytes)}, {b.status}")
    out = []
    with _step(report, "verify the backup (test restore)", out):
        r = test_restore(settings, b.id)
        result.backup["restore_verified"] = r.ok
        result.backup["tables_compared"] = r.tables_compared
        result.backup["restore_test"] = r.result
        out.append(f"{r.tables_compared} tables restored and counted: {r.result}" + ("" if r.ok else f" ({r.detail})"))

"""Prometheus metrics on a registry of our own. A custom collector reads the live state at scrape time
(pool statistics, breaker, probe readings, backups); job durations are a histogram observed as runs end.
Names follow Prometheus conventions: base units (seconds, bytes), `_total` for counters, a `database` label.
A job's name is the label `job_name`: `job` and `instance` are the scrape target's own labels in Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from indexd import __version__
from indexd.config.schedule import job_specs
from indexd.service.runtime import DatabaseRuntime, JobRecord, Runtime
from indexd.state.statuses import QUEUED, Status

BREAKER_STATES = ("closed", "half_open", "open")
JOB_OUTCOMES = ("ok", "failed", "skipped")
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)


def _ts(value: object) -> float | None:
    return value.timestamp() if hasattr(value, "timestamp") else None


class StateCollector(Collector):
    """Every gauge and counter that reflects live state, read from the Runtime at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        targets = rt.database_list()
        info = GaugeMetricFamily("indexd_info", "indexd build information", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("indexd_main_loop_age_seconds", "seconds since the main loop last ran",
                                value=rt.loop_age())
        yield from self._pool(targets)
        yield from self._servers(rt)
        yield from self._probe(targets)
        yield from self._jobs(targets)
        yield from self._backups(targets)
        reloads = CounterMetricFamily("indexd_config_reloads", "configuration reloads", labels=["outcome"])
        for outcome, n in sorted(rt.reloads.items()):
            reloads.add_metric([outcome], n)
        yield reloads

    def _pool(self, targets: list[DatabaseRuntime]) -> Iterator[Metric]:
        conns = GaugeMetricFamily("indexd_pool_connections", "pooled connections by state",
                                  labels=["database", "state"])
        limit = GaugeMetricFamily("indexd_pool_max_connections", "pool size plus max overflow", labels=["database"])
        counters = {
            "waits": "checkouts that found every connection busy",
            "timeouts": "checkouts that gave up after pool.timeout",
            "retries": "retried database operations",
            "connect_failures": "failed connection attempts",
            "invalidations": "connections dropped as broken",
            "recycles": "connections replaced at the end of their max lifetime",
        }
        families = {k: CounterMetricFamily(f"indexd_pool_{k}" if k != "retries" else "indexd_retries", doc,
                                           labels=["database"]) for k, doc in counters.items()}
        breaker = GaugeMetricFamily("indexd_breaker_state", "circuit breaker state (1 for the current one)",
                                    labels=["database", "state"])
        opens = CounterMetricFamily("indexd_breaker_opens", "times the circuit breaker opened", labels=["database"])
        for t in targets:
            s = t.db.stats()
            conns.add_metric([t.name, "in_use"], s.checked_out)
            conns.add_metric([t.name, "idle"], max(0, s.size - s.checked_out))
            conns.add_metric([t.name, "overflow"], s.overflow)
            limit.add_metric([t.name], t.settings.pool.size + t.settings.pool.max_overflow)
            for key, fam in families.items():
                fam.add_metric([t.name], getattr(s, key))
            for state in BREAKER_STATES:
                breaker.add_metric([t.name, state], 1.0 if s.breaker_state == state else 0.0)
            opens.add_metric([t.name], s.breaker_opens)
        yield from (conns, limit, *families.values(), breaker, opens)

    def _servers(self, rt: Runtime) -> Iterator[Metric]:
        """Each server's connection budget, shared by its databases, and its leadership session."""
        conns = GaugeMetricFamily("indexd_server_connections", "connections indexd holds on a server (pooled and "
                                  "dedicated) by state", labels=["server", "state"])
        counters = {k: CounterMetricFamily(f"indexd_server_connection_{k}", doc, labels=["server"]) for k, doc in (
            ("waits", "connection attempts that found the server's budget full"),
            ("evictions", "idle connections closed to make room in the server's budget"),
            ("timeouts", "connection attempts that gave up waiting for the server's budget"))}
        for budget in rt.budgets.all():
            stats = budget.stats()
            for state in ("open", "limit", "peak"):
                conns.add_metric([budget.server, state], stats[state])
            for key, fam in counters.items():
                fam.add_metric([budget.server], stats[key])
        held = GaugeMetricFamily("indexd_leadership_locks", "leader locks held by the server's leadership session",
                                 labels=["server", "database"])
        for coord in rt.coordinators.all():
            held.add_metric([coord.server, coord.database], coord.held_count())
        yield from (conns, *counters.values(), held)

    def _probe(self, targets: list[DatabaseRuntime]) -> Iterator[Metric]:
        up = GaugeMetricFamily("indexd_database_up", "1 when the last probe reached the database", labels=["database"])
        leader = GaugeMetricFamily("indexd_leader", "1 when this process holds the database's leader lock",
                                   labels=["database"])
        paused = GaugeMetricFamily("indexd_paused", "1 while an emergency pause is active", labels=["database"])
        since = GaugeMetricFamily("indexd_paused_since_timestamp_seconds", "when the active pause began",
                                  labels=["database"])
        recs = GaugeMetricFamily("indexd_recommendations", "stored recommendations by status",
                                 labels=["database", "status"])
        pending = GaugeMetricFamily("indexd_recommendations_pending", "recommendations waiting for a decision or a "
                                    "build", labels=["database"])
        saving = GaugeMetricFamily("indexd_recommendations_pending_saving_ratio",
                                   "estimated share of the workload's cost the pending recommendations would save "
                                   "(0..1)", labels=["database"])
        progress = GaugeMetricFamily("indexd_index_build_progress_ratio", "index builds in progress (0..1)",
                                     labels=["database", "index"])
        age = GaugeMetricFamily("indexd_probe_age_seconds", "seconds since the database was last probed",
                                labels=["database"])
        for t in targets:
            p = t.probe
            up.add_metric([t.name], 1.0 if p.up else 0.0)
            leader.add_metric([t.name], 1.0 if t.leader else 0.0)
            paused.add_metric([t.name], 1.0 if p.paused else 0.0)
            if p.paused and p.pause_since is not None:
                since.add_metric([t.name], p.pause_since.timestamp())
            for status in Status:
                recs.add_metric([t.name, status], p.recommendations.get(status, 0))
            pending.add_metric([t.name], sum(p.recommendations.get(s, 0) for s in QUEUED))
            saving.add_metric([t.name], min(1.0, p.pending_saving_pct / 100))
            for index, ratio in sorted(p.builds.items()):
                progress.add_metric([t.name, index], ratio)
            if p.at:
                age.add_metric([t.name], self.runtime.clock() - p.at)
        yield from (up, leader, paused, since, recs, pending, saving, progress, age)

    def _jobs(self, targets: list[DatabaseRuntime]) -> Iterator[Metric]:
        runs = CounterMetricFamily("indexd_job_runs", "job runs by outcome", labels=["database", "job_name", "outcome"])
        with self.runtime.lock:
            counts = dict(self.runtime.job_counts)
        # Every outcome of every scheduled job (and of any job that ran), zeros included from the start: a series
        # born at 1 would hide its first run from rate() and increase(), a first failure above all.
        pairs = {(d, j) for d, j, _ in counts} | {(s.database, s.job) for s in job_specs(self.runtime.settings)}
        for database, job in sorted(pairs):
            for outcome in JOB_OUTCOMES:
                runs.add_metric([database, job, outcome], counts.get((database, job, outcome), 0))
        yield runs
        built = CounterMetricFamily("indexd_indexes_built", "indexes built by this process", labels=["database"])
        reverted = CounterMetricFamily("indexd_indexes_reverted", "indexes reverted by this process",
                                       labels=["database"])
        failed = CounterMetricFamily("indexd_index_build_failures", "index builds that failed", labels=["database"])
        last_ok = GaugeMetricFamily("indexd_job_last_success_timestamp_seconds", "when each job last succeeded",
                                    labels=["database", "job_name"])
        captured = GaugeMetricFamily("indexd_statements_captured", "statements in the last workload snapshot",
                                     labels=["database"])
        for t in targets:
            built.add_metric([t.name], t.counters.get("indexes_built", 0))
            reverted.add_metric([t.name], t.counters.get("indexes_reverted", 0))
            failed.add_metric([t.name], t.counters.get("index_build_failures", 0))
            for job, at in sorted(t.last_success.items()):
                last_ok.add_metric([t.name, job], at.timestamp())
            if t.captured_statements is not None:
                captured.add_metric([t.name], t.captured_statements)
        yield from (built, reverted, failed, last_ok, captured)

    def _backups(self, targets: list[DatabaseRuntime]) -> Iterator[Metric]:
        last = GaugeMetricFamily("indexd_backup_last_success_timestamp_seconds", "when the last good backup finished",
                                 labels=["database"])
        size = GaugeMetricFamily("indexd_backup_last_size_bytes", "size of the last good backup", labels=["database"])
        took = GaugeMetricFamily("indexd_backup_duration_seconds", "how long the last good backup took",
                                 labels=["database"])
        verified = GaugeMetricFamily("indexd_backup_last_verified_timestamp_seconds",
                                     "when a backup was last verified", labels=["database"])
        fails = GaugeMetricFamily("indexd_backup_consecutive_failures", "failed backups since the last good one",
                                  labels=["database"])
        for t in targets:
            b = t.probe.last_backup
            if not b:
                continue
            for fam, key in ((last, "last_success"), (verified, "last_verified")):
                if (ts := _ts(b.get(key))) is not None:
                    fam.add_metric([t.name], ts)
            for fam, key in ((size, "last_size_bytes"), (took, "last_duration_s"), (fails, "consecutive_failures")):
                if b.get(key) is not None:
                    fam.add_metric([t.name], float(b[key]))
        yield from (last, size, took, verified, fails)


class Metrics:
    """The registry served on /metrics: the state collector plus the job duration histogram."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(runtime))
        self.job_duration = Histogram("indexd_job_duration_seconds", "job run duration", ["database", "job_name"],
                                      buckets=JOB_BUCKETS, registry=self.registry)

    def observe(self, rec: JobRecord) -> None:
        self.job_duration.labels(rec.database, rec.job).observe(rec.duration_s)

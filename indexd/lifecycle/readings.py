"""Readings for the guards, taken right before each mutation: backends from pg_stat_activity, replica lag from
pg_stat_replication, the latency probe (latency.py), the active pause, recent builds and the last build's end
(audit log), the table's write rate and size, whether we still hold leadership (and who does, when we do not),
and host CPU (psutil).

All the I/O of the decision lives here, so `guards.decide` stays pure. Every reading describes the database
server: host CPU is that of the machine indexd runs on, so it is read only when that machine is the database's
(throttle.host_cpu: auto when the DSN reaches it through a unix socket or a loopback address, or always).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psutil
import psycopg2.errors

from indexd.config.schema import IndexingSettings, Settings, ThrottleSettings
from indexd.db.locality import is_local
from indexd.db.pool import Database, PgConnection
from indexd.lifecycle import guards
from indexd.lifecycle.guards import BuildRequest, Decision, Readings
from indexd.lifecycle.latency import LatencyProbe
from indexd.lifecycle.leader import Leadership
from indexd.state import audit, job_runs
from indexd.state.pause import active_pause
from indexd.state.recommendation_rows import StoredRecommendation

log = logging.getLogger(__name__)

CpuSampler = Callable[[float], float]  # sample seconds -> percent busy
READINGS_LOCK_TIMEOUT = timedelta(milliseconds=300)  # readings never queue behind the application's locks


def host_cpu_pct(sample_s: float) -> float:
    """Host CPU use in percent over `sample_s` seconds (blocks that long)."""
    return float(psutil.cpu_percent(interval=max(0.1, sample_s)))


def database_host_cpu(db: Database, throttle: ThrottleSettings, cpu: CpuSampler) -> float | None:
    """This host's CPU when it is the database server's (see the module); None when it is not measured (also
    when max_cpu_pct is 100: no reading could exceed it, so the sample's seconds are saved)."""
    if throttle.host_cpu == "never" or (throttle.host_cpu == "auto" and not is_local(db.settings.dsn)) \
            or throttle.max_cpu_pct >= 100:
        return None
    return cpu(throttle.cpu_sample.total_seconds())


_HOLDER = """
SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr), a.client_hostname, a.client_port,
       a.backend_start
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = %s)
   AND ((l.classid::bigint << 32) | l.objid::bigint) = %s::bigint
"""


def leader_holder(conn: PgConnection, key: int, state_schema: str, leadership_database: str) -> str | None:
    """Who holds the leader lock `key` (its session in pg_stat_activity, and the last apply run any process
    recorded), for the refusal; None when nobody does (or it cannot be seen: pg_read_all_stats shows it). The lock
    lives in the server's leadership database; pg_locks shows every database's locks, so any connection sees it."""
    with conn.cursor() as cur:
        cur.execute(_HOLDER, (leadership_database, key))
        row = cur.fetchone()
    if row is None:
        return None
    pid, app, addr, hostname, port, since = row
    if since is None:  # another role's session, and no pg_read_all_stats: only its pid is visible
        text = f"its session: backend pid {pid}"
    else:
        where = f"{hostname or addr}:{port}" if addr else "a local socket"
        text = f"its session: backend pid {pid}, {app or 'no application name'}, from {where}, since {since:%H:%M %Z}"
    last = job_runs.last_started(conn, state_schema, "apply")
    return text + (f"; the last apply run started at {last:%Y-%m-%d %H:%M %Z}" if last else "")


@dataclass(frozen=True)
class ServerLoad:
    active_backends: int
    max_connections: int
    waiting_backends: int
    replica_lag_s: float | None


def server_load(conn: PgConnection) -> ServerLoad:
    """Client backends running a statement (not counting us), those waiting on a lock, and the worst lag of
    any streaming replica (None when none is connected)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE state = 'active' AND pid <> pg_backend_pid()),"
            " count(*) FILTER (WHERE wait_event_type = 'Lock'),"
            " current_setting('max_connections')::int"
            " FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        active, waiting, max_conn = cur.fetchone()
        cur.execute(
            "SELECT max(extract(epoch FROM greatest(write_lag, flush_lag, replay_lag))), count(*)"
            " FROM pg_stat_replication"
        )
        lag, replicas = cur.fetchone()
    replica_lag = None if not replicas else float(lag or 0.0)
    return ServerLoad(int(active), int(max_conn), int(waiting), replica_lag)


# A partitioned table has no rows of its own: its size and writes are those of its partitions.
_TABLE_FACTS = """
WITH t AS (
  SELECT coalesce((SELECT array_agg(p.relid::oid::bigint) FROM pg_partition_tree(c.oid) p),
                  ARRAY[c.oid::bigint]) AS parts
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)
SELECT t.parts,
       (SELECT coalesce(sum(k.relpages::bigint), 0) FROM pg_class k WHERE k.oid::bigint = ANY(t.parts))
         * current_setting('block_size')::bigint,
       (SELECT coalesce(sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del), 0) FROM pg_stat_user_tables s
         WHERE s.relid::bigint = ANY(t.parts))
         / greatest(1, extract(epoch FROM now() - coalesce(d.stats_reset, pg_postmaster_start_time())))
  FROM t LEFT JOIN pg_stat_database d ON d.datname = current_database()
"""


def table_facts(conn: PgConnection, schema: str, table: str) -> tuple[int, float]:
    """(heap bytes, writes per second) of a table, summed over its partitions when it is partitioned; the write
    rate is rows inserted + updated + deleted since the statistics were reset (or the server started), as the
    advisor measures it. (0, 0.0) if it is gone.

    The exact size needs a share lock on the table: when someone holds it exclusively we do not wait (that is
    what lock_timeout on this connection is for) and fall back to the catalog's page count.
    """
    with conn.cursor() as cur:
        cur.execute(_TABLE_FACTS, (schema, table))
        row = cur.fetchone()
        if row is None:
            return 0, 0.0
        parts, catalog_bytes, writes = row
        cur.execute("SAVEPOINT table_size")
        try:
            cur.execute("SELECT coalesce(sum(pg_relation_size(x)), 0) FROM unnest(%s::oid[]) x", (list(parts),))
            size = int(cur.fetchone()[0])
            cur.execute("RELEASE SAVEPOINT table_size")
        except psycopg2.errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT table_size")
            log.info("%s.%s is locked: its size comes from the catalog", schema, table)
            size = int(catalog_bytes)
    return size, float(writes)


def build_request(rec: StoredRecommendation, table_bytes: int, *, ignore_window: bool = False) -> BuildRequest:
    return BuildRequest(recommendation_id=rec.id, table=rec.table, index_name=rec.index_name,
                        table_bytes=table_bytes, improvement_pct=rec.improvement_pct,
                        write_overhead=rec.write_overhead, benefit_ms_per_s=rec.benefit_ms_per_s,
                        ignore_window=ignore_window)


def gather_readings(
    db: Database,
    table_schema: str,
    table_name: str,
    settings: IndexingSettings,
    leadership: Leadership | None,
    now: datetime,
    *,
    cpu: CpuSampler = host_cpu_pct,
    probe: LatencyProbe | None = None,
) -> tuple[int, Readings]:
    """The readings before a mutation of an index on this table, and the table's heap size in bytes.
    Leadership is checked last, after the CPU sample and the probe, so it is as fresh as possible."""
    cpu_pct = database_host_cpu(db, settings.throttle, cpu)
    reading = probe.burst(settings.throttle) if probe is not None and settings.throttle.latency_probe else None
    schema = db.settings.state_schema
    with db.connection(lock_timeout=READINGS_LOCK_TIMEOUT) as conn:
        load = server_load(conn)
        table_bytes, writes = table_facts(conn, table_schema, table_name)
        paused = active_pause(conn, schema, now)
        starts = audit.build_starts_since(conn, schema, now - timedelta(days=1))
        last_end = audit.last_build_end(conn, schema)
        leads = leadership is not None and leadership.held()
        holder = None if leads or leadership is None else leader_holder(conn, leadership.key, schema,
                                                                          db.settings.leadership.database)
    readings = Readings(
        taken_at=now, is_leader=leads, pause=paused, cpu_pct=cpu_pct,
        active_backends=load.active_backends, max_connections=load.max_connections,
        waiting_backends=load.waiting_backends, replica_lag_s=load.replica_lag_s, build_starts=tuple(starts),
        table_writes_per_second=writes, probe=reading, leader_holder=holder, last_build_end=last_end,
    )
    log.debug("readings for %s.%s: %s", table_schema, table_name, readings)
    return table_bytes, readings


def take_readings(
    db: Database,
    rec: StoredRecommendation,
    settings: IndexingSettings,
    leadership: Leadership | None,
    now: datetime,
    *,
    ignore_window: bool = False,
    cpu: CpuSampler = host_cpu_pct,
    probe: LatencyProbe | None = None,
) -> tuple[BuildRequest, Readings]:
    """Everything `decide` needs about building `rec` now: the request (with the table's current size) and
    the readings."""
    table_bytes, readings = gather_readings(db, rec.table_schema, rec.table_name, settings, leadership, now, cpu=cpu,
                                            probe=probe)
    return build_request(rec, table_bytes, ignore_window=ignore_window), readings


def drop_decision(
    db: Database,
    settings: Settings,
    indexing: IndexingSettings,
    leadership: Leadership | None,
    now: datetime,
    *,
    table: str,
    index_name: str,
    respect_window: bool,
    cpu: CpuSampler = host_cpu_pct,
) -> Decision:
    """May indexd drop an index now? Read right before the drop.

    A drop always respects the emergency pause, `bypass`, leadership and the load guard (a DROP INDEX
    CONCURRENTLY waits for every transaction touching the table: not while the server is struggling). The
    maintenance window applies only when `respect_window`: dropping an unused index can wait for it, reverting
    one that made things worse should not. The rate limit never applies: it counts builds, and a revert undoes one.
    """
    cpu_pct = database_host_cpu(db, indexing.throttle, cpu)
    with db.connection() as conn:
        load = server_load(conn)
        paused = active_pause(conn, db.settings.state_schema, now)
    found = Readings(taken_at=now, is_leader=leadership is not None and leadership.held(), pause=paused,
                     cpu_pct=cpu_pct, active_backends=load.active_backends, max_connections=load.max_connections,
                     waiting_backends=load.waiting_backends, replica_lag_s=load.replica_lag_s, build_starts=())
    window = guards.check_window(BuildRequest(0, table, index_name, table_bytes=0), indexing, now) \
        if respect_window else []
    return guards.combine([("pause", guards.check_pause(found)), ("bypass", guards.check_bypass(settings.bypass)),
                           ("load", guards.check_load(indexing, found, now)), ("leader", guards.check_leader(found)),
                           ("window", window)])

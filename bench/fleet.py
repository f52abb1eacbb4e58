"""A fleet of databases in one daemon: `python -m bench.fleet [--sizes 10,50,200,1000] [--round-timeout S]`.

One embedded server with max_connections = 100 holds the largest fleet's databases, copied from one template
(on /dev/shm when there is room: the copies are ~7.5 MB of small files each). For each size, `indexd run` (a
real subprocess) is started on the first N databases twice:

1. first start (the state schema is migrated in every database): seconds to /health/ready, then after an idle
   while: indexd sessions on the server, RSS, threads; then the time a SIGTERM stop takes;
2. second start with INDEXD_RUN_JOBS_AT_START=1: ready time without migrations, the time until every database
   finished its start-up round (bounded by --round-timeout), the peak of indexd sessions and threads during it,
   sessions, RSS and threads at idle after it, and the stop time.

Sessions are counted by the server (pg_stat_activity, application_name = indexd) every 0.2 s; the daemon's own
count of its budget's peak comes from /health. The server may show one session more than the budget for a
moment: a backend whose connection was just closed to make room takes a little while to exit. Figures go to
stdout and bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from indexd.embedded import EmbeddedCluster, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "fleet.json"
DB_BYTES = 8 * 1024**2  # one copy of the template, about
MB = 1024**2


class Daemon:
    """`indexd run` on a config, with a sampler of the server's indexd sessions and the process's threads."""

    def __init__(self, cluster: EmbeddedCluster, config: Path, port: int, log: Path, round_at_start: bool) -> None:
        self.cluster, self.port = cluster, port
        env = dict(os.environ, INDEXD_RUN_JOBS_AT_START="1" if round_at_start else "0")
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "indexd", "run", "--config", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_sessions = self.peak_threads = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def sessions(self) -> int:
        return int(self.cluster.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'indexd'")[0][0])

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak_sessions = max(self.peak_sessions, self.sessions())
                self.peak_threads = max(self.peak_threads, self.ps.num_threads())
            except (psutil.Error, OSError):
                return

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, None

    def wait(self, check: Any, timeout: float, every: float = 0.2) -> float | None:
        """Seconds since start when check() first held (looked at every `every` s: a /health of a thousand
        databases is work for the daemon too); None when it did not within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"indexd exited with {self.proc.returncode}; see {self._log.name}")
            if check():
                return round(time.monotonic() - self.started, 2)
            time.sleep(every)
        return None

    def idle_figures(self, settle: float) -> dict[str, Any]:
        time.sleep(settle)
        _, health = self.get("/health")
        budget = [s["connections"] for s in (health or {}).get("servers", {}).values()]
        return {"sessions_at_idle": self.sessions(), "rss_mb": round(self.ps.memory_info().rss / MB, 1),
                "threads_at_idle": self.ps.num_threads(),
                "budget_peak": max((b["peak"] for b in budget), default=None)}

    def stop(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        stop_s = round(time.monotonic() - t0, 2)
        self._stop.set()
        self._sampler.join(2)
        self._log.close()
        return {"stop_s": stop_s, "exit_code": code, "peak_sessions": self.peak_sessions,
                "peak_threads": self.peak_threads, "sessions_after_stop": self.sessions()}


def round_done(d: Daemon, names: list[str]) -> bool:
    code, health = d.get("/health")
    if not health:
        return False
    dbs = health["databases"]
    return all("prune" in dbs.get(n, {}).get("last_runs", {}) for n in names)


def write_config(path: Path, cluster: EmbeddedCluster, names: list[str], port: int) -> None:
    entries = "".join(f"  - name: {n}\n    dsn: {cluster.dsn(n)}\n" for n in names)
    path.write_text(f"databases:\n{entries}indexing:\n  mode: advise\nbackups:\n  enabled: false\n"
                    f"  dir: {path.parent / 'backups'}\nlogging:\n  file: null\n  format: json\n"
                    f"http:\n  listen: 127.0.0.1:{port}\n", encoding="utf-8")


def one_size(cluster: EmbeddedCluster, names: list[str], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    config = work / f"fleet-{len(names)}.yaml"
    write_config(config, cluster, names, port)
    out: dict[str, Any] = {"databases": len(names)}
    first = Daemon(cluster, config, port, work / f"first-{len(names)}.log", round_at_start=False)
    out["first_start_ready_s"] = first.wait(lambda: first.get("/health/ready")[0] == 200, args.ready_timeout)
    out["first_start"] = {**first.idle_figures(args.idle), **first.stop()}
    second = Daemon(cluster, config, port, work / f"second-{len(names)}.log", round_at_start=True)
    out["ready_s"] = second.wait(lambda: second.get("/health/ready")[0] == 200, args.ready_timeout)
    out["round_done_s"] = second.wait(lambda: round_done(second, names), args.round_timeout, every=2.0)
    out["after_round"] = {**second.idle_figures(args.idle), **second.stop()}
    return out


def make_fleet(largest: int, work: Path) -> tuple[EmbeddedCluster, list[str], dict[str, Any]]:
    shm = Path("/dev/shm")
    room = psutil.virtual_memory().available > 2 * largest * DB_BYTES and shm.is_dir()
    base = Path(tempfile.mkdtemp(prefix="indexd-fleet-", dir=shm if room else work))
    cluster = EmbeddedCluster(base_dir=base, settings={"max_connections": "100"})
    cluster.start()
    names = [f"tenant_{i:04d}" for i in range(largest)]
    t0 = time.monotonic()
    cluster.create_database("fleet_template")
    cluster.clone_databases("fleet_template", names)
    return cluster, names, {"data_dir_in_memory": room, "create_databases_s": round(time.monotonic() - t0, 1)}


def report(results: list[dict[str, Any]]) -> None:
    print(f"{'dbs':>5} {'ready 1st':>9} {'ready':>6} {'round':>7} {'idle sess':>9} {'peak sess':>9} "
          f"{'RSS MB':>7} {'threads':>8} {'stop s':>7}")
    for r in results:
        a, f = r["after_round"], r["first_start"]
        print(f"{r['databases']:>5} {r['first_start_ready_s']!s:>9} {r['ready_s']!s:>6} {r['round_done_s']!s:>7} "
              f"{a['sessions_at_idle']:>9} {max(a['peak_sessions'], f['peak_sessions']):>9} {a['rss_mb']:>7} "
              f"{a['threads_at_idle']:>3}/{a['peak_threads']:<4} {max(a['stop_s'], f['stop_s']):>7}")
    small, big = results[0], results[-1]
    scale = big["databases"] / small["databases"]
    rss = big["after_round"]["rss_mb"] / small["after_round"]["rss_mb"]
    print(f"x{scale:g} databases: RSS x{rss:.2f}, idle sessions "
          f"{small['after_round']['sessions_at_idle']} -> {big['after_round']['sessions_at_idle']}, "
          f"ready {small['ready_s']} s -> {big['ready_s']} s")
    print("targets at 200 databases: ready <= 10 s, <= 20 sessions at idle, RSS <= 300 MB, stop <= 15 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--ready-timeout", type=float, default=120)
    parser.add_argument("--round-timeout", type=float, default=300, help="seconds to wait for the start-up round")
    parser.add_argument("--idle", type=float, default=15, help="seconds idle before sessions and RSS are read")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="indexd-bench-fleet-"))
    load = os.getloadavg()[0]
    cluster, names, setup = make_fleet(sizes[-1], work)
    try:
        results = []
        for n in sizes:
            results.append(one_size(cluster, names[:n], work, args))
            print(json.dumps(results[-1]), flush=True)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    result = {"load_average_at_start": round(load, 2), "cpus": os.cpu_count(), "server_max_connections": 100,
              **setup, "sizes": results}
    print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs; {setup}")
    report(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

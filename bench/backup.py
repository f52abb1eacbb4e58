"""Backup and restore speed: `python -m bench.backup [--scale N] [--rounds N]`.

On an embedded cluster with a pgbench database (scale 30 is about 450 MB), in the same run and interleaved
round by round: bare `pg_dump -Fc` (the baseline: pg_dump itself is the speed limit) against `run_backup` in
custom format (snapshot + row counts, dump, fsync, checksum, `pg_restore --list`, manifest); bare `pg_dump -Fd
-j 2` against `run_backup` in directory format with 2 jobs; and `restore` of each into a fresh database.
Medians of the rounds, their ratios and the medians of ratios paired within a round (robust when the machine
is busy) go to stdout and bench/results/backup.json. Both sides use the same pg_dump binary.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from indexd.backup.command import find_binary
from indexd.backup.dump import run_backup
from indexd.backup.restore import restore
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).resolve().parent / "results" / "backup.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def prepare(cluster: EmbeddedCluster, scale: int) -> tuple[str, int]:
    cluster.create_database("bench", extensions=())
    subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(cluster.port),
                    "-U", cluster.superuser, "bench"], check=True, capture_output=True)
    conn = cluster.connect("bench")
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute("SELECT pg_database_size('bench')")
            return cluster.dsn("bench"), int(cur.fetchone()[0])
    finally:
        conn.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def bare_pg_dump(dsn: str, target: Path, fmt: str, jobs: int = 1) -> None:
    argv = [find_binary("pg_dump"), "--no-password", f"--format={fmt}", "--compress=6", f"--file={target}",
            "--dbname", dsn]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    subprocess.run(argv, check=True)


def one_round(cluster: EmbeddedCluster, dsn: str, work: Path, n: int) -> dict[str, float]:
    custom = BackupSettings(dir=str(work / "indexd"), format="custom")
    directory = BackupSettings(dir=str(work / "indexd"), format="directory", jobs=2)
    db_custom = DatabaseSettings(name="bench", dsn=dsn, backups=custom)
    db_dir = DatabaseSettings(name="bench", dsn=dsn, backups=directory)
    settings = Settings(databases=(db_custom,), backups=custom)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("pg_dump_Fc", lambda: bare_pg_dump(dsn, work / f"bare{n}.dump", "custom")),
        ("indexd_custom", lambda: run_backup(settings, db_custom, now=T0 + timedelta(minutes=2 * n))),
        ("pg_dump_Fd_j2", lambda: bare_pg_dump(dsn, work / f"bare{n}.dir", "directory", 2)),
        ("indexd_directory_j2", lambda: run_backup(settings, db_dir, now=T0 + timedelta(minutes=2 * n + 1))),
    ]
    if n % 2:  # odd rounds run each pair the other way round, so neither side always gets the warmer cache
        steps = [steps[1], steps[0], steps[3], steps[2]]
    out: dict[str, float] = {}
    results: dict[str, Any] = {}
    for name, step in steps:
        out[name], results[name] = timed(step)
    res_c, res_d = results["indexd_custom"], results["indexd_directory_j2"]
    # indexd's own work around pg_dump, measured inside the same run (immune to the machine's load swings)
    for key, res in (("indexd_custom", res_c), ("indexd_directory_j2", res_d)):
        pg_dump_s = json.loads(res.manifest_path.read_text())["pg_dump_s"]
        out[f"{key}_overhead_s"] = out[key] - pg_dump_s
        out[f"{key}_overhead_share"] = out[f"{key}_overhead_s"] / pg_dump_s
    out["size_custom_mb"] = res_c.size_bytes / 1024**2
    out["size_directory_mb"] = res_d.size_bytes / 1024**2
    for key, result, jobs in (("restore_custom", res_c, 1), ("restore_directory_j2", res_d, 2)):
        target = f"restored_{key}_{n}"
        out[key], _ = timed(lambda r=result, t=target, j=jobs: restore(settings, r.id, t, jobs=j))
        cluster.drop_database(target)
    for leftover in work.iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=30, help="pgbench scale (30 is about 450 MB)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # SIGTERM unwinds like Ctrl-C, so the cluster and the dumps are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = EmbeddedCluster()
    cluster.start()
    work = Path(tempfile.mkdtemp(prefix="indexd-bench-backup-"))
    try:
        started = time.perf_counter()
        dsn, size = prepare(cluster, args.scale)
        print(f"pgbench scale {args.scale}: database {size / 1024**2:.0f} MB, "
              f"loaded in {time.perf_counter() - started:.0f}s")
        rounds = []
        for n in range(args.rounds):
            rounds.append(one_round(cluster, dsn, work, n))
            print(f"round {n + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1].items()))
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratios = {
        "indexd_custom_vs_pg_dump_Fc": med["indexd_custom"] / med["pg_dump_Fc"],
        "indexd_directory_j2_vs_pg_dump_Fd_j2": med["indexd_directory_j2"] / med["pg_dump_Fd_j2"],
        "directory_j2_vs_custom": med["indexd_directory_j2"] / med["indexd_custom"],
        "restore_directory_j2_vs_custom": med["restore_directory_j2"] / med["restore_custom"],
    }
    # The same ratios paired within each round (both sides under the same machine load), then the median.
    paired = {
        "indexd_custom_vs_pg_dump_Fc": statistics.median(r["indexd_custom"] / r["pg_dump_Fc"] for r in rounds),
        "indexd_directory_j2_vs_pg_dump_Fd_j2": statistics.median(
            r["indexd_directory_j2"] / r["pg_dump_Fd_j2"] for r in rounds),
    }
    print("medians (s, MB): " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print("ratios of medians: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print("medians of paired ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in paired.items()))
    target = paired["indexd_custom_vs_pg_dump_Fc"]
    print(f"indexd's own work around its pg_dump (same run): custom {med['indexd_custom_overhead_s']:.3f}s "
          f"({100 * med['indexd_custom_overhead_share']:.1f}%), directory -j 2 "
          f"{med['indexd_directory_j2_overhead_s']:.3f}s ({100 * med['indexd_directory_j2_overhead_share']:.1f}%)")
    print(f"indexd backup run vs bare pg_dump -Fc: {target:.3f}x (target <= 1.05x): "
          f"{'met' if target <= 1.05 else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "scale": args.scale, "database_bytes": size, "rounds": rounds, "medians": med, "ratios": ratios,
        "paired_ratios": paired,
        "target_met": target <= 1.05, "at": datetime.now(UTC).isoformat(),
    }, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()

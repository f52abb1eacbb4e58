"""A large `recommend --queries` file: `python -m bench.queries_file [--statements 300000] [--timeout 600]`.

Writes, in a temporary folder, a .sql file of N statements of one shape (constants differ, every tenth has a
`-- calls: N` line; 300,000 statements are about 20 MB), loads a small schema into an embedded cluster and runs
`indexd recommend --queries FILE --dsn ... --no-save --json` as a child process. Wall time and the child's peak
RSS (its own rusage from wait4, the same figure `resource.getrusage(RUSAGE_CHILDREN)` gives for one child)
go to stdout and bench/results/queries_file.json, beside whether the advice is right: one statement shape whose
calls add up to the file's. Targets: 300,000 statements / 20 MB in <= 30 s and <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).resolve().parent / "results" / "queries_file.json"
ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_MB = 30.0, 300.0
SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, status text, total numeric);
INSERT INTO orders SELECT g, g % 20000, CASE WHEN g % 50 = 0 THEN 'open' ELSE 'done' END, g % 700
FROM generate_series(1, 200000) g;
ANALYZE orders;
"""


def write_workload(path: Path, statements: int) -> int:
    """N statements of one shape; returns the sum of their weights."""
    total = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(statements):
            calls = 1
            if i % 10 == 0:
                calls = 1 + i % 7
                fh.write(f"-- calls: {calls}\n")
            fh.write(f"SELECT id, total FROM orders WHERE customer_id = {i % 20000} LIMIT 50;\n")
            total += calls
    return total


def run_child(argv: list[str], timeout: float) -> tuple[float, float, int, str, str]:
    """Run argv; wall seconds, peak RSS in MB, exit code, stdout, stderr (SIGKILL after `timeout`)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.send_signal(signal.SIGKILL)
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return elapsed, usage.ru_maxrss / 1024, child.returncode, out.read().decode(), err.read().decode()


def judge(doc: dict[str, Any], calls: int) -> dict[str, Any]:
    queries = [q for rec in doc.get("recommendations", []) for q in rec.get("queries", [])]
    return {"analyzed_statements": doc.get("analyzed_statements"),
            "recommended": [f"{r['table']} ({', '.join(r['columns'])})" for r in doc.get("recommendations", [])],
            "calls_seen": max((q["calls"] for q in queries), default=None), "calls_in_file": calls,
            "correct": doc.get("analyzed_statements") == 1 and any(q["calls"] == calls for q in queries)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--statements", type=int, default=300_000)
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on the run after this many seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="indexd-bench-") as tmp, EmbeddedCluster() as cluster:
        path = Path(tmp) / "workload.sql"
        calls = write_workload(path, args.statements)
        cluster.create_database("bench", extensions=("hypopg",))
        conn = cluster.connect("bench")
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
        conn.close()
        config = Path(tmp) / "indexd.yaml"
        config.write_text("indexing:\n  min_calls: 1\nlogging:\n  file: null\n", encoding="utf-8")
        argv = [sys.executable, "-m", "indexd", "--config", str(config), "recommend", "--queries", str(path),
                "--dsn", cluster.dsn("bench"), "--no-save", "--json"]
        elapsed, peak_mb, code, out, err = run_child(argv, args.timeout)
        size = path.stat().st_size
    result: dict[str, Any] = {
        "statements": args.statements, "file_bytes": size, "elapsed_s": round(elapsed, 2),
        "peak_rss_mb": round(peak_mb, 1), "exit_code": code, "timed_out": elapsed >= args.timeout,
        "targets": {"elapsed_s": TARGET_S, "peak_rss_mb": TARGET_MB},
    }
    result.update(judge(json.loads(out), calls) if code == 0 else {"correct": False, "stderr": err[-2000:]})
    result["within_targets"] = bool(result["correct"] and elapsed <= TARGET_S and peak_mb <= TARGET_MB)
    print(f"{args.statements} statements, {size / 1e6:.1f} MB: {elapsed:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"exit {code}, correct: {result['correct']} (targets {TARGET_S:.0f} s, {TARGET_MB:.0f} MB)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()

"""`indexd demo` end to end, on its own throw-away cluster, with short workload runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time


def test_demo_runs_the_whole_cycle() -> None:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "indexd", "demo", "--duration", "3s", "--json"],
                          capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout)
    steps = done.stderr
    for step in ("start PostgreSQL", "load the small shop", "run the workload", "recommend indexes",
                 "build in the open window", "re-run the same workload", "verify the new indexes",
                 "back up", "verify the backup"):
        assert step in steps, step
    assert out["recommendations"], "the advisor found nothing in the shop workload"
    assert all(r["create_sql"].startswith("CREATE INDEX CONCURRENTLY") for r in out["recommendations"])
    assert out["built"], "nothing was built"
    assert set(out["verdicts"]) <= {b["index"] for b in out["built"]}
    assert out["backup"]["restore_verified"] is True and out["backup"]["size_bytes"] > 0
    by_shape = {c["shape"]: c for c in out["comparison"]}
    assert len(by_shape) >= 20
    # A lookup the advisor must fix: order lines by product scan the whole table without an index.
    assert by_shape["items_of_product"]["speedup"] > 2, by_shape["items_of_product"]
    assert out["dsn"] is None  # the cluster was removed
    assert elapsed < 90, f"demo took {elapsed:.0f}s"

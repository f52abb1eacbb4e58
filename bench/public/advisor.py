"""indexd's advice through the user's path: `indexd recommend ... --no-save --json` in a child process.

The child runs in an empty folder with no INDEXD_CONFIG, so no configuration file is picked up: the advisor's
defaults decide, as for a user who passes only --dsn. Whatever advisor is in the tree the bench runs from is
the one measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.public.indexes import IndexDef

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Advice:
    indexes: list[IndexDef]
    advise_s: float  # wall clock of the whole command
    reported_s: float | None  # the advisor's own elapsed_s
    analyzed: int | None
    raw: list[dict[str, Any]] = field(default_factory=list)  # the recommendations as printed
    notes: list[str] = field(default_factory=list)  # what the command wrote on stderr


def write_queries(path: Path, queries: list[str]) -> None:
    """A query file for `--queries`: one statement each, weighted 1."""
    path.write_text("".join(f"-- calls: 1\n{q.strip().rstrip(';')};\n\n" for q in queries), encoding="utf-8")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def recommend(dsn: str, budget_bytes: int | None, queries: Path | None = None, timeout: float = 1800) -> Advice:
    """Run `indexd recommend --dsn DSN [--queries FILE] [--budget-mb N] --no-save --json --verbose`; its indexes
    (--verbose: every statement the advisor skipped is listed with its reason among the notes)."""
    args = [sys.executable, "-m", "indexd", "recommend", "--dsn", dsn, "--no-save", "--json", "--verbose"]
    if queries is not None:
        args += ["--queries", str(queries)]
    if budget_bytes is not None:
        args += ["--budget-mb", str(budget_bytes // 2**20)]
    with tempfile.TemporaryDirectory(prefix="bench-indexd-") as cwd:
        t0 = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=_env(), timeout=timeout,
                              check=False)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"indexd recommend exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    doc = json.loads(proc.stdout)
    notes = [line for line in proc.stderr.splitlines() if line.strip()]
    return Advice([_index_def(r) for r in doc["recommendations"]], elapsed, doc.get("elapsed_s"),
                  doc.get("analyzed_statements"), doc["recommendations"], notes)


def _index_def(rec: dict[str, Any]) -> IndexDef:
    return IndexDef(table=rec["table"], columns=tuple(rec["columns"]), statement=rec["create_sql"],
                    where=rec.get("where"), include=tuple(rec.get("include") or ()), method=rec.get("method", "btree"))

"""Public corpora as pg_stat_statements normalizes them: how many statements the advisor costs, how many it
skips and why, and how long it takes.

    python -m bench.corpus [--corpus tpch --corpus pgbench ...]

Corpora (bench/workloads/corpus.py): TPC-H's 22 and TPC-DS's 99 queries on empty tables (duckdb's extensions),
pgbench's built-in and read scripts after `pgbench -i -s 1`, and hand-written shapes. Target: no statement
skipped as uncostable or invalid_statement (the planner refusing the text indexd gave it). "prepared" says
which form of each explainable statement PostgreSQL accepted: "as given" worked before normalized text was
made plannable; "rewritten", "typed by context" and "typed by role" did not. Writes bench/results/corpus.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.workloads.corpus import CORPORA, build, judge, unaccepted
from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).parent / "results"


def run(names: list[str]) -> list[dict[str, Any]]:
    rows = []
    with EmbeddedCluster() as cluster:
        for name in names:
            started = time.perf_counter()
            corpus = build(cluster, name)
            built = time.perf_counter() - started
            result = judge(cluster, corpus)
            rows.append({
                "corpus": name, "statements": result.statements, "explainable": result.explainable,
                "planned": result.planned, "planned_by_form": result.forms, "costed": result.costed,
                "skipped": result.skipped,
                "unaccepted_skips": dict(unaccepted(result)), "recommendations": result.recommendations,
                "advisor_s": result.advisor_s, "build_s": round(built, 2),
                "rejected_by_postgresql": corpus.rejected,
                "not_planned": [{"query": q[:500], "error": e} for q, e in result.not_planned],
            })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", action="append", choices=CORPORA, help="run only these corpora (repeatable)")
    args = ap.parse_args()
    rows = run(args.corpus or list(CORPORA))
    for row in rows:
        skipped = ", ".join(f"{n} {kind}" for kind, n in row["skipped"].items()) or "none"
        print(f"{row['corpus']:>8}: {row['statements']:>4} statements, {row['costed']:>4} costed, "
              f"{sum(row['skipped'].values()):>3} skipped ({skipped}); what-if planned {row['planned']}/"
              f"{row['explainable']} explainable; advisor {row['advisor_s']:.2f} s, "
              f"{row['recommendations']} recommended", flush=True)
        forms = ", ".join(f"{n} {form}" for form, n in sorted(row["planned_by_form"].items()))
        print(f"          prepared: {forms}")
        if row["unaccepted_skips"] or row["not_planned"]:
            print(f"          NOT COSTABLE: {row['unaccepted_skips']} {row['not_planned']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "corpus.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    bad = sum(sum(r["unaccepted_skips"].values()) + len(r["not_planned"]) for r in rows)
    print(f"{sum(r['statements'] for r in rows)} statements in {len(rows)} corpora, {bad} not costable "
          f"(target 0); written to {RESULTS / 'corpus.json'}")


if __name__ == "__main__":
    main()

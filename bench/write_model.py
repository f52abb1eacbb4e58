"""The write model against measurements: what one new index costs an UPDATE-heavy table, predicted and measured.

    python -m bench.write_model [--rows 400000] [--updates 100000] [--rounds 3]

On a private cluster: a pgbench-like accounts table (PRIMARY KEY on aid), and a bounded number of updates
`UPDATE accounts SET abalance = abalance + 1, mtime = now() WHERE aid = ANY($1)` (BATCH random accounts per
statement), each run on a fresh copy of the loaded table (autovacuum off on it, a VACUUM timed after the
run), every case once per round, rounds interleaved, medians of the per-round differences. Cases:

- none:    the primary key only (the reference);
- hot:     + an index on bid, a column the UPDATE does not set: updates stay HOT where they were;
- non-hot: + an index on mtime, a column the UPDATE sets: no update is HOT any more, every one writes into
           both indexes.
- insert:  inserts into a history table with and without an index on aid (one entry per row).
The reference also runs at fillfactor 90, for the HOT share a table with room on its pages gets.

The model (indexd.advisor.writes) predicts each index's extra ms per written row from the readings of the
reference run (HOT share, indexes there), then the extra time is measured: the backend's CPU time running the
statements plus the VACUUM that cleans up after them (CPU, not wall time: the host is shared). Prints predicted
vs measured, as extra ms per row and as the write slowdown (time per written row with the index over the same
time without it): where an index adds next to nothing (the HOT case) the extra time is below the noise, and the
slowdown is the figure that can be compared.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from indexd.advisor import writes
from indexd.advisor.model import IndexCandidate, IndexKey
from indexd.advisor.writes import TableFacts, TableWrites, UpdateWrite, WriteModel
from indexd.embedded import EmbeddedCluster

RESULTS = Path(__file__).parent / "results"
TEMPLATE = "bench_writes"
# Rows go in batches, so the per-row work (heap and indexes) dominates the per-statement work (parse, plan).
BATCH = 200
UPDATE = "UPDATE accounts SET abalance = abalance + 1, mtime = now() WHERE aid = ANY(%s)"
INSERT = "INSERT INTO history (delta, aid, mtime) SELECT 1, a, now() FROM unnest(%s::int[]) AS u(a)"
SETUP = """
CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84),
                       mtime timestamptz NOT NULL DEFAULT now()) WITH (autovacuum_enabled = off);
INSERT INTO accounts (aid, bid, abalance, filler) SELECT g, g / 100000 + (g % 7), 0, '' FROM generate_series(1, %s) g;
CREATE TABLE history (aid int NOT NULL, delta int NOT NULL, mtime timestamptz NOT NULL)
    WITH (autovacuum_enabled = off);
"""
CASES = {
    "none": None,
    "hot": IndexCandidate("public", "accounts", (IndexKey("bid"),)),
    "non-hot": IndexCandidate("public", "accounts", (IndexKey("mtime"),)),
}
HISTORY_INDEX = IndexCandidate("public", "history", (IndexKey("aid"),))


@dataclass
class Measure:
    statement_ms: float  # the backend's CPU time running the writes
    vacuum_ms: float  # ... and the VACUUM after them
    rows: int
    hot: int  # n_tup_hot_upd
    updated: int  # n_tup_upd


def fresh(cluster: EmbeddedCluster, index: IndexCandidate | None, fillfactor: int = 100,
          ) -> psycopg2.extensions.connection:
    cluster.drop_database("bench_run")
    cluster.execute(sql.SQL("CREATE DATABASE bench_run TEMPLATE {}").format(sql.Identifier(TEMPLATE)))
    conn = cluster.connect("bench_run")
    with conn.cursor() as cur:
        if fillfactor != 100:
            cur.execute(sql.SQL("ALTER TABLE accounts SET (fillfactor = {})").format(sql.Literal(fillfactor)))
            cur.execute("VACUUM FULL accounts")
        if index is not None:
            cur.execute(index.create_sql(concurrently=False))
        cur.execute("VACUUM ANALYZE")
        cur.execute("CHECKPOINT")
        cur.execute("SELECT pg_stat_statements_reset(), pg_stat_reset()")
    return conn


def cpu_ms(pid: int) -> float:
    """CPU time the process has used, in ms (/proc/PID/schedstat: nanoseconds on a CPU). CPU time, not wall
    time: on a shared host the run queue's waits would drown differences of microseconds per row."""
    return int(Path(f"/proc/{pid}/schedstat").read_text(encoding="ascii").split()[0]) / 1e6


def run_writes(conn: psycopg2.extensions.connection, statement: str, n: int, rows: int, seed: int,
               table: str) -> Measure:
    rng = random.Random(seed)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        start = cpu_ms(pid)
        for _ in range(n // BATCH):
            cur.execute(statement, (rng.sample(range(1, rows + 1), BATCH),))
        statement_ms = cpu_ms(pid) - start
        cur.execute("SELECT pg_stat_force_next_flush()")  # this backend's counters, flushed at the next statement
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", (table,))
        hot, updated = cur.fetchone()
        start = cpu_ms(pid)
        cur.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))
        vacuum_ms = cpu_ms(pid) - start
    return Measure(statement_ms, vacuum_ms, n // BATCH * BATCH, int(hot), int(updated))


def predict(reference: Measure, n_rows: int, index: IndexCandidate, kind: str) -> float:
    """The model's extra ms per written row for this index, from the reference run's readings."""
    key = f"{index.schema}.{index.table}"
    if kind == "update":
        table = TableWrites(updates=[UpdateWrite(frozenset({"abalance", "mtime"}), 1.0)])
        facts = TableFacts(existing=(frozenset({"aid"}),), updates_seen=reference.updated,
                           hot_updates_seen=reference.hot)
    else:
        table, facts = TableWrites(inserts_per_s=1.0), TableFacts()
    return WriteModel({key: table}, {key: facts}).cost(key, [index])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    settings = {"shared_buffers": "256MB", "full_page_writes": "on", "max_wal_size": "2GB"}
    runs: dict[str, list[Measure]] = {name: [] for name in [*CASES, "none-ff90", "insert-none", "insert-index"]}
    with EmbeddedCluster(settings=settings) as cluster:
        cluster.create_database(TEMPLATE)
        cluster.execute(SETUP.replace("%s", str(int(args.rows))), dbname=TEMPLATE)
        cluster.execute("VACUUM ANALYZE", dbname=TEMPLATE)
        for r in range(args.rounds):
            plan = [(name, index, UPDATE, "accounts", 100) for name, index in CASES.items()]
            plan += [("none-ff90", None, UPDATE, "accounts", 90), ("insert-none", None, INSERT, "history", 100),
                     ("insert-index", HISTORY_INDEX, INSERT, "history", 100)]
            for name, index, statement, table, fillfactor in plan:
                conn = fresh(cluster, index, fillfactor)
                try:
                    runs[name].append(run_writes(conn, statement, args.updates, args.rows, seed=r, table=table))
                finally:
                    conn.close()
                print(f"round {r + 1} {name:<12} {runs[name][-1]}", flush=True)
    report(runs, args)


def _extra(measures: list[Measure], reference: list[Measure]) -> tuple[float, float, float]:
    """Over the rounds, the extra ms per written row over the same round's reference: median of the statements'
    share, median of the VACUUM's share, and the spread (max - min) of the total."""
    pairs = list(zip(measures, reference, strict=True))
    totals = [(m.statement_ms + m.vacuum_ms) / m.rows - (r.statement_ms + r.vacuum_ms) / r.rows for m, r in pairs]
    return (statistics.median(m.statement_ms / m.rows - r.statement_ms / r.rows for m, r in pairs),
            statistics.median(m.vacuum_ms / m.rows - r.vacuum_ms / r.rows for m, r in pairs),
            max(totals) - min(totals))


def report(runs: dict[str, list[Measure]], args: argparse.Namespace) -> None:
    ref = runs["none"][0]
    base_stmt = statistics.median(m.statement_ms / m.rows for m in runs["none"])
    rows = []
    for name, index, measured_runs, reference, kind in (
            ("hot", CASES["hot"], runs["hot"], runs["none"], "update"),
            ("non-hot", CASES["non-hot"], runs["non-hot"], runs["none"], "update"),
            ("insert", HISTORY_INDEX, runs["insert-index"], runs["insert-none"], "insert")):
        assert index is not None
        stmt, vac, spread = _extra(measured_runs, reference)
        measured = stmt + vac
        predicted = predict(ref, args.rows, index, kind)
        ratio = predicted / measured if measured > 0 else float("inf")
        per_row = statistics.median((m.statement_ms + m.vacuum_ms) / m.rows for m in reference)
        slowdown = (1 + predicted / per_row, 1 + measured / per_row)
        rows.append({"case": name, "predicted_ms_per_row": round(predicted, 5),
                     "measured_ms_per_row": round(measured, 5), "statement_extra": round(stmt, 5),
                     "vacuum_extra": round(vac, 5), "spread": round(spread, 5), "ratio": round(ratio, 2),
                     "reference_ms_per_row": round(per_row, 5), "predicted_slowdown": round(slowdown[0], 3),
                     "measured_slowdown": round(slowdown[1], 3),
                     "slowdown_ratio": round(slowdown[0] / slowdown[1], 3)})
    hot_share = ref.hot / ref.updated if ref.updated else 0.0
    ff90 = runs["none-ff90"][0]
    result = {"rows": args.rows, "updates": args.updates, "rounds": args.rounds,
              "reference_hot_share": round(hot_share, 3), "reference_ms_per_update": round(base_stmt, 5),
              "hot_share_fillfactor_90": round(ff90.hot / ff90.updated if ff90.updated else 0.0, 3),
              "constants": {"ENTRY_MS": writes.ENTRY_MS, "DEAD_ENTRY_MS": writes.DEAD_ENTRY_MS,
                            "NON_HOT_MS": writes.NON_HOT_MS}, "cases": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "write_model.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\nreference: {base_stmt:.4f} ms per update, HOT share {hot_share:.0%} "
          f"({result['hot_share_fillfactor_90']:.0%} at fillfactor 90)")
    print("extra ms per written row that the index costs; spread = max - min over the rounds (the noise);")
    print("slowdown = time per written row with the index / without it (statements + VACUUM), predicted vs measured")
    print(f"{'case':<10}{'predicted':>12}{'measured':>12}{'(stmt':>10}{'+ vacuum)':>11}{'spread':>10}{'ratio':>8}"
          f"{'slowdown pred':>15}{'meas':>7}{'ratio':>7}")
    for row in rows:
        print(f"{row['case']:<10}{row['predicted_ms_per_row']:>12.5f}{row['measured_ms_per_row']:>12.5f}"
              f"{row['statement_extra']:>10.5f}{row['vacuum_extra']:>11.5f}{row['spread']:>10.5f}{row['ratio']:>8}"
              f"{row['predicted_slowdown']:>15.3f}{row['measured_slowdown']:>7.3f}{row['slowdown_ratio']:>7.3f}")


if __name__ == "__main__":
    main()

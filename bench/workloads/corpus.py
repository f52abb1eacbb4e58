"""Public statement corpora as pg_stat_statements normalizes them, for the advisor's costing tests and bench.

- tpch, tpcds: TPC-H's 22 and TPC-DS's 99 queries and their schemas, from duckdb's tpch/tpcds extensions (the
  PyPI packages duckdb-extension-tpch / duckdb-extension-tpcds): `tpch_queries()`, and `CALL dbgen(sf=0)` for
  the column lists, translated to PostgreSQL types. Tables stay empty: costing needs no rows.
- pgbench: `pgbench -i -s 1`, a few transactions of each built-in script, and read scripts of the shapes that
  trouble normalized text (now() - interval, BETWEEN with arithmetic, ORDER BY ... LIMIT, IN lists).
- shapes: hand-written statements of every construct normalization turns into something PostgreSQL cannot
  prepare as is (typed literals, EXTRACT, arithmetic and function arguments of constants ...).

`build()` runs a corpus in a database of its own and returns what pg_stat_statements recorded; `judge()` costs
each statement and runs the advisor on them all. Nothing here adapts a statement for indexd's sake.
"""

from __future__ import annotations

import glob
import re
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import duckdb
import duckdb_extension_tpcds
import duckdb_extension_tpch
import psycopg2
import psycopg2.extensions

from indexd.advisor.catalog import load_catalog
from indexd.advisor.pipeline import Advice, advise
from indexd.advisor.skips import SkipReason, skip_counts
from indexd.advisor.whatif import WhatIf, check_explainable
from indexd.config.schema import DatabaseSettings, IndexingSettings, PoolSettings
from indexd.db.pool import Database
from indexd.embedded import EmbeddedCluster
from indexd.statements.statement import Statement
from indexd.workload.lookback import given_workload

CORPORA = ("tpch", "tpcds", "pgbench", "shapes")
# What a statement of these corpora may be skipped for: never the planner refusing indexd's text.
ACCEPTED_SKIPS = frozenset(SkipReason) - {SkipReason.UNCOSTABLE, SkipReason.INVALID_STATEMENT}
SETTINGS = IndexingSettings(min_calls=1, min_table_rows=0)  # the corpora's tables are empty

_DUCKDB_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint", "DATE": "date",
                 "VARCHAR": "varchar", "DOUBLE": "double precision", "BOOLEAN": "boolean"}
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")

PGBENCH_READS = r"""
\set tid random(1, 10 * :scale)
\set bid random(1, :scale)
\set aid random(1, 100000 * :scale)
SELECT * FROM pgbench_history WHERE tid = :tid AND mtime >= now() - interval '1 day';
SELECT abalance FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 100;
SELECT aid, abalance FROM pgbench_accounts WHERE bid = :bid ORDER BY abalance DESC LIMIT 10;
SELECT count(*) FROM pgbench_history WHERE mtime BETWEEN now() - interval '2 hours' AND now();
SELECT * FROM pgbench_tellers WHERE tid IN (:tid, :tid + 1, 3);
SELECT aid FROM pgbench_accounts ORDER BY aid LIMIT 20 OFFSET 40;
SELECT sum(delta) FROM pgbench_history WHERE aid = :aid AND mtime > now() - make_interval(days => 7 - 1);
"""

SHAPES_SCHEMA = """
CREATE TABLE events (id bigint PRIMARY KEY, tid int, kind text, mtime timestamp, at timestamptz, day date,
                     starts time, amount numeric(10,2), ratio double precision, payload jsonb, tags int[]);
CREATE TABLE teams (id int PRIMARY KEY, name varchar(40), region text);
"""
SHAPES = (
    "SELECT * FROM events WHERE tid = 1 AND mtime >= now() - interval '1 day'",
    "SELECT * FROM events WHERE mtime > date '2024-01-01' + interval '3' month",
    "SELECT * FROM events WHERE mtime BETWEEN timestamp '2024-01-01 00:00' AND timestamp '2024-02-01'",
    "SELECT * FROM events WHERE at >= timestamptz '2024-01-01 00:00+00' AND starts < time '12:00'",
    "SELECT * FROM events WHERE amount > numeric '10.5' AND ratio < float8 '0.5' AND tid = int4 '7'",
    "SELECT * FROM events WHERE at > now() - interval '1' day AND at < now() - interval '2 hours' * 3",
    "SELECT * FROM events WHERE at > now() - '1 hour'::interval",
    "SELECT * FROM events WHERE at > now() - CAST('1 hour' AS interval)",
    "SELECT * FROM events WHERE tid BETWEEN 1 AND 2 + 3",
    "SELECT * FROM events WHERE tid BETWEEN 10 - 1 AND 2 * 3 AND amount > 100 / 7",
    "SELECT make_interval(days => 30 - 7), * FROM events WHERE day > current_date - 7",
    "SELECT * FROM events WHERE mtime > now() - make_interval(days => 3 - 1)",
    "SELECT * FROM events WHERE tid IN (1, 2, 3) ORDER BY mtime DESC LIMIT 10 OFFSET 20",
    "SELECT * FROM events WHERE tid = ANY('{1,2,3}'::int[]) AND tags && ARRAY[4, 5]",
    "SELECT extract(year FROM mtime), extract(epoch FROM at) FROM events WHERE day = date '2024-05-01'",
    "SELECT date_trunc('day', mtime), count(*) FROM events WHERE kind = 'x' GROUP BY 1",
    "SELECT sum(CASE WHEN tid > 5 THEN 1 ELSE 0 END), sum(CASE WHEN kind = 'a' THEN 1.5 ELSE 0 END) FROM events",
    "SELECT concat('team-', name), substring(name, 1, 3), 'x' || name FROM teams WHERE region = 'eu'",
    "SELECT 'a' AS channel, id FROM events WHERE tid = 1 UNION ALL SELECT 'b', id FROM teams WHERE id = 2",
    "SELECT coalesce(amount, 0) + 1, nullif(tid, 0), greatest(ratio, 0.5) FROM events WHERE id = 42",
    "SELECT * FROM events WHERE payload ->> 'k' = 'v' AND payload @> '{\"a\": 1}'",
    "SELECT * FROM events WHERE kind LIKE 'abc%' AND tid % 7 = 3 AND -5 < tid",
    "SELECT * FROM events WHERE mtime::date = date '2024-01-01' AND to_char(at, 'YYYY') = '2024'",
    "SELECT * FROM events WHERE (at AT TIME ZONE 'UTC') > timestamp '2024-01-01' FETCH FIRST 5 ROWS ONLY",
    "WITH recent AS (SELECT tid, max(mtime) AS last FROM events WHERE mtime > now() - interval '7 days' "
    "GROUP BY tid) SELECT t.name, r.last FROM recent r JOIN teams t ON t.id = r.tid WHERE t.region = 'eu'",
    "SELECT id, sum(amount) OVER (PARTITION BY tid ORDER BY mtime ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), "
    "rank() OVER w FROM events WINDOW w AS (ORDER BY amount DESC) LIMIT 100",
    "SELECT * FROM teams t WHERE EXISTS (SELECT 1 FROM events e WHERE e.tid = t.id AND e.amount > 100)",
    "SELECT * FROM teams WHERE id IN (SELECT tid FROM events WHERE day >= date '2024-01-01' - 30)",
    "SELECT t.name, x.n FROM teams t, LATERAL (SELECT count(*) AS n FROM events e WHERE e.tid = t.id "
    "AND e.at > now() - interval '1 day' LIMIT 1) x",
    "SELECT * FROM events WHERE amount > (SELECT avg(amount) * 1.2 FROM events WHERE tid = 3)",
    "INSERT INTO events (id, tid, kind, mtime, amount) VALUES (1, 2 + 3, 'k', now() - interval '1 hour', 9.5 * 2)",
    "UPDATE events SET amount = amount * 1.1, mtime = now() + interval '5 minutes' WHERE tid = 4 AND day < "
    "current_date - 10",
    "DELETE FROM events WHERE at < now() - interval '90 days' AND tid = 1 + 1",
    "SELECT round(amount::numeric, 2), power(ratio, 2) FROM events WHERE ratio BETWEEN 0.1 AND 0.2 + 0.3",
    "SELECT * FROM events WHERE day + 7 > date '2024-03-01' AND starts + interval '1 hour' < time '18:00'",
    "SELECT count(*) FROM events",
    "SELECT now(), 1 + 1",
    "SELECT relname FROM pg_class WHERE relpages > 10",
    "BEGIN",
    "COMMIT",
    "CREATE TEMP TABLE scratch (a int)",
    "VACUUM teams",
)


@dataclass
class Corpus:
    name: str
    dbname: str
    statements: list[Statement]
    rejected: dict[str, str] = field(default_factory=dict)  # statement -> PostgreSQL's error, as written


@dataclass
class Judgement:
    """How one corpus fares: statements costed directly, and the advisor's run on them all."""

    corpus: str
    statements: int
    explainable: int  # one SELECT/INSERT/UPDATE/DELETE
    planned: int  # of those, costed by what-if (no hypothetical index)
    not_planned: list[tuple[str, str]]  # (statement, error) of explainable statements what-if could not cost
    skipped: dict[str, int]  # the advisor's skips by named reason
    costed: int  # statements the advisor costed (not skipped)
    recommendations: int
    advisor_s: float
    forms: dict[str, int] = field(default_factory=dict)  # planned statements by the form that prepared
    advice: Advice | None = None


# ---- building ---------------------------------------------------------------------------------------------
def _extension(module: ModuleType, name: str) -> str:
    """The extension file a duckdb-extension-* package ships (extensions/v<duckdb version>/<name>.duckdb_extension)."""
    folder = Path(str(module.__file__)).parent / "extensions"
    found = sorted(glob.glob(str(folder / "v*" / f"{name}.duckdb_extension")))
    if not found:
        raise RuntimeError(f"no {name}.duckdb_extension in {folder}: pip install duckdb-extension-{name}")
    return found[-1]


def tpc(kind: str) -> tuple[list[str], list[tuple[int, str]]]:
    """The CREATE TABLE statements (PostgreSQL types) and the numbered queries of TPC-H ("tpch") or TPC-DS."""
    module = duckdb_extension_tpch if kind == "tpch" else duckdb_extension_tpcds
    con = duckdb.connect()
    try:
        con.execute(f"LOAD '{_extension(module, kind)}'")
        queries = [(int(n), str(q)) for n, q in con.execute(f"SELECT query_nr, query FROM {kind}_queries()").fetchall()]
        con.execute("CALL dbgen(sf=0)" if kind == "tpch" else "CALL dsdgen(sf=0)")
        rows = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    finally:
        con.close()
    tables: dict[str, list[str]] = {}
    for table, column, dtype in rows:
        tables.setdefault(table, []).append(f'"{column}" {_pg_type(dtype)}')
    return [f'CREATE TABLE "{t}" ({", ".join(cols)})' for t, cols in tables.items()], queries


def _pg_type(duck: str) -> str:
    decimal = _DECIMAL.match(duck)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    if duck not in _DUCKDB_TYPES:
        raise ValueError(f"no PostgreSQL type for duckdb's {duck}")
    return _DUCKDB_TYPES[duck]


def _pgbench(cluster: EmbeddedCluster, dbname: str, *args: str) -> None:
    cmd = [str(cluster.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.superuser,
           *args, dbname]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)


def _run_all(cluster: EmbeddedCluster, dbname: str, schema: list[str], statements: list[tuple[str, str]],
             pgbench: bool = False) -> dict[str, str]:
    """Create the schema, reset pg_stat_statements, run each statement; what PostgreSQL rejects, by label."""
    conn = cluster.connect(dbname)
    rejected: dict[str, str] = {}
    try:
        with conn.cursor() as cur:
            for ddl in schema:
                cur.execute(ddl)
            if pgbench:
                _pgbench(cluster, dbname, "-i", "-q", "-s", "1")
            cur.execute("ANALYZE")
            cur.execute("SET statement_timeout = '20s'")
            cur.execute("SELECT pg_stat_statements_reset()")
            for label, text in statements:
                try:
                    cur.execute(text)
                except psycopg2.Error as err:  # recorded; the corpus goes on
                    rejected[label] = str(err).strip().splitlines()[0]
                    if conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
                        cur.execute("ROLLBACK")
    finally:
        conn.close()
    return rejected


def _pgbench_traffic(cluster: EmbeddedCluster, dbname: str) -> None:
    for script in ("tpcb-like", "simple-update", "select-only"):
        _pgbench(cluster, dbname, "-n", "-t", "5", "-b", script)
    with tempfile.TemporaryDirectory() as tmp:
        reads = Path(tmp) / "reads.sql"
        reads.write_text(PGBENCH_READS, encoding="utf-8")
        reads.chmod(0o644)
        _pgbench(cluster, dbname, "-n", "-t", "5", "-f", str(reads))


def _recorded(cluster: EmbeddedCluster, dbname: str) -> list[Statement]:
    rows = cluster.fetch("SELECT queryid, query, calls, total_exec_time, rows FROM pg_stat_statements "
                         "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                         "ORDER BY queryid", dbname=dbname)
    return [Statement(query=q, calls=int(c), total_time_ms=float(t), queryid=int(i), rows=int(r))
            for i, q, c, t, r in rows]


def build(cluster: EmbeddedCluster, name: str) -> Corpus:
    """Run one corpus in a new database of the cluster; its statements as pg_stat_statements recorded them."""
    dbname = f"corpus_{name}_{int(time.time() * 1000) % 100000}"
    cluster.create_database(dbname)
    if name in ("tpch", "tpcds"):
        schema, queries = tpc(name)
        rejected = _run_all(cluster, dbname, schema, [(f"{name} q{n}", q) for n, q in queries])
    elif name == "pgbench":
        rejected = _run_all(cluster, dbname, [], [], pgbench=True)
        _pgbench_traffic(cluster, dbname)
    elif name == "shapes":
        rejected = _run_all(cluster, dbname, [SHAPES_SCHEMA], [(s, s) for s in SHAPES])
    else:
        raise ValueError(f"unknown corpus {name!r}: one of {', '.join(CORPORA)}")
    return Corpus(name, dbname, _recorded(cluster, dbname), rejected)


# ---- judging ------------------------------------------------------------------------------------------------
def judge(cluster: EmbeddedCluster, corpus: Corpus, settings: IndexingSettings = SETTINGS) -> Judgement:
    """Cost every explainable statement with no hypothetical index, then run the advisor on the whole corpus."""
    db = Database(DatabaseSettings(name=corpus.name, dsn=cluster.dsn(corpus.dbname), pool=PoolSettings(size=2)))
    try:
        with db.connection() as conn:
            catalog = load_catalog(conn, db.settings.state_schema)
        texts = [s.query for s in corpus.statements]
        explainable = [i for i, q in enumerate(texts) if check_explainable(q) is None]
        with WhatIf(db, catalog=catalog) as whatif:
            costs = {i: whatif.cost(i, texts[i], frozenset()) for i in explainable}
            not_planned = [(texts[i], whatif.stats.errors.get(i, "?")) for i, c in costs.items() if c is None]
            forms = dict(whatif.stats.by_form)
        started = time.perf_counter()
        advice = advise(db, settings, given_workload(corpus.statements, settings))
        elapsed = time.perf_counter() - started
    finally:
        db.close()
    skipped = skip_counts(advice.skipped)
    return Judgement(corpus.name, len(texts), len(explainable), len(explainable) - len(not_planned), not_planned,
                     skipped, len(texts) - len(advice.skipped), len(advice.recommendations), round(elapsed, 2),
                     forms, advice)


def unaccepted(judgement: Judgement) -> Counter[str]:
    """Skip reasons that must not occur in a corpus (the planner refusing indexd's text)."""
    return Counter({k: n for k, n in judgement.skipped.items() if k not in ACCEPTED_SKIPS})

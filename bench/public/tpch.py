"""TPC-H (and TPC-DS) data and query texts from DuckDB's extensions, offline, loaded into PostgreSQL.

The extensions ship inside the PyPI packages `duckdb-extension-tpch` / `duckdb-extension-tpcds`: we LOAD the
`*.duckdb_extension` file from the package folder, generate the tables at a scale factor, export each one as CSV
and COPY it into PostgreSQL. Tables get no primary key and no index, as the public evaluation platform sets them
up (its table generator strips the primary keys), so figures are comparable with its published ones.
"""

from __future__ import annotations

import importlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg2
from psycopg2 import sql

# benchmark -> (extension package, generator call, query table function)
KITS = {
    "tpch": ("duckdb_extension_tpch", "CALL dbgen(sf={sf})", "SELECT query_nr, query FROM tpch_queries()"),
    "tpcds": ("duckdb_extension_tpcds", "CALL dsdgen(sf={sf})", "SELECT query_nr, query FROM tpcds_queries()"),
}

# DuckDB column type (its prefix) -> PostgreSQL type
TYPES = (
    ("BIGINT", "bigint"), ("INTEGER", "integer"), ("SMALLINT", "smallint"), ("DOUBLE", "double precision"),
    ("FLOAT", "real"), ("DATE", "date"), ("TIMESTAMP", "timestamp"), ("BOOLEAN", "boolean"), ("VARCHAR", "text"),
)
DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type with its NOT NULL)


@dataclass(frozen=True)
class Query:
    nr: int
    text: str  # PostgreSQL dialect, no trailing ';'


@dataclass(frozen=True)
class Dataset:
    benchmark: str
    scale_factor: float
    tables: tuple[Table, ...]
    queries: tuple[Query, ...]
    generate_s: float
    load_s: float


def extension_path(package: str) -> Path:
    """The `*.duckdb_extension` file inside an installed extension package."""
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise SystemExit(f"the Python package {package!r} is not installed: pip install -e .[bench]") from exc
    folder = Path(module.__file__ or "").parent
    found = sorted(folder.glob("extensions/v*/*.duckdb_extension"))
    if not found:
        raise SystemExit(f"no *.duckdb_extension file under {folder}/extensions/: reinstall {package}")
    return found[-1]


def pg_type(duck: str) -> str:
    match = DECIMAL.fullmatch(duck)
    if match:
        return f"numeric({match.group(1)},{match.group(2)})"
    for prefix, pg in TYPES:
        if duck.startswith(prefix):
            return pg
    raise SystemExit(f"no PostgreSQL type for the DuckDB type {duck!r}: add it to bench/public/tpch.py TYPES")


def postgres_query(text: str) -> str:
    """DuckDB's query text for PostgreSQL: the TPC-H texts run as they are once the final ';' is gone (the
    platform's connector splits statements on it)."""
    return text.strip().rstrip(";").strip()


def _export(con: duckdb.DuckDBPyConnection, folder: Path) -> list[Table]:
    tables = []
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall():
        cols = con.execute(f"DESCRIBE {name}").fetchall()
        tables.append(Table(name, tuple((c[0], pg_type(c[1]) + (" NOT NULL" if c[2] == "NO" else "")) for c in cols)))
        con.execute(f"COPY {name} TO '{folder / name}.csv' (FORMAT csv, DELIMITER '|', HEADER false)")
    return tables


def generate(benchmark: str, sf: float, folder: Path) -> tuple[list[Table], list[Query]]:
    """Generate the data as CSV files in `folder`; the table definitions and the queries."""
    package, gen, queries_sql = KITS[benchmark]
    con = duckdb.connect()
    try:
        con.execute(f"LOAD '{extension_path(package)}'")
        con.execute(gen.format(sf=float(sf)))
        tables = _export(con, folder)
        queries = [Query(int(nr), postgres_query(text)) for nr, text in con.execute(queries_sql).fetchall()]
    finally:
        con.close()
    return tables, sorted(queries, key=lambda q: q.nr)


def load(conn: psycopg2.extensions.connection, tables: list[Table], folder: Path) -> None:
    """CREATE TABLE (no key, no index) and COPY each CSV in; ANALYZE at the end."""
    with conn.cursor() as cur:
        for table in tables:
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in table.columns)
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table.name), cols))
            copy = sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, DELIMITER '|')").format(
                sql.Identifier(table.name))
            with open(folder / f"{table.name}.csv", encoding="utf-8") as fh:
                cur.copy_expert(copy.as_string(conn), fh)
        cur.execute("VACUUM ANALYZE")


def build(conn: psycopg2.extensions.connection, benchmark: str, sf: float) -> Dataset:
    """Generate, export and load one benchmark's data; the CSV files are removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{benchmark}-") as tmp:
        t0 = time.perf_counter()
        tables, queries = generate(benchmark, sf, Path(tmp))
        t1 = time.perf_counter()
        load(conn, tables, Path(tmp))
        t2 = time.perf_counter()
    return Dataset(benchmark, sf, tuple(tables), tuple(queries), round(t1 - t0, 1), round(t2 - t1, 1))

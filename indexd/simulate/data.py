"""Create and bulk-load the synthetic shop (generate_series in SQL, so even the large scenario loads fast)."""

from __future__ import annotations

import logging
import time

import psycopg2
from psycopg2 import sql

from indexd.dsn import redact_dsn
from indexd.errors import UsageError, first_line
from indexd.simulate.scenario import SCHEMA, Scenario, scenario
from indexd.simulate.schema import ddl, load_sql, partition_ddl

log = logging.getLogger(__name__)

SCHEMA_MARK = "synthetic shop of indexd simulate (dropped and reloaded by each setup)"
TABLE_NAMES = ("customers", "products", "orders", "order_items", "events", "payments")


def _refuse_a_foreign_schema(cur: psycopg2.extensions.cursor, schema: str, dsn: str) -> None:
    """Setup drops the schema it loads: never one that an earlier setup did not create (someone's real data)."""
    cur.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (schema,))
    row = cur.fetchone()
    if row is not None and row[0] != SCHEMA_MARK:
        raise UsageError(
            f"schema {schema} already exists in {redact_dsn(dsn)} and was not created by 'indexd simulate': "
            f"refusing to drop it; use a scratch database (or drop the schema yourself if it is a leftover)"
        )


def setup(dsn: str, scenario_name: str | Scenario, schema: str = SCHEMA) -> None:
    """Drop and recreate schema `shop`, load the scenario's skewed data, ANALYZE. Indexes: primary keys only."""
    sc = scenario(scenario_name)
    started = time.monotonic()
    conn = psycopg2.connect(dsn, application_name="indexd-simulate", connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL synchronous_commit = off")
            _refuse_a_foreign_schema(cur, schema, dsn)
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            cur.execute(sql.SQL("COMMENT ON SCHEMA {} IS %s").format(sql.Identifier(schema)), (SCHEMA_MARK,))
            cur.execute(ddl(schema))
            for stmt in partition_ddl(schema=schema):
                cur.execute(stmt)
            cur.execute(
                load_sql(schema),
                {"customers": sc.customers, "products": sc.products, "orders": sc.orders, "events": sc.events},
            )
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in TABLE_NAMES:
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
            # The bulk load is not the workload: restart the tables' write counters so write rates measure
            # what the simulated application does (allowed for the owner; skipped quietly otherwise).
            try:
                cur.execute(
                    "SELECT count(pg_stat_reset_single_table_counters(c.oid)) FROM pg_class c JOIN pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                    (schema,),
                )
            except psycopg2.Error as exc:
                log.info("simulate: write counters not reset (%s)", first_line(exc))
    finally:
        conn.close()
    log.info(
        "simulate: loaded scenario %s (~%d rows) into %s in %.1fs",
        sc.name, sc.approx_rows, redact_dsn(dsn), time.monotonic() - started,
    )


def table_counts(dsn: str, schema: str = SCHEMA) -> dict[str, int]:
    """Exact row counts of the shop's tables (for tests and the demo's summary)."""
    conn = psycopg2.connect(dsn, application_name="indexd-simulate", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            counts = {}
            for table in TABLE_NAMES:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
                counts[table] = int(cur.fetchone()[0])
            return counts
    finally:
        conn.close()


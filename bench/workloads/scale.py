"""A wide synthetic schema and many distinct statement shapes, to measure the advisor's own cost at scale."""

from __future__ import annotations

import random

from psycopg2 import sql

from indexd.statements.statement import Statement

COLUMNS = ("a", "b", "c", "d", "e", "f", "g", "h")  # a-c int (skewed, uniform, low-card), d bigint, e-f text, g-h ts
ROWS = 5000


def table_name(i: int) -> str:
    return f"t{i:03d}"


def schema_sql(tables: int, rows: int = ROWS) -> list[sql.Composed]:
    out = []
    for i in range(tables):
        t = sql.Identifier("scale", table_name(i))
        out.append(sql.SQL(
            "CREATE TABLE {} (id bigserial PRIMARY KEY, a int, b int, c int, d bigint, e text, f text, "
            "g timestamptz, h timestamptz, parent bigint)").format(t))
        out.append(sql.SQL(
            "INSERT INTO {} (a, b, c, d, e, f, g, h, parent) SELECT (random() ^ 3 * 1000)::int, "
            "(random() * 100000)::int, g % 7, g * 13, 'name ' || (g % 2000), md5(g::text), "
            "now() - g * interval '1 minute', now() - (g % 500) * interval '1 hour', 1 + g % {} "
            "FROM generate_series(1, {}) g").format(t, sql.Literal(max(rows // 10, 1)), sql.Literal(rows)))
    return out


def _select_list(rng: random.Random) -> str:
    cols = rng.sample(COLUMNS, rng.randint(1, 4))
    return ", ".join(["id", *cols])


def statements(n: int, tables: int, seed: int = 1) -> list[Statement]:
    """n distinct statements over `tables` tables: lookups, ranges, top-N, joins, aggregates, updates, inserts."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Statement] = []
    while len(out) < n:
        t = f"scale.{table_name(rng.randrange(tables))}"
        x, y = rng.sample(COLUMNS, 2)
        kind = rng.randrange(8)
        if kind == 0:
            q = f"SELECT {_select_list(rng)} FROM {t} WHERE {x} = $1"
        elif kind == 1:
            q = f"SELECT {_select_list(rng)} FROM {t} WHERE {x} = $1 AND {y} = $2"
        elif kind == 2:
            q = f"SELECT {_select_list(rng)} FROM {t} WHERE {x} = $1 ORDER BY {y} DESC LIMIT $2"
        elif kind == 3:
            q = f"SELECT {_select_list(rng)} FROM {t} WHERE {x} > $1 AND {x} < $2"
        elif kind == 4:
            u = f"scale.{table_name(rng.randrange(tables))}"
            q = f"SELECT p.id, p.{x}, c.{y} FROM {u} p JOIN {t} c ON c.parent = p.id WHERE p.{x} = $1"
        elif kind == 5:
            q = f"SELECT {x}, count(*) FROM {t} WHERE {y} = $1 GROUP BY {x}"
        elif kind == 6:
            q = f"UPDATE {t} SET {y} = {y} WHERE {x} = $1"
        else:
            q = f"INSERT INTO {t} ({x}, {y}) VALUES ($1, $2)"
        if q in seen:
            continue
        seen.add(q)
        calls = 1 + int(rng.paretovariate(1.2) * 10)
        out.append(Statement(q, calls=calls, total_time_ms=calls * rng.uniform(0.1, 20.0)))
    return out

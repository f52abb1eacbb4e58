"""The synthetic shop's schema: tables, a partitioned table and a view, with no index beyond primary keys.

Nothing here is indexed on purpose except primary keys, so the advisor has real wins to find (customer
lookups by lower(email), orders by customer, order lines by product, payments by order) and traps to avoid
(an append-heavy log, a low-selectivity tier column).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from psycopg2 import sql

from indexd.simulate.scenario import SCHEMA

TABLES = """
CREATE TABLE {s}.customers (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    name        text NOT NULL,
    country     text NOT NULL,
    tier        text NOT NULL DEFAULT 'standard',
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_login  timestamptz
);
CREATE TABLE {s}.products (
    id        bigserial PRIMARY KEY,
    sku       text NOT NULL,
    name      text NOT NULL,
    category  text NOT NULL,
    price     numeric(10, 2) NOT NULL,
    stock     integer NOT NULL DEFAULT 0
);
CREATE TABLE {s}.orders (
    id           bigserial PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES {s}.customers (id),
    status       text NOT NULL,
    total        numeric(12, 2) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.order_items (
    order_id    bigint NOT NULL REFERENCES {s}.orders (id),
    line_no     integer NOT NULL,
    product_id  bigint NOT NULL REFERENCES {s}.products (id),
    quantity    integer NOT NULL,
    unit_price  numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE {s}.events (
    id           bigserial PRIMARY KEY,
    customer_id  bigint,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{{}}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.payments (
    id          bigserial,
    order_id    bigint NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    method      text NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE {s}.payments_default PARTITION OF {s}.payments DEFAULT;
CREATE VIEW {s}.customer_order_totals AS
    SELECT o.customer_id, count(*) AS orders, sum(o.total) AS spent, max(o.created_at) AS last_order_at
    FROM {s}.orders o
    WHERE o.status <> 'cancelled'
    GROUP BY o.customer_id;
"""

# Skew: pow(random(), k) piles values near 0, so low ids are the busy customers and popular products, and
# "now() - age * pow(random(), 2)" piles timestamps near now. setseed makes a load reproducible.
LOAD = """
SELECT setseed(0.42);
INSERT INTO {s}.customers (email, name, country, tier, created_at)
SELECT 'User' || g || '@Example.com',
       'Customer ' || g,
       (ARRAY['DE','DE','DE','FR','FR','US','US','US','US','GB','NL','SE'])[1 + floor(random() * 12)::int],
       CASE WHEN random() < 0.93 THEN 'standard' ELSE 'gold' END,
       now() - interval '3 years' * pow(random(), 1.5)
FROM generate_series(1, %(customers)s) g;

INSERT INTO {s}.products (sku, name, category, price, stock)
SELECT 'SKU-' || lpad(g::text, 7, '0'),
       'Product ' || g,
       (ARRAY['books','music','garden','toys','kitchen','sports','office','tools'])[1 + floor(random() * 8)::int],
       round((2 + random() * 300)::numeric, 2),
       floor(random() * 500)::int
FROM generate_series(1, %(products)s) g;

INSERT INTO {s}.orders (customer_id, status, total, created_at, updated_at)
SELECT 1 + floor(pow(random(), 3) * %(customers)s)::bigint,
       CASE WHEN r < 0.004 THEN 'pending' WHEN r < 0.06 THEN 'cancelled'
            WHEN r < 0.16 THEN 'shipped' ELSE 'delivered' END,
       round((5 + random() * 400)::numeric, 2),
       t, t
FROM (SELECT random() AS r, now() - interval '365 days' * pow(random(), 2) AS t
      FROM generate_series(1, %(orders)s)) x;

INSERT INTO {s}.order_items (order_id, line_no, product_id, quantity, unit_price)
SELECT o.id, l, 1 + floor(pow(random(), 2) * %(products)s)::bigint, 1 + floor(random() * 3)::int,
       round((2 + random() * 300)::numeric, 2)
FROM {s}.orders o CROSS JOIN LATERAL generate_series(1, 1 + (o.id %% 4)::int) l;

INSERT INTO {s}.payments (order_id, amount, method, status, created_at)
SELECT o.id, o.total, (ARRAY['card','card','card','paypal','invoice'])[1 + floor(random() * 5)::int],
       CASE WHEN random() < 0.97 THEN 'captured' ELSE 'refunded' END, o.created_at
FROM {s}.orders o WHERE o.id %% 5 <> 0;

INSERT INTO {s}.events (customer_id, kind, payload, created_at)
SELECT 1 + floor(pow(random(), 3) * %(customers)s)::bigint,
       (ARRAY['page_view','page_view','page_view','search','cart_add','login'])[1 + floor(random() * 6)::int],
       jsonb_build_object('n', g),
       now() - interval '90 days' * pow(random(), 2)
FROM generate_series(1, %(events)s) g;

SELECT setval(pg_get_serial_sequence('{s}.customers', 'id'), (SELECT max(id) FROM {s}.customers));
SELECT setval(pg_get_serial_sequence('{s}.orders', 'id'), (SELECT max(id) FROM {s}.orders));
"""


def _months(now: datetime, back: int, ahead: int) -> list[date]:
    first = date(now.year, now.month, 1)
    out = []
    for k in range(-back, ahead + 2):
        y, m = divmod(first.month - 1 + k, 12)
        out.append(date(first.year + y, m + 1, 1))
    return out


def partition_ddl(now: datetime | None = None, schema: str = SCHEMA) -> list[sql.Composed]:
    """Monthly partitions of payments from 13 months back to next month (the rest lands in the default)."""
    months = _months(now or datetime.now(UTC), back=13, ahead=1)
    stmts = []
    for lo, hi in zip(months, months[1:], strict=False):
        stmts.append(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(schema, f"payments_{lo:%Y_%m}"),
                sql.Identifier(schema, "payments"),
                sql.Literal(lo.isoformat()),
                sql.Literal(hi.isoformat()),
            )
        )
    return stmts


def ddl(schema: str = SCHEMA) -> sql.Composed:
    return sql.SQL(TABLES).format(s=sql.Identifier(schema))


def load_sql(schema: str = SCHEMA) -> sql.Composed:
    """The bulk load, with %(customers)s, %(products)s, %(orders)s, %(events)s as parameters."""
    return sql.SQL(LOAD).format(s=sql.Identifier(schema))

"""The statement shapes of the synthetic shop workload: SQL with psycopg2 parameters, a weight, and a
parameter generator. pg_stat_statements sees each as one normalised statement ($1, $2 ...).

Ids are skewed like real traffic: a few customers and products get most of it (`_skewed`), and time ranges
look at the recent past.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Params = tuple[Any, ...]


@dataclass(frozen=True)
class Bounds:
    """Largest ids in the loaded data; the workload draws keys from 1..these."""

    customers: int
    products: int
    orders: int


@dataclass(frozen=True)
class Shape:
    name: str
    kind: str  # "read" | "write" | "report"
    weight: float
    sql: str
    params: Callable[[random.Random, Bounds], Params]


def _skewed(rng: random.Random, n: int, power: float = 3.0) -> int:
    """1..n, heavily biased to small values (a Zipf-like head of busy customers / popular products)."""
    return 1 + min(n - 1, int(n * rng.random() ** power))


def _cust(rng: random.Random, b: Bounds) -> int:
    return _skewed(rng, b.customers)


def _prod(rng: random.Random, b: Bounds) -> int:
    return _skewed(rng, b.products, 2.0)


def _order(rng: random.Random, b: Bounds) -> int:
    # Recent orders are looked at far more than old ones.
    return max(1, b.orders - int(b.orders * rng.random() ** 4))


def _ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE")
CATEGORIES = ("books", "music", "garden", "toys", "kitchen", "sports", "office", "tools")
KINDS = ("page_view", "search", "cart_add", "login")

S = "shop"
READS: list[Shape] = [
    Shape("customer_by_email", "read", 8,
          f"SELECT id, name, tier FROM {S}.customers WHERE lower(email) = lower(%s)",
          lambda r, b: (f"user{_cust(r, b)}@example.com",)),
    Shape("customer_by_id", "read", 6,
          f"SELECT id, email, name, country FROM {S}.customers WHERE id = %s",
          lambda r, b: (_cust(r, b),)),
    Shape("orders_of_customer", "read", 10,
          f"SELECT id, status, total, created_at FROM {S}.orders WHERE customer_id = %s "
          "ORDER BY created_at DESC LIMIT 20",
          lambda r, b: (_cust(r, b),)),
    Shape("order_detail", "read", 5,
          f"SELECT o.id, o.status, i.line_no, p.name, i.quantity, i.unit_price FROM {S}.orders o "
          f"JOIN {S}.order_items i ON i.order_id = o.id JOIN {S}.products p ON p.id = i.product_id "
          "WHERE o.id = %s",
          lambda r, b: (_order(r, b),)),
    Shape("customer_purchases", "read", 4,
          f"SELECT o.id, o.created_at, p.name, i.quantity FROM {S}.orders o "
          f"JOIN {S}.order_items i ON i.order_id = o.id JOIN {S}.products p ON p.id = i.product_id "
          "WHERE o.customer_id = %s ORDER BY o.created_at DESC LIMIT 50",
          lambda r, b: (_cust(r, b),)),
    Shape("items_of_product", "read", 4,
          f"SELECT order_id, quantity, unit_price FROM {S}.order_items WHERE product_id = %s LIMIT 100",
          lambda r, b: (_prod(r, b),)),
    Shape("pending_orders", "read", 3,
          f"SELECT id, customer_id, total, created_at FROM {S}.orders WHERE status = 'pending' "
          "ORDER BY created_at LIMIT 50",
          lambda r, b: ()),
    Shape("recent_orders", "read", 3,
          f"SELECT id, customer_id, status, total FROM {S}.orders WHERE created_at >= %s "
          "ORDER BY created_at DESC LIMIT 50",
          lambda r, b: (_ago(r.uniform(0.5, 3)),)),
    Shape("payments_of_order", "read", 4,
          f"SELECT id, amount, method, status, created_at FROM {S}.payments WHERE order_id = %s",
          lambda r, b: (_order(r, b),)),
    Shape("product_by_sku", "read", 3,
          f"SELECT id, name, price, stock FROM {S}.products WHERE sku = %s",
          lambda r, b: (f"SKU-{_prod(r, b):07d}",)),
    Shape("products_in_category", "read", 2,
          f"SELECT id, name, price FROM {S}.products WHERE category = %s ORDER BY price LIMIT 20",
          lambda r, b: (r.choice(CATEGORIES),)),
    Shape("customer_totals", "read", 2,
          f"SELECT orders, spent, last_order_at FROM {S}.customer_order_totals WHERE customer_id = %s",
          lambda r, b: (_cust(r, b),)),
    Shape("customers_of_tier", "read", 1,
          f"SELECT country, count(*) FROM {S}.customers WHERE tier = %s GROUP BY country",
          lambda r, b: ("standard",)),
    Shape("newest_customers_in_country", "read", 1,
          f"SELECT id, name, created_at FROM {S}.customers WHERE country = %s ORDER BY created_at DESC LIMIT 20",
          lambda r, b: (r.choice(COUNTRIES),)),
    Shape("customer_name_search", "read", 1,
          f"SELECT id, name FROM {S}.customers WHERE name ILIKE %s LIMIT 20",
          lambda r, b: (f"%{r.randint(100, 999)}%",)),
    Shape("events_of_customer", "read", 0.3,
          f"SELECT kind, created_at FROM {S}.events WHERE customer_id = %s AND created_at >= %s "
          "ORDER BY created_at DESC LIMIT 20",
          lambda r, b: (_cust(r, b), _ago(7))),
]

REPORTS: list[Shape] = [
    Shape("order_status_by_day", "report", 0.4,
          f"SELECT date_trunc('day', created_at) AS day, status, count(*), sum(total) FROM {S}.orders "
          "WHERE created_at >= %s GROUP BY 1, 2 ORDER BY 1, 2",
          lambda r, b: (_ago(r.choice((7, 14, 30))),)),
    Shape("top_products", "report", 0.2,
          f"SELECT p.category, p.name, sum(i.quantity) AS sold FROM {S}.order_items i "
          f"JOIN {S}.products p ON p.id = i.product_id GROUP BY p.category, p.name ORDER BY sold DESC LIMIT 10",
          lambda r, b: ()),
    Shape("top_customers", "report", 0.2,
          f"SELECT customer_id, count(*) AS n FROM {S}.orders GROUP BY customer_id ORDER BY n DESC LIMIT 10",
          lambda r, b: ()),
    Shape("refunds_recent", "report", 0.3,
          f"SELECT method, count(*), sum(amount) FROM {S}.payments WHERE status = 'refunded' AND created_at >= %s "
          "GROUP BY method",
          lambda r, b: (_ago(30),)),
    Shape("event_kinds_today", "report", 0.2,
          f"SELECT kind, count(*) FROM {S}.events WHERE created_at >= %s GROUP BY kind",
          lambda r, b: (_ago(1),)),
]

WRITES: list[Shape] = [
    Shape("place_order", "write", 5,
          f"WITH o AS (INSERT INTO {S}.orders (customer_id, status, total) VALUES (%s, 'pending', %s) RETURNING id) "
          f"INSERT INTO {S}.order_items (order_id, line_no, product_id, quantity, unit_price) "
          "SELECT o.id, 1, %s, %s, %s FROM o",
          lambda r, b: (_cust(r, b), round(r.uniform(5, 400), 2), _prod(r, b), r.randint(1, 3),
                        round(r.uniform(2, 300), 2))),
    Shape("ship_next_pending", "write", 5,
          f"UPDATE {S}.orders SET status = 'shipped', updated_at = now() WHERE id = ("
          f"SELECT id FROM {S}.orders WHERE status = 'pending' ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)",
          lambda r, b: ()),
    Shape("deliver_order", "write", 3,
          f"UPDATE {S}.orders SET status = 'delivered', updated_at = now() WHERE id = %s",
          lambda r, b: (_order(r, b),)),
    Shape("log_event", "write", 14,
          f"INSERT INTO {S}.events (customer_id, kind, payload) VALUES (%s, %s, %s)",
          lambda r, b: (_cust(r, b), r.choice(KINDS), '{"src": "simulate"}')),
    Shape("record_payment", "write", 3,
          f"INSERT INTO {S}.payments (order_id, amount, method, status) VALUES (%s, %s, %s, 'captured')",
          lambda r, b: (_order(r, b), round(r.uniform(5, 400), 2), r.choice(("card", "paypal")))),
    Shape("touch_login", "write", 4,
          f"UPDATE {S}.customers SET last_login = now() WHERE id = %s",
          lambda r, b: (_cust(r, b),)),
    Shape("adjust_stock", "write", 3,
          f"UPDATE {S}.products SET stock = greatest(stock - %s, 0) WHERE id = %s",
          lambda r, b: (r.randint(1, 3), _prod(r, b))),
]

SHAPES: list[Shape] = READS + REPORTS + WRITES

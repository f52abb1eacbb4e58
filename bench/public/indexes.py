"""Index sets as the bench handles them: one definition type for every tool, real builds, sizes and drops."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

CONCURRENTLY = re.compile(r"\bCONCURRENTLY\s+", re.IGNORECASE)
IF_NOT_EXISTS = re.compile(r"\bIF\s+NOT\s+EXISTS\s+", re.IGNORECASE)
INDEX_NAME = re.compile(r"^(CREATE\s+(?:UNIQUE\s+)?INDEX\s+)(\S+)(\s+ON\s+)", re.IGNORECASE)


@dataclass(frozen=True)
class IndexDef:
    """A btree index on plain columns (the platform's algorithms), or a statement indexd wrote (any shape)."""

    table: str  # schema-qualified or not
    columns: tuple[str, ...]  # column names, or indexd's key labels (expressions possible)
    statement: str | None = None  # indexd's CREATE INDEX as printed; None for plain column indexes
    where: str | None = None
    include: tuple[str, ...] = ()
    method: str = "btree"

    def key(self) -> tuple[object, ...]:
        """What makes two definitions the same index, whoever proposed it."""
        table = self.table.split(".", 1)[-1] if self.table.startswith("public.") else self.table
        return table, self.columns, self.method, self.where, self.include

    def label(self) -> str:
        out = f"{self.table}({', '.join(self.columns)})"
        if self.include:
            out += f" INCLUDE ({', '.join(self.include)})"
        return out + (f" WHERE {self.where}" if self.where else "")

    def create_sql(self, name: sql.Identifier) -> sql.Composable:
        """CREATE INDEX under `name`; indexd's own statement keeps its shape but is built without CONCURRENTLY,
        like every other tool's, so build times compare."""
        if self.statement is not None:
            text = IF_NOT_EXISTS.sub("", CONCURRENTLY.sub("", self.statement.strip().rstrip(";")))
            match = INDEX_NAME.match(text)
            if match is None:
                raise ValueError(f"not a CREATE INDEX statement: {self.statement!r}")
            return sql.Composed([sql.SQL(match.group(1)), name, sql.SQL(text[match.end(2):])])
        table = sql.Identifier(*self.table.split(".", 1))
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        return sql.SQL("CREATE INDEX {} ON {} ({})").format(name, table, cols)


def dedupe(indexes: list[IndexDef]) -> list[IndexDef]:
    seen: set[tuple[object, ...]] = set()
    out = []
    for idx in indexes:
        if idx.key() not in seen:
            seen.add(idx.key())
            out.append(idx)
    return out


def signature(indexes: list[IndexDef]) -> tuple[tuple[object, ...], ...]:
    """Order-free identity of an index set: equal sets are measured once."""
    return tuple(sorted((idx.key() for idx in indexes), key=repr))


@dataclass
class Built:
    names: list[str]
    bytes: int
    build_s: float


def build(conn: psycopg2.extensions.connection, indexes: list[IndexDef], prefix: str = "bench_ix") -> Built:
    """Create every index for real (autocommit connection), ANALYZE; their total size."""
    names: list[str] = []
    size = 0
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
        for n, idx in enumerate(indexes):
            name = f"{prefix}_{n}"
            cur.execute(idx.create_sql(sql.Identifier(name)))
            names.append(name)
            cur.execute("SELECT pg_relation_size(oid) FROM pg_class WHERE relname = %s AND relkind = 'i'", (name,))
            row = cur.fetchone()
            size += int(row[0]) if row else 0
        cur.execute("ANALYZE")
    return Built(names, size, time.perf_counter() - t0)


def drop(conn: psycopg2.extensions.connection, names: list[str]) -> None:
    with conn.cursor() as cur:
        for name in names:
            cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute("ANALYZE")

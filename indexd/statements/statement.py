"""A workload as the advisor reads it: statement shapes with their weights, and the span those weights cover.
Capture and query files produce it (indexd.workload); the advisor is handed it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Statement:
    """One statement shape of the workload with its weight."""

    query: str  # as pg_stat_statements normalises it ($1, $2 ...) or as written in a .sql file
    calls: int = 1
    total_time_ms: float = 0.0  # real execution time over the look-back; 0 when unknown (offline workload)
    queryid: int | None = None
    rows: int = 0  # rows returned or affected over the look-back (pg_stat_statements.rows); 0 when unknown


@dataclass(frozen=True)
class Workload:
    """The statements one advice run weighs, and where they came from."""

    statements: list[Statement]
    period_s: float  # the seconds the statements' calls were counted over (write rates are per this span)
    captured: bool = True  # from pg_stat_statements (True) or a given list of statements
    warnings: tuple[str, ...] = ()

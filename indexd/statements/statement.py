"""One statement shape of a workload, with its weight: what capture and query files produce and the advisor reads."""

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

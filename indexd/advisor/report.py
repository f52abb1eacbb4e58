"""The advice as the `recommend --json` contract (DESIGN.md §3) and as a readable table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from indexd.advisor.model import IMPROVEMENT, Recommendation
from indexd.advisor.pipeline import Advice, Skipped
from indexd.advisor.skips import SkipReason, count_line, skip_counts
from indexd.advisor.store import query_effects
from indexd.state.statuses import Origin
from indexd.units import human_duration, human_rate, human_size

QUERY_WIDTH = 70


def advice_origin(advice: Advice) -> Origin:
    """Where advice comes from: the database's workload, or a query file (offline advice: built only once a
    person approves it, whatever the mode)."""
    return Origin.WORKLOAD if advice.from_workload else Origin.QUERIES


def recommendation_json(rec: Recommendation, create_sql: str, rec_id: int | None = None,
                        origin: Origin = Origin.WORKLOAD) -> dict[str, Any]:
    cand = rec.candidate
    out: dict[str, Any] = {
        "table": f"{cand.schema}.{cand.table}",
        "columns": [k.label() for k in cand.keys],
        "method": cand.method,
        "where": cand.where,
        "include": list(cand.include),
        "index_name": cand.name(),
        "create_sql": create_sql,
        "estimated_size_bytes": rec.estimated_size_bytes,
        "improvement_pct": rec.improvement_pct,
        "write_overhead": rec.write_overhead,
        "benefit_ms_per_s": rec.benefit_ms_per_s,
        "queries": query_effects(rec),
        "origin": str(origin),
    }
    if rec_id is not None:
        out["id"] = rec_id
    return out


def advice_json(advice: Advice, ids: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON object `indexd recommend --json` prints: exactly the contract's keys (notes go to stderr)."""
    ids = ids or {}
    return {
        "database": advice.database,
        "analyzed_statements": advice.analyzed_statements,
        "elapsed_s": advice.elapsed_s,
        "recommendations": [
            recommendation_json(r, advice.create_sql[r.candidate.fingerprint()], ids.get(r.candidate.fingerprint()),
                                advice_origin(advice))
            for r in advice.recommendations
        ],
    }


def short(query: str, width: int = QUERY_WIDTH) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table_rows(advice: Advice, ids: dict[str, int] | None = None,
               statuses: dict[int, str] | None = None) -> list[list[Any]]:
    """One row per recommendation: id, status (of the stored row: a shape someone rejected stays rejected),
    origin, index, table, size, improvement, write cost, statements helped."""
    ids, statuses, origin = ids or {}, statuses or {}, str(advice_origin(advice))
    rows = []
    for rec in advice.recommendations:
        cand = rec.candidate
        cols = ", ".join(k.label() for k in cand.keys)
        extra = (f" INCLUDE ({', '.join(cand.include)})" if cand.include else "") + (
            f" WHERE {cand.where}" if cand.where else "")
        method = "" if cand.method == "btree" else f"{cand.method} "
        rec_id = ids.get(cand.fingerprint())
        rows.append([rec_id, statuses.get(rec_id) if rec_id is not None else None, origin, f"{method}({cols}){extra}",
                     f"{cand.schema}.{cand.table}",
                     human_size(rec.estimated_size_bytes), f"{rec.improvement_pct:.1f}%",
                     human_rate(rec.write_overhead), len(rec.queries)])
    return rows


HEADERS = ("id", "status", "origin", "index", "table", "size", IMPROVEMENT, "write cost", "statements")


def details(advice: Advice, verbose: bool = False) -> list[str]:
    """The lines under the table: each index's statements and SQL, then skipped statements and warnings."""
    lines: list[str] = []
    for rec in advice.recommendations:
        lines.append("")
        lines.append(advice.create_sql[rec.candidate.fingerprint()] + ";")
        for q in rec.queries:
            lines.append(f"  {q.calls:>8} calls  cost {q.cost_before:,.1f} -> {q.cost_after:,.1f}  {short(q.query)}")
    if advice.skipped:
        lines.append("")
        lines.extend(skipped_lines(advice.skipped, verbose))
    if advice.declined and not advice.recommendations:
        lines.append("")
        lines.append("candidate indexes considered and declined:")
        lines.extend(f"  {d.query}: {d.reason}" for d in advice.declined[:10])
    lines.extend(f"warning: {w}" for w in advice.warnings)
    return lines


def summary(advice: Advice) -> str:
    if advice.recommendations:
        total = sum(r.estimated_size_bytes for r in advice.recommendations)
        offline = "" if advice.from_workload else (
            "; offline advice from --queries: nothing of it is built before 'indexd approve ID'")
        return (f"{advice.database}: {len(advice.recommendations)} index(es) recommended, "
                f"{human_size(total)} in all, from {advice.analyzed_statements} statements "
                f"in {human_duration(advice.elapsed_s)}{offline}")
    return (f"{advice.database}: no index recommended from {advice.analyzed_statements} statements "
            f"in {human_duration(advice.elapsed_s)}: {nothing_reason(advice)}")


# (text in a selection's refusal, the kind of refusal), first match wins
_DECLINE_KINDS = (
    ("storage budget", "budget"),
    ("of its statements' cost", "improvement"),
    ("of writes", "writes"),
    ("served by existing index", "existing"),
    ("costlier", "regression"),
    ("new indexes", "per_table"),
    ("nearly as well", "narrower"),
    ("past the knee", "knee"),
    ("chosen already", "overlap"),
    ("widened to", "overlap"),
)
# Declines that only follow from others: a candidate a smaller one serves stands or falls with that one.
_FOLLOWING = frozenset({"narrower", "overlap"})


def nothing_reason(advice: Advice) -> str:
    """Why no index is recommended, from the cause that applies (an empty workload, the budget, the thresholds)."""
    if advice.analyzed_statements == 0:
        if not advice.from_workload:
            if advice.skipped:
                return "no statement of the --queries workload can be used (see skipped above)"
            return "the --queries workload has no statement"
        return ("no statements captured yet: pg_stat_statements records them as the application runs; "
                f"let it serve traffic (the look-back is {human_duration(advice.lookback_s)}) and run recommend again, "
                "or give the statements with --queries PATH")
    if not advice.declined:
        served = sum(skip_kind(s) == SkipReason.ALREADY_INDEXED for s in advice.skipped)
        if served and served == len(advice.skipped):
            return "the indexes these statements need exist already"
        return "no statement has a predicate, join, sort or grouping a new index could serve (see skipped above)"
    kinds = Counter(_decline_kind(d.reason) for d in advice.declined)
    if kinds["budget"] and kinds["budget"] + sum(kinds[k] for k in _FOLLOWING) == len(advice.declined):
        smallest = advice.smallest_candidate_bytes or 0
        return (f"the storage budget ({human_size(advice.budget_bytes or 0)}) is smaller than the smallest candidate "
                f"index ({human_size(smallest)}): raise --budget-mb or indexing.storage_budget")
    texts = {
        "budget": f"do not fit the storage budget ({human_size(advice.budget_bytes or 0)})",
        "improvement": f"save less than min_improvement_pct ({advice.min_improvement_pct:g}%) of the cost of the "
                       "statements they help",
        "writes": "save less than they would cost in index maintenance on writes",
        "existing": "are served by existing indexes",
        "regression": "would make a statement costlier",
        "per_table": "exceed max_indexes_per_table",
        "narrower": "are served nearly as well by a smaller candidate",
        "knee": "save too little of the workload for their size (past the knee)",
        "overlap": "are served by, or widen, another choice",
        "other": "were declined for other reasons",
    }
    parts = [f"{n} {texts[kind]}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"of {len(advice.declined)} candidate index(es), " + ", ".join(parts)


def _decline_kind(reason: str) -> str:
    for text, kind in _DECLINE_KINDS:
        if text in reason:
            return kind
    return "other"


def skip_kind(skip: Skipped) -> SkipReason:
    """The named reason of a skipped statement (see `skips.SkipReason`)."""
    return skip.kind or SkipReason.UNCOSTABLE


def skipped_lines(skipped: Sequence[Skipped], verbose: bool = False) -> list[str]:
    """One line counting the skipped statements by reason; with verbose, each statement under it."""
    head = f"skipped {len(skipped)} statement{'s' if len(skipped) != 1 else ''}: {count_line(skipped)}"
    if not verbose:
        return [f"{head} (--verbose lists them)"]
    order = list(skip_counts(skipped))
    ranked = sorted(skipped, key=lambda s: order.index(str(skip_kind(s))))  # stable: the workload's order within
    return [head, *(f"  [{skip_kind(s)}] {short(s.query, 10**9)}: {s.reason}" for s in ranked)]

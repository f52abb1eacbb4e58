"""Why the advisor leaves a statement out: one short list of named reasons, each the statement's own.

Every statement of a workload is either costed or skipped with one of these. None of them is "the text indexd
fed the planner had a syntax or type error": normalized text is made plannable first (see `costable`);
UNCOSTABLE is kept for a failure no other reason explains, so it is visible rather than hidden.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)


class SkipReason(StrEnum):
    PARSE_ERROR = "parse_error"  # the text does not parse (a file's typo, a truncated capture)
    UTILITY = "utility"  # SET, SHOW, VACUUM, COPY, EXPLAIN, CALL ...
    DDL = "ddl"  # CREATE, ALTER, DROP, GRANT, COMMENT ...
    TRANSACTION_CONTROL = "transaction_control"  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT ...
    UNSUPPORTED = "unsupported"  # MERGE, several statements in one text, nesting too deep to analyse
    FUNCTION_ONLY = "function_only"  # reads no relation at all (SELECT now(), SELECT $1)
    WRITE_ONLY = "write_only"  # INSERT ... VALUES: reads nothing an index serves (its writes are costed)
    CATALOG_ONLY = "catalog_only"  # reads system catalogs only
    INDEXD_OWN = "indexd_own"  # reads indexd's state schema
    NOT_A_KNOWN_TABLE = "not_a_known_table"  # a relation this database does not have (temporary, dropped)
    UNKNOWN_COLUMN = "unknown_column"  # a column its table does not have
    NOT_INDEXABLE = "not_indexable"  # foreign tables, views that cannot be expanded, sequences ...
    SMALL_TABLE = "small_table"  # tables under min_table_rows
    ALREADY_INDEXED = "already_indexed"  # the indexes it could use exist already
    NO_INDEXABLE_PREDICATE = "no_indexable_predicate"  # no predicate, join, sort or grouping an index serves
    PERMISSION = "permission"  # indexd's role may not read a relation the statement reads
    TIMEOUT = "timeout"  # planning it took longer than the statement timeout
    INVALID_STATEMENT = "invalid_statement"  # PostgreSQL rejects the statement exactly as it was given
    UNCOSTABLE = "uncostable"  # none of the above: the planner refused the plannable form (a shortcoming)


_TRANSACTION_NODES = frozenset({"TransactionStmt"})
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Comment", "Grant", "Reassign", "Define", "Import",
                 "SecLabel", "CompositeType", "ViewStmt", "IndexStmt", "RuleStmt")


def statement_reason(node_name: str) -> SkipReason:
    """The reason for a statement that is no SELECT/INSERT/UPDATE/DELETE, from its parse-tree node's name."""
    if node_name in _TRANSACTION_NODES:
        return SkipReason.TRANSACTION_CONTROL
    if node_name == "MergeStmt":
        return SkipReason.UNSUPPORTED
    if node_name.startswith(_DDL_PREFIXES):
        return SkipReason.DDL
    return SkipReason.UTILITY


# SQLSTATEs of a statement PostgreSQL refuses to plan, by what they say about the statement
_SQLSTATE_REASONS = {
    "42501": SkipReason.PERMISSION,  # insufficient_privilege
    "42P01": SkipReason.NOT_A_KNOWN_TABLE,  # undefined_table
    "3F000": SkipReason.NOT_A_KNOWN_TABLE,  # invalid_schema_name
    "42703": SkipReason.UNKNOWN_COLUMN,  # undefined_column
    "57014": SkipReason.TIMEOUT,  # query_canceled (statement_timeout)
}


def planner_reason(sqlstate: str | None, as_given: bool) -> SkipReason:
    """The reason for a statement the planner refused with this SQLSTATE.

    `as_given`: the text sent was exactly the statement (no parameter types to choose, nothing rewritten), so a
    syntax or type error is the statement's own.
    """
    found = _SQLSTATE_REASONS.get(sqlstate or "")
    if found is not None:
        return found
    return SkipReason.INVALID_STATEMENT if as_given else SkipReason.UNCOSTABLE


def shape_fingerprint(query: str, queryid: int | None = None) -> str:
    """A short stable name for a statement shape: pg_stat_statements' queryid, else a hash of its text."""
    if queryid is not None:
        return f"q{queryid}"
    return hashlib.sha256(" ".join(query.split()).encode()).hexdigest()[:16]


class SeenShapes:
    """A bounded memory of statement shapes already reported, oldest forgotten first."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, fingerprint: str) -> bool:
        """True the first time a shape is seen (and again once it has been forgotten)."""
        if fingerprint in self._seen:
            self._seen.move_to_end(fingerprint)
            return False
        self._seen[fingerprint] = None
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class SkippedShape(Protocol):
    """What a skipped statement tells (pipeline.Skipped has it)."""

    @property
    def query(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def kind(self) -> SkipReason | None: ...
    @property
    def queryid(self) -> int | None: ...


def log_new_skips(database: str, skipped: Iterable[SkippedShape], seen: SeenShapes) -> int:
    """Log each skipped statement shape at INFO the first time it is skipped for a reason; how many were new."""
    new = 0
    for skip in skipped:
        kind = skip.kind or SkipReason.UNCOSTABLE
        if seen.first_time(f"{shape_fingerprint(skip.query, skip.queryid)}:{kind}"):
            new += 1
            log.info("%s: statement skipped (%s): %s -- %s", database, kind, " ".join(skip.query.split())[:200],
                     skip.reason)
    return new


def skip_counts(skipped: Iterable[SkippedShape]) -> dict[str, int]:
    """Skipped statements by named reason, the most frequent first."""
    counts = Counter(str(s.kind or SkipReason.UNCOSTABLE) for s in skipped)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def count_line(skipped: Iterable[SkippedShape]) -> str:
    """"3 utility, 1 small_table": skipped statements by named reason, the most frequent first."""
    return ", ".join(f"{n} {kind}" for kind, n in skip_counts(skipped).items())

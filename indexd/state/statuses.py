"""A recommendation's statuses and the one table of the moves allowed between them: a pure state machine.

`Status` is the one type of a recommendation's status and `TRANSITIONS` the one table of the moves allowed
between them; sql/040_recommendation_lifecycle.sql holds the same status list in its CHECK constraint and the
same `LIVE` list in its unique index (a test compares them). The table's rows are moved by
`indexd.state.recommendations`, which checks every move here first.

The main road is pending -> (approved ->) building -> built -> kept; a build that does not finish leaves
`building` for failed (the index itself), interrupted (its run was cut off: claimed again later, until
indexing.build_attempts runs made it failed) or back to where it came from (a lock timeout). TRANSITIONS has
every other move.
"""

from __future__ import annotations

import enum

from indexd.errors import IndexdError


class Status(enum.StrEnum):
    PENDING = "pending"  # recommended; mode auto builds it, mode approve waits for a person
    APPROVED = "approved"  # a person approved it: the next apply builds it
    REJECTED = "rejected"  # a person rejected it: never built
    BUILDING = "building"  # claimed by one build
    BUILT = "built"  # built and valid, waiting for its verdict
    KEPT = "kept"  # verification kept it
    REVERTED = "reverted"  # dropped again: verification found it harmful, or it went unused
    FAILED = "failed"  # the index itself failed (permission, duplicate key, definition, timeout) or too many runs
    INTERRUPTED = "interrupted"  # its run was interrupted (connection, server restart, indexd stopped): queued again
    SUPERSEDED = "superseded"  # no longer supported by the workload, or made redundant before it was built


class Origin(enum.StrEnum):
    WORKLOAD = "workload"  # pg_stat_statements: the database's real workload
    QUERIES = "queries"  # a query file (`recommend --queries`): offline advice, built only once a person approves


S = Status
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.APPROVED, S.REJECTED, S.BUILDING, S.SUPERSEDED}),
    S.APPROVED: frozenset({S.BUILDING, S.REJECTED, S.SUPERSEDED}),
    S.REJECTED: frozenset({S.APPROVED}),
    # back to pending/approved/interrupted: a claim given back unchanged (lock timeout, a pause between partitions)
    S.BUILDING: frozenset({S.BUILT, S.FAILED, S.INTERRUPTED, S.PENDING, S.APPROVED}),
    S.BUILT: frozenset({S.KEPT, S.REVERTED}),
    S.KEPT: frozenset({S.REVERTED}),
    S.REVERTED: frozenset(),
    S.FAILED: frozenset({S.APPROVED, S.REJECTED}),
    S.INTERRUPTED: frozenset({S.BUILDING, S.APPROVED, S.REJECTED, S.SUPERSEDED, S.FAILED}),
    S.SUPERSEDED: frozenset(),
}
LIVE = frozenset({S.PENDING, S.APPROVED, S.BUILDING, S.BUILT, S.KEPT, S.INTERRUPTED})  # one per index shape
QUEUED = frozenset({S.PENDING, S.APPROVED, S.INTERRUPTED})  # waiting for a build (approved, or as the mode says)
OPEN = QUEUED | {S.BUILDING}  # advice not settled yet, as `status` lists it
NEVER_BUILT = frozenset({S.PENDING, S.APPROVED, S.REJECTED})  # no build was ever started for these


class IllegalTransition(IndexdError):
    """A status change TRANSITIONS does not allow: a bug in the caller, never a user's mistake."""

    def __init__(self, rec_id: int | None, source: Status, target: Status) -> None:
        self.rec_id, self.source, self.target = rec_id, source, target
        which = f"recommendation #{rec_id}" if rec_id is not None else "a recommendation"
        super().__init__(f"{which} cannot go from {source} to {target}")


def check_transition(source: Status, target: Status, rec_id: int | None = None) -> None:
    """Raise IllegalTransition unless TRANSITIONS allows source -> target."""
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(rec_id, source, target)


def sources_of(target: Status) -> frozenset[Status]:
    """Every status a row may reach `target` from."""
    return frozenset(s for s, allowed in TRANSITIONS.items() if target in allowed)


DECISIONS = (S.APPROVED, S.REJECTED)


def decidable_from(decision: Status) -> frozenset[Status]:
    """What a person may approve or reject: what TRANSITIONS allows, but never a row a build holds (its claim
    is given back to `approved` by the build itself, not by a person)."""
    return sources_of(decision) - {S.BUILDING}

"""The recommendation lifecycle without a server: the transition table move by move, and how a failed build is
classified (given back, interrupted, failed) from its SQLSTATE."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from indexd.lifecycle.ddl import Settle, classify_build_failure
from indexd.state.statuses import (
    LIVE,
    OPEN,
    QUEUED,
    TRANSITIONS,
    IllegalTransition,
    Status,
    check_transition,
    decidable_from,
    sources_of,
)

S = Status
ALLOWED = sorted((s, t) for s, targets in TRANSITIONS.items() for t in targets)
FORBIDDEN = sorted((s, t) for s in Status for t in Status if t not in TRANSITIONS[s])

# What the code does today, each move by the module that makes it: all of it must stay legal.
USED = [
    (S.PENDING, S.APPROVED), (S.FAILED, S.APPROVED), (S.REJECTED, S.APPROVED), (S.INTERRUPTED, S.APPROVED),
    (S.PENDING, S.REJECTED), (S.APPROVED, S.REJECTED), (S.FAILED, S.REJECTED), (S.INTERRUPTED, S.REJECTED),
    (S.PENDING, S.BUILDING), (S.APPROVED, S.BUILDING), (S.INTERRUPTED, S.BUILDING),  # apply claims a row
    (S.BUILDING, S.BUILT), (S.BUILDING, S.FAILED), (S.BUILDING, S.INTERRUPTED),  # a build settles it
    (S.BUILDING, S.PENDING), (S.BUILDING, S.APPROVED),  # a claim given back after a lock timeout or a pause
    (S.BUILT, S.KEPT), (S.BUILT, S.REVERTED),  # verification
    (S.KEPT, S.REVERTED),  # an unused index dropped
    (S.PENDING, S.SUPERSEDED), (S.INTERRUPTED, S.SUPERSEDED),  # advice the workload no longer supports
]
# Moves that would be bugs: each must raise.
MUST_NOT = [
    (S.PENDING, S.BUILT), (S.APPROVED, S.BUILT), (S.BUILT, S.PENDING), (S.BUILT, S.BUILDING),
    (S.KEPT, S.BUILT), (S.FAILED, S.BUILDING), (S.REJECTED, S.BUILDING), (S.BUILDING, S.BUILDING),
    (S.BUILDING, S.REJECTED), (S.REVERTED, S.APPROVED), (S.SUPERSEDED, S.PENDING), (S.INTERRUPTED, S.BUILT),
]


@pytest.mark.parametrize(("source", "target"), ALLOWED, ids=[f"{s}->{t}" for s, t in ALLOWED])
def test_every_allowed_transition_passes(source: Status, target: Status) -> None:
    check_transition(source, target, rec_id=1)
    assert source in sources_of(target)


def test_every_other_pair_raises_naming_the_row_and_the_move() -> None:
    assert len(ALLOWED) + len(FORBIDDEN) == len(Status) ** 2
    for source, target in FORBIDDEN:
        with pytest.raises(IllegalTransition, match=f"#7 cannot go from {source} to {target}") as info:
            check_transition(source, target, rec_id=7)
        assert (info.value.source, info.value.target) == (source, target)
    assert set(MUST_NOT) <= set(FORBIDDEN)


def test_what_the_code_does_stays_legal() -> None:
    assert set(USED) <= set(ALLOWED)


def test_the_table_covers_every_status_and_everything_is_reachable_from_pending() -> None:
    assert set(TRANSITIONS) == set(Status)
    seen, todo = {S.PENDING}, [S.PENDING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(Status)
    assert {s for s, targets in TRANSITIONS.items() if not targets} == {S.REVERTED, S.SUPERSEDED}


def test_sets_of_statuses() -> None:
    assert {S.PENDING, S.APPROVED, S.INTERRUPTED} == QUEUED and QUEUED <= LIVE and QUEUED | {S.BUILDING} == OPEN
    assert LIVE.isdisjoint({S.REJECTED, S.FAILED, S.REVERTED, S.SUPERSEDED})
    assert all(S.BUILDING in TRANSITIONS[s] for s in QUEUED)


def test_a_person_never_decides_on_a_row_a_build_holds() -> None:
    assert decidable_from(S.APPROVED) == {S.PENDING, S.REJECTED, S.FAILED, S.INTERRUPTED}
    assert decidable_from(S.REJECTED) == {S.PENDING, S.APPROVED, S.FAILED, S.INTERRUPTED}
    assert S.APPROVED in TRANSITIONS[S.BUILDING]  # the build itself may give its claim back


def _classify(exc: BaseException, duration_s: float = 1.0) -> Settle:
    return classify_build_failure(exc, lock_timeout_s=5, build_timeout_s=600, duration_s=duration_s).settle


def test_a_lock_timeout_gives_the_claim_back() -> None:
    failure = classify_build_failure(psycopg2.errors.LockNotAvailable("canceling statement due to lock timeout"),
                                     lock_timeout_s=5, build_timeout_s=600, duration_s=5.0)
    assert failure.settle is Settle.RELEASE and "lock timeout after 5s" in failure.reason


@pytest.mark.parametrize("exc", [
    psycopg2.OperationalError("server closed the connection unexpectedly"),  # no SQLSTATE: the server went away
    psycopg2.InterfaceError("connection already closed"),
    psycopg2.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg2.errors.CrashShutdown("terminating connection because of crash of another server process"),
    psycopg2.errors.DeadlockDetected("deadlock detected"),
], ids=lambda e: type(e).__name__)
def test_a_run_cut_off_is_interrupted(exc: BaseException) -> None:
    assert _classify(exc) is Settle.INTERRUPT


def test_a_cancel_is_an_interruption_and_the_build_timeout_a_failure() -> None:
    cancel = psycopg2.errors.QueryCanceled("canceling statement due to user request")
    assert _classify(cancel, duration_s=30) is Settle.INTERRUPT
    timeout = classify_build_failure(psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"),
                                     lock_timeout_s=5, build_timeout_s=600, duration_s=600.2)
    assert timeout.settle is Settle.FAIL and "indexing.build_timeout" in timeout.reason


@pytest.mark.parametrize("exc", [
    psycopg2.errors.InsufficientPrivilege("must be owner of table t"),
    psycopg2.errors.UniqueViolation("could not create unique index"),
    psycopg2.errors.UndefinedColumn('column "x" does not exist'),
    psycopg2.errors.DiskFull("could not extend file"),
], ids=lambda e: type(e).__name__)
def test_the_index_itself_failing_is_a_failure(exc: BaseException) -> None:
    assert _classify(exc) is Settle.FAIL

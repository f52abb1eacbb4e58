"""Retention decisions: a pure function of (backups, now, policy), tested with an injected clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from indexd.backup.manifest import BackupInfo
from indexd.backup.retention import (
    DEFAULT_GRACE,
    KeepDays,
    KeepLast,
    RetentionPolicy,
    decide,
    policy_from_settings,
)
from indexd.config.schema import BackupRetentionSettings, BackupSettings, BackupVerifySettings

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
POLICY = RetentionPolicy((KeepLast(3), KeepDays(timedelta(days=7))))


def b(hours_ago: float, status: str = "verified", name: str = "main") -> BackupInfo:
    at = NOW - timedelta(hours=hours_ago)
    bid = f"{name}-{at.strftime('%Y%m%dT%H%M%SZ')}"
    return BackupInfo(id=bid, database=name, started_at=at, status=status, path=Path(f"/b/{bid}.dump"))


def kept(decisions: list) -> list[str]:
    return [d.backup.id for d in decisions if d.keep]


def deleted(decisions: list) -> list[str]:
    return [d.backup.id for d in decisions if not d.keep]


def test_empty() -> None:
    assert decide([], NOW, POLICY) == []


def test_keeps_last_n_and_young_ones() -> None:
    backups = [b(24 * d) for d in range(1, 15)]  # one a day for 14 days
    result = decide(backups, NOW, POLICY)
    # younger than 7 days: days 1..6 (day 7 is exactly 7 days old: not younger); last 3 are within them
    assert kept(result) == [x.id for x in backups[:6]]
    assert deleted(result) == [x.id for x in backups[6:]]


def test_keep_last_beyond_age_window() -> None:
    backups = [b(24 * 30 + h) for h in range(5)]  # all a month old
    result = decide(backups, NOW, POLICY)
    assert kept(result) == [x.id for x in backups[:3]]
    assert "one of the last 3" in result[1].reason


def test_newest_verified_is_never_deleted_even_when_old_and_newer_ones_failed() -> None:
    old_good = b(24 * 100)
    failures = [b(h, "failed") for h in range(10, 200, 10)]
    policy = RetentionPolicy((KeepDays(timedelta(days=1)),))
    result = {d.backup.id: d for d in decide([old_good, *failures], NOW, policy)}
    assert result[old_good.id].keep
    assert "never deleted" in result[old_good.id].reason


def test_newest_verified_survives_a_policy_that_keeps_nothing() -> None:
    backups = [b(24 * 50), b(24 * 60)]
    result = decide(backups, NOW, RetentionPolicy(()))
    assert kept(result) == [backups[0].id]
    assert deleted(result) == [backups[1].id]


def test_failed_and_partial_never_count_toward_keep_last() -> None:
    good = [b(24 * 20 + h) for h in range(4)]  # four old verified
    bad = [b(h, "failed") for h in (10, 11, 12)] + [b(13, "partial")]
    result = decide(good + bad, NOW, RetentionPolicy((KeepLast(3),)))
    assert set(kept(result)) == {g.id for g in good[:3]}
    assert set(deleted(result)) == {good[3].id} | {x.id for x in bad}


def test_failed_within_grace_is_kept_then_deleted() -> None:
    fresh = b(1, "partial")
    old = b(DEFAULT_GRACE.total_seconds() / 3600 + 1, "failed")
    result = {d.backup.id: d for d in decide([fresh, old], NOW, POLICY)}
    assert result[fresh.id].keep and "grace" in result[fresh.id].reason
    assert not result[old.id].keep and "never counted" in result[old.id].reason


def test_unverified_completed_does_not_count_when_verification_is_required() -> None:
    verified = [b(24 * 10 + h) for h in range(3)]
    unverified = b(2, "completed")
    result = {d.backup.id: d for d in decide([*verified, unverified], NOW, POLICY)}
    assert result[unverified.id].keep and "not verified" in result[unverified.id].reason
    # The three verified ones are still the "last 3": the unverified one took no slot.
    assert all(result[v.id].keep for v in verified)
    assert "never deleted" in result[verified[0].id].reason


def test_unverified_completed_outside_window_is_deleted() -> None:
    result = decide([b(1), b(24 * 10, "completed")], NOW, POLICY)
    assert [d.keep for d in result] == [True, False]


def test_completed_counts_when_verification_is_off() -> None:
    policy = RetentionPolicy((KeepLast(1),), require_verified=False)
    backups = [b(24 * 30, "completed"), b(24 * 31, "completed")]
    result = decide(backups, NOW, policy)
    assert kept(result) == [backups[0].id]
    assert "newest good" in result[0].reason


def test_future_timestamps_are_kept() -> None:
    result = decide([b(-5), b(24 * 30)], NOW, RetentionPolicy((KeepDays(timedelta(days=1)),)))
    assert kept(result) == [result[0].backup.id]


def test_result_is_newest_first_and_complete() -> None:
    backups = [b(h, s) for h, s in zip((5, 50, 1, 300, 30), ("verified", "failed", "partial", "verified",
                                                              "completed"), strict=True)]
    result = decide(backups, NOW, POLICY)
    assert [d.backup.started_at for d in result] == sorted((x.started_at for x in backups), reverse=True)
    assert len(result) == len(backups)
    assert all(d.reason for d in result)


def test_invariants_over_every_status_mix() -> None:
    """Every sequence of 5 statuses, under three policies: the newest verified is kept, failures never are."""
    for statuses in itertools.product(["verified", "failed", "partial", "completed"], repeat=5):
        backups = [b(24 * 40 + 24 * i, s) for i, s in enumerate(statuses)]
        for policy in (RetentionPolicy(()), RetentionPolicy((KeepLast(1),)), POLICY):
            result = decide(backups, NOW, policy)
            assert len(result) == len(backups)
            good = [d for d in result if d.backup.status == "verified"]
            if good:
                assert good[0].keep, f"newest verified deleted: {statuses} {policy}"
            assert all(not d.keep for d in result if d.backup.status in ("failed", "partial"))
            kept_good = sum(1 for d in good if d.keep)
            assert kept_good == (min(len(good), 3) if policy is POLICY else 1 if good else 0)


def test_policy_from_settings() -> None:
    settings = BackupSettings(
        retention=BackupRetentionSettings(keep_last=2, keep_days=timedelta(0)),
        verify=BackupVerifySettings(list_after_backup=False),
        timeout=timedelta(hours=10),
    )
    policy = policy_from_settings(settings)
    assert policy.rules == (KeepLast(2),)
    assert policy.grace == timedelta(hours=10)
    assert not policy.require_verified
    default = policy_from_settings(BackupSettings())
    assert default.rules == (KeepLast(7), KeepDays(timedelta(days=7)))
    assert default.require_verified

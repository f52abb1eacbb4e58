"""Which backups retention keeps: small policy classes chosen from config and one pure decision function.

Only good backups (verified; or completed when verification after backup is switched off) count toward
`keep_last`. Failed and partial ones never count and go once older than a grace period (a partial younger
than that may still be written by a running pg_dump). The newest good backup is never deleted, whatever its
age and however many newer ones failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from indexd.backup.manifest import FOREIGN, BackupInfo
from indexd.config.schema import BackupSettings
from indexd.units import human_duration

DEFAULT_GRACE = timedelta(hours=6)


class KeepRule(Protocol):
    """One reason to keep a good backup: returns the reason, or None when this rule does not keep it."""

    def keeps(self, rank: int, age: timedelta) -> str | None: ...


@dataclass(frozen=True)
class KeepLast:
    count: int

    def keeps(self, rank: int, age: timedelta) -> str | None:
        return f"one of the last {self.count} good backups" if rank < self.count else None


@dataclass(frozen=True)
class KeepDays:
    window: timedelta

    def keeps(self, rank: int, age: timedelta) -> str | None:
        return f"younger than {human_duration(self.window)}" if age < self.window else None


@dataclass(frozen=True)
class RetentionPolicy:
    """A good backup is kept when any rule keeps it; `grace` protects fresh failed or partial leftovers."""

    rules: tuple[KeepRule, ...]
    grace: timedelta = DEFAULT_GRACE
    require_verified: bool = True

    def is_good(self, backup: BackupInfo) -> bool:
        return backup.status == "verified" or (backup.status == "completed" and not self.require_verified)

    def describe(self) -> str:
        parts = [r.keeps(0, timedelta(0)) or "" for r in self.rules]
        return " or ".join(p for p in parts if p) or "only the newest good backup"


def policy_from_settings(backups: BackupSettings) -> RetentionPolicy:
    """keep_last and keep_days combine: a good backup is kept if either keeps it (0 disables a rule)."""
    rules: list[KeepRule] = []
    if backups.retention.keep_last > 0:
        rules.append(KeepLast(backups.retention.keep_last))
    if backups.retention.keep_days > timedelta(0):
        rules.append(KeepDays(backups.retention.keep_days))
    grace = max(DEFAULT_GRACE, backups.timeout)
    return RetentionPolicy(tuple(rules), grace=grace, require_verified=backups.verify.list_after_backup)


@dataclass(frozen=True)
class Decision:
    backup: BackupInfo
    keep: bool
    reason: str

    @property
    def action(self) -> str:
        return "keep" if self.keep else "delete"


def _decide_bad(backup: BackupInfo, age: timedelta, policy: RetentionPolicy) -> Decision:
    if backup.status == FOREIGN:
        return Decision(backup, True, f"foreign ({backup.error or 'not written by indexd'}): never deleted")
    what = {"partial": "partial leftover", "failed": "failed backup"}.get(backup.status, f"{backup.status} backup")
    if backup.status == "completed":
        # Completed but never verified: not counted, yet not thrown away while it is within the age window.
        for rule in policy.rules:
            if isinstance(rule, KeepDays) and (why := rule.keeps(0, age)):
                return Decision(backup, True, f"not verified (not counted), {why}")
        return Decision(backup, False, "not verified and outside the retention window")
    if age < policy.grace:
        return Decision(backup, True, f"{what}, within the {human_duration(policy.grace)} grace period")
    return Decision(backup, False, f"{what}, never counted")


def decide(backups: Sequence[BackupInfo], now: datetime, policy: RetentionPolicy) -> list[Decision]:
    """Keep or delete each backup, with the reason; newest first. Pure: no disk, no clock."""
    ordered = sorted(backups, key=lambda b: (b.started_at, b.id), reverse=True)
    decisions = []
    rank = 0
    for backup in ordered:
        age = now - backup.started_at
        if not policy.is_good(backup):
            decisions.append(_decide_bad(backup, age, policy))
            continue
        if rank == 0:
            decisions.append(Decision(backup, True, "newest good backup (never deleted)"))
        else:
            reasons = [why for rule in policy.rules if (why := rule.keeps(rank, age))]
            if reasons:
                decisions.append(Decision(backup, True, "; ".join(reasons)))
            else:
                decisions.append(Decision(backup, False, f"beyond policy ({policy.describe()})"))
        rank += 1
    return decisions

"""`indexd backup run / list / verify / prune` and `indexd restore`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from indexd.backup import trial, verify
from indexd.backup.catalog import find_backup, list_backups, prune, record_in_catalog
from indexd.backup.dump import run_backup
from indexd.backup.manifest import FOREIGN, BackupInfo
from indexd.backup.restore import restore as run_restore
from indexd.backup.retention import Decision, decide, policy_from_settings
from indexd.backup.scratch import test_restore
from indexd.cli.common import load, notifying, print_json, print_table, targets
from indexd.cli.runner import each_database
from indexd.clock import utcnow
from indexd.config.schema import BackupSettings, DatabaseSettings, Settings
from indexd.errors import UsageError
from indexd.log import setup_logging
from indexd.units import human_duration, human_size

log = logging.getLogger(__name__)
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _setup_logging(args: argparse.Namespace, settings: Settings) -> None:
    level = cast(Level, getattr(args, "log_level", None) or "WARNING")
    setup_logging(replace(settings.logging, file=None, format="text", level=level))


def _size(n: int | None) -> str:
    return human_size(n) if n else "-"


def _when(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else None


def backup(args: argparse.Namespace) -> int:
    settings = load(args)
    _setup_logging(args, settings)
    action = {"run": _run, "list": _list, "verify": _verify, "prune": _prune}[args.backup_command]
    if args.backup_command in ("run", "verify"):  # the ones that can fail a backup or a test restore
        with notifying(settings):
            return action(args, settings)
    return action(args, settings)


# ---- run ------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace, settings: Settings) -> int:
    def one(db: DatabaseSettings) -> None:
        if not db.backups.enabled and not args.database:
            print(f"{db.name}: skipped: backups disabled")
            return
        result = run_backup(settings, db)
        print(f"{db.name}: backup {result.id} {result.status}, {_size(result.size_bytes)} in "
              f"{human_duration(result.duration_s)} -> {result.path}")

    return each_database(targets(args, settings), one, act="backup").exit_code


# ---- list -----------------------------------------------------------------------------------------------
def _policy_for(settings: Settings, database: str) -> BackupSettings:
    return next((d.backups for d in settings.databases if d.name == database), settings.backups)


def _decisions(settings: Settings, backups: list[BackupInfo], now: datetime) -> dict[tuple[Path, str], Decision]:
    out: dict[tuple[Path, str], Decision] = {}
    for folder in sorted({b.path.parent for b in backups}):
        group = [b for b in backups if b.path.parent == folder]
        for d in decide(group, now, policy_from_settings(_policy_for(settings, group[0].database))):
            out[(d.backup.path, d.backup.id)] = d
    return out


def _list(args: argparse.Namespace, settings: Settings) -> int:
    now = utcnow()
    backups = list_backups(settings, args.database)
    if args.database and not backups:
        settings.database(args.database)  # a name that is neither configured nor on disk is a typo: say so
    decisions = _decisions(settings, backups, now)
    rows: list[dict[str, Any]] = []
    for b in backups:
        d = decisions.get((b.path, b.id))
        test = trial.last_trial(b.manifest)
        rows.append({
            "database": b.database, "id": b.id, "started_at": b.started_at.isoformat(), "status": b.status,
            "format": b.format, "size_bytes": b.size_bytes, "verified": b.status == "verified",
            "verified_at": b.verified_at.isoformat() if b.verified_at else None,  # when the checksum last matched
            "checksum_verified_at": b.verified_at.isoformat() if b.verified_at else None,
            "test_restore_at": test.at.isoformat() if test and test.at else None,
            "test_restore_result": test.result if test else None, "test_restore_detail": test.detail if test else None,
            "path": str(b.path), "policy": d.action if d else None, "policy_reason": d.reason if d else None,
            "foreign": b.status == FOREIGN, "foreign_reason": b.error if b.status == FOREIGN else None,
        })
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no backups")
        return 0
    print_table(
        ["id", "database", "started (UTC)", "size", "status", "checksum ok (UTC)", "test restore (UTC)", "policy"],
        [[b.id, b.database, _when(b.started_at), _size(b.size_bytes), b.status, _when(b.verified_at),
          _test_cell(r), "never touched" if b.status == FOREIGN else r["policy"]]
         for b, r in zip(backups, rows, strict=True)],
    )
    _explain_tests(rows)
    foreign = [b for b in backups if b.status == FOREIGN]
    if foreign:
        print(f"\n{len(foreign)} foreign manifest(s): never deleted, verified or restored by indexd")
        for b in foreign:
            print(f"  {b.path}: {b.error}")
    return 0


def _test_cell(row: dict[str, Any]) -> str | None:
    if not row["test_restore_result"]:
        return None
    at = row["test_restore_at"]
    return f"{row['test_restore_result']} {at[:19].replace('T', ' ') if at else ''}".strip()


def _explain_tests(rows: list[dict[str, Any]]) -> None:
    """Why a test restore was not ok, under the table (for the newest such backup of each database)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["test_restore_result"] and r["test_restore_result"] != trial.Result.OK:
            latest[r["database"]] = r
    for r in latest.values():
        print(f"  test restore of {r['id']}: {r['test_restore_result']}: {r['test_restore_detail']}")


# ---- verify ---------------------------------------------------------------------------------------------
def _verify(args: argparse.Namespace, settings: Settings) -> int:
    info = find_backup(settings, args.id)
    if args.database and settings.database(args.database).name != info.database:
        raise UsageError(f"backup {args.id} belongs to {info.database!r}, not {args.database!r}")
    server = _test_restore_server(args, settings, info) if args.restore else None
    result = verify.verify_backup(info.path.parent.parent, args.id)
    if result.ok:
        error = find_backup(settings, args.id).error
        stays = f"; the backup stays failed: {error}" if result.held_failed else ""
        print(f"{args.id}: checksum ok, {result.list_entries} entries readable{stays}")
    else:
        print(f"{args.id}: verification FAILED", file=sys.stderr)
        for problem in result.problems:
            print(f"  {problem}", file=sys.stderr)
    ok = result.ok
    if result.ok and args.restore:
        ok = _test_restore(args, settings, server)
    configured = next((d for d in settings.databases if d.name == info.database), None)
    if configured is not None:
        record_in_catalog(configured, find_backup(settings, args.id))
    return 0 if ok else 1


def _test_restore(args: argparse.Namespace, settings: Settings, server: str | None) -> bool:
    """The test restore into a scratch database on `server` (None: the backup's own), and what it found."""
    test = test_restore(settings, args.id, target_dsn=server)
    took = human_duration(test.duration_s)
    if test.result == trial.Result.ERROR:
        print(f"{args.id}: test restore could not run ({took}); the backup is not in question and stays "
              f"{test.status}:\n  {test.detail}", file=sys.stderr)
    elif test.ok:
        print(f"{args.id}: test restore {test.result} ({took}): {test.detail}")
    else:
        print(f"{args.id}: test restore FAILED, the backup is now marked failed:", file=sys.stderr)
        for problem in test.mismatches:
            print(f"  {problem}", file=sys.stderr)
    return test.ok


def _test_restore_server(args: argparse.Namespace, settings: Settings, info: BackupInfo) -> str | None:
    """Where `verify --restore` makes its scratch database: --target-dsn's server (as for restore), else --dsn's,
    else backups.verify.restore_dsn, else (None) the backup's own server, which must then be in the configuration."""
    configured = next((d for d in settings.databases if d.name == info.database), None)
    elsewhere = args.target_dsn or args.dsn or \
        (configured.backups if configured is not None else settings.backups).verify.restore_dsn
    if configured is None and not elsewhere:
        raise UsageError(f"backup {info.id} belongs to {info.database!r}, which is not in the configuration: "
                         "pass --target-dsn DSN (or --dsn) to say which server to test-restore it on")
    return elsewhere


# ---- prune ----------------------------------------------------------------------------------------------
def _prune(args: argparse.Namespace, settings: Settings) -> int:
    now = utcnow()
    verb = "would delete" if args.dry_run else "deleted"

    def one(db: DatabaseSettings) -> list[Decision]:
        decisions = prune(db, now=now, dry_run=args.dry_run)
        if args.json:
            return decisions
        gone = sum(1 for d in decisions if d.action == "delete")
        print(f"{db.name}: {len(decisions) - gone} kept, {gone} {verb}")
        if decisions:
            print_table(["id", "status", "age", "action", "reason"], [
                [d.backup.id, d.backup.status, human_duration(now - d.backup.started_at),
                 verb if d.action == "delete" else "keep", d.reason] for d in decisions])
        return decisions

    run = each_database(targets(args, settings), one, act="prune")
    if args.json:
        print_json(run.listing(lambda decisions: {"dry_run": args.dry_run, "backups": [{
            "id": d.backup.id, "status": d.backup.status, "started_at": d.backup.started_at.isoformat(),
            "action": d.action, "reason": d.reason, "path": str(d.backup.path)} for d in decisions]}))
    return run.exit_code


# ---- restore --------------------------------------------------------------------------------------------
def _ask(question: str) -> bool:
    answer = input(f"{question} Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


def restore(args: argparse.Namespace) -> int:
    settings = load(args)
    _setup_logging(args, settings)
    confirm = _ask if sys.stdin.isatty() else None
    result = run_restore(settings, args.id, args.target_db, target_dsn=args.target_dsn, jobs=args.jobs,
                         assume_yes=args.yes, confirm=confirm, no_owner=getattr(args, "no_owner", False))
    replaced = " (replaced the existing database)" if result.replaced_existing else ""
    print(f"restored {result.backup_id} into {result.target_db} with {result.jobs} job(s) in "
          f"{human_duration(result.duration_s)}{replaced}")
    if result.kept_old:
        print(f"warning: the previous database is kept as {result.kept_old}: drop it with "
              f"DROP DATABASE {result.kept_old}", file=sys.stderr)
    return 0


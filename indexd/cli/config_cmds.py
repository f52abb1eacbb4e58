"""`indexd check-config` and `indexd migrate`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Literal, cast

from indexd.cli.common import connected, load, targets
from indexd.cli.runner import each_database
from indexd.config.checks import check_runnable, production_problems
from indexd.config.load import find_config, load_settings
from indexd.config.schema import Settings
from indexd.db.conninfo import connect_kwargs
from indexd.dsn import redact_dsn
from indexd.errors import ConfigError, GuardRefusal
from indexd.log import setup_logging

if TYPE_CHECKING:
    from indexd.db.pool import Database

log = logging.getLogger(__name__)
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration (and with --production, the hardening); every problem at once, exit 2."""
    path = find_config(args.config)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _report_problems(path, exc.problems)
    problems = _runtime_problems(settings)
    if problems:
        return _report_problems(settings.source, problems)
    problems = production_problems(settings, path) if args.production else []
    if problems:
        return _report_problems(path, problems, production=True)
    n = len(settings.databases)
    checked = " (production checks passed)" if args.production else ""
    print(f"configuration OK: {settings.source}, {n} database{'' if n == 1 else 's'}{checked}")
    return 0


def _runtime_problems(settings: Settings) -> list[str]:
    """What only shows when indexd runs: the daemon's start checks (databases, token file) and each password file
    (a database whose password_file cannot be read fails on every connection)."""
    problems: list[str] = []
    try:
        check_runnable(settings)
    except ConfigError as exc:
        problems += exc.problems
    for db in settings.databases:
        try:
            connect_kwargs(db)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def _report_problems(path: object, problems: list[str], production: bool = False) -> int:
    kind = "is not ready for production" if production else "is invalid"
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    print(f"configuration {path or '(none found)'} {kind}: {count}", file=sys.stderr)
    for problem in problems:
        print(f"  {redact_dsn(problem)}", file=sys.stderr)
    return ConfigError.exit_code


def migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the state schema in each target database; one failing database does not stop the rest."""
    # heavy: the state schema's modules load SQLAlchemy (the pool); check-config never needs them
    from indexd.db.standby import STANDBY, is_standby
    from indexd.lifecycle.preflight_readings import log_missing
    from indexd.state.migrations import current_version, migrations
    from indexd.state.migrations import migrate as apply_migrations

    settings = load(args)
    setup_logging(replace(settings.logging, file=None, format="text", level=_cli_level(args)))

    def one(db: Database) -> None:
        if is_standby(db):
            version, newest = current_version(db), max(m.version for m in migrations())
            if version != newest:
                raise GuardRefusal(f"{STANDBY}: the state schema is at version {version or 'none'}; run "
                                   "'indexd migrate' on the primary, it reaches this standby by replication")
            print(f"{db.name}: up to date (version {version}; {STANDBY}, replicated from the primary)")
            return
        applied = apply_migrations(db)
        log_missing(db)  # what `indexd check` would say is missing: one WARNING line each
        if applied:
            print(f"{db.name}: applied {', '.join(f'{v:03d}' for v in applied)}")
            return
        version = current_version(db)
        print(f"{db.name}: up to date (version {version})" if version else f"{db.name}: up to date")

    return each_database(targets(args, settings), connected(settings, one), act="migrate").exit_code


def _cli_level(args: argparse.Namespace) -> Level:
    """One-shot commands log warnings to stderr unless --log-level asks for more."""
    return cast(Level, getattr(args, "log_level", None) or "WARNING")

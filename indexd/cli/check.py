"""`indexd check`: is each selected database ready for indexd, as the role indexd connects as? One line per
piece (`ok` / `missing`) with the exact statement or shell line that fixes what is missing. Exit 0 when every
required piece is there, 1 otherwise, 2 for a configuration error."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from indexd.cli import common
from indexd.cli.runner import EXIT_FAILED, EXIT_OK, each_database
from indexd.lifecycle.preflight import Check, ready
from indexd.lifecycle.preflight_readings import preflight

if TYPE_CHECKING:
    from indexd.db.pool import Database

WIDTH = 9  # "missing" and a space or two


def check_json(checks: list[Check]) -> dict[str, Any]:
    return {"ready": ready(checks),
            "checks": [{"check": c.name, "status": c.status, "required": c.required, "detail": c.detail,
                        "fix": list(c.fix)} for c in checks]}


def render(name: str, checks: list[Check]) -> list[str]:
    lines = [f"== {name}"]
    for c in checks:
        lines.append(f"  {c.status:<{WIDTH}}{c.name}: {c.detail}")
        lines.extend(f"  {'':<{WIDTH}}  fix: {fix}" for fix in c.fix)
    failing = [c for c in checks if c.failing]
    optional = sum(1 for c in checks if not c.ok and not c.required)
    extra = f" ({optional} optional piece{'s' if optional != 1 else ''} missing)" if optional else ""
    if failing:
        lines.append(f"{name}: NOT ready: {len(failing)} required piece{'s' if len(failing) != 1 else ''} "
                     f"missing{extra}")
    else:
        lines.append(f"{name}: ready{extra}")
    return lines


def check(args: argparse.Namespace) -> int:
    settings = common.load(args)

    def one(db: Database) -> list[Check]:
        checks = preflight(db)
        if not args.json:
            sys.stdout.write("\n".join(render(db.name, checks)) + "\n")
        return checks

    run = each_database(common.targets(args, settings), common.connected(settings, one), act="check",
                        verdict=lambda checks: EXIT_OK if ready(checks) else EXIT_FAILED)
    if args.json:
        common.print_json(run.listing(check_json))
    return run.exit_code

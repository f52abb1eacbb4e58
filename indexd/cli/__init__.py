"""The `indexd` command line (DESIGN.md §3). Parsing lives here; each command's handler lives in a module
of this package and is imported only when that command runs, so `indexd --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import psycopg2

from indexd import __version__
from indexd.cli.runner import EXIT_HELP, describe, exit_code_of, is_expected
from indexd.dsn import redact_dsn
from indexd.errors import ConfigError, IndexdError

log = logging.getLogger(__name__)

EPILOG = f"""\
config file: --config PATH, else $INDEXD_CONFIG, else ./indexpilot_config.yaml, else /etc/indexd/indexpilot_config.yaml
{EXIT_HELP}
"""

# Shown under each command's --help; each line parses as written (a test holds this).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": ("indexd check-config --production", "indexd check", "indexd recommend --database main",
         "indexd status --json"),
    "run": ("indexd run --config /etc/indexd/indexpilot_config.yaml",),
    "recommend": ("indexd recommend --database main", "indexd recommend --json --no-save",
                  "indexd recommend --queries ./queries/ --dsn postgresql://indexd@db1/app"),
    "approve": ("indexd approve 12 --database main --reason 'checked the plan'",),
    "reject": ("indexd reject 13 --database main --reason 'table is dropped next week'",),
    "apply": ("indexd apply --dry-run", "indexd apply --database main --now --yes"),
    "status": ("indexd status", "indexd status --json"),
    "pause": ("indexd pause --for 2h --reason 'incident 42'", "indexd pause --database main"),
    "resume": ("indexd resume", "indexd resume --database main"),
    "indexes": ("indexd indexes --database main", "indexd indexes --json", "indexd indexes --drop-unused"),
    "backup": ("indexd backup run --database main", "indexd backup list",
               "indexd backup verify main-20260101T000000Z --restore", "indexd backup prune --dry-run"),
    "backup run": ("indexd backup run", "indexd backup run --database main"),
    "backup list": ("indexd backup list --database main", "indexd backup list --json"),
    "backup verify": ("indexd backup verify main-20260101T000000Z",
                      "indexd backup verify main-20260101T000000Z --restore"),
    "backup prune": ("indexd backup prune --dry-run", "indexd backup prune --database main --json"),
    "restore": ("indexd restore main-20260101T000000Z --target-db app_copy",
                "indexd restore main-20260101T000000Z --target-db app --yes"),
    "check-config": ("indexd check-config",
                     "indexd check-config --production --config /etc/indexd/indexpilot_config.yaml"),
    "migrate": ("indexd migrate", "indexd migrate --database main"),
    "check": ("indexd check", "indexd check --database main --json"),
    "demo": ("indexd demo", "indexd demo --keep --duration 60s"),
    "simulate": ("indexd simulate --dsn postgresql://postgres@127.0.0.1/scratch --duration 30s",
                 "indexd simulate --database main --no-setup --clients 4"),
}


def epilog(command: str) -> str:
    """A command's help epilog: its examples, then where the config is found and the exit codes."""
    lines = "".join(f"  {line}\n" for line in EXAMPLES.get(command, ()))
    return (f"examples:\n{lines}\n" if lines else "") + EPILOG


SCENARIO_HELP = "data size: small ~159k rows (default), medium ~1.9M, large ~9.5M"


class Parser(argparse.ArgumentParser):
    """argparse, with its error line (which quotes the arguments it could not use) cleared of DSN passwords."""

    def error(self, message: str) -> NoReturn:
        super().error(redact_dsn(message))


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a count of jobs or clients)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _target(p: argparse.ArgumentParser, many: bool = True) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--database", "-d", metavar="NAME",
                   help="a database from the config" + (" (default: all of them)" if many else ""))
    g.add_argument("--dsn", metavar="DSN", help="connect to this DSN instead (no config file needed)")


def _global(p: argparse.ArgumentParser) -> None:
    """--config and --log-level are accepted after the command too (`indexd status --config X`)."""
    p.add_argument("--config", "-c", metavar="PATH", default=argparse.SUPPRESS, help="configuration file")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=argparse.SUPPRESS,
                   help="override logging.level for this command")


LISTING_JSON_HELP = "print one JSON list of objects, each with its database key"


def _json(p: argparse.ArgumentParser, help_: str = LISTING_JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help_)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="indexd",
        description="Keeps PostgreSQL databases fast and safe to operate: index advice, safe index builds "
        "with verification and revert, verified backups.",
        epilog=epilog(""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"indexd {__version__}")
    parser.add_argument("--config", "-c", metavar="PATH", help="configuration file")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="override logging.level for this command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, handler: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        _global(p)
        return p

    p = cmd("run", "service:run", "run the daemon in the foreground (systemd runs this)")

    p = cmd("recommend", "advise:recommend", "one-shot index advice for each selected database's workload")
    _target(p)
    p.add_argument("--queries", metavar="PATH",
                   help="take the workload from a .sql file (';'-separated; '-- calls: N' before a statement "
                   "weights it) or a folder of .sql files, instead of pg_stat_statements")
    p.add_argument("--budget-mb", type=int, metavar="N", help="storage budget for new indexes (MB)")
    p.add_argument("--no-save", action="store_true", help="do not store the recommendations in the state schema")
    p.add_argument("--verbose", action="store_true",
                   help="list every skipped statement with its reason (with --json: on stderr)")
    _json(p, "print JSON: one database gives one object {database, analyzed_statements, elapsed_s, "
          "recommendations}; several give a list of such objects")

    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = cmd(name, f"lifecycle:{name}", f"{verb} a pending recommendation")
        _target(p, many=False)
        p.add_argument("id", type=int, help="recommendation id (see 'indexd status')")
        p.add_argument("--reason", default="", help="why, for the audit log")

    p = cmd("apply", "lifecycle:apply",
            "build approved (or, in auto mode, pending) recommendations through every guard")
    _target(p)
    p.add_argument("--now", action="store_true", help="ignore the maintenance window (every other guard still applies)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show what would be built and which guard would refuse")

    p = cmd("status", "service:status", "per database: leader, breaker, pool, pause, jobs, advice, changes, backups")
    _target(p)
    _json(p)

    p = cmd("pause", "lifecycle:pause", "emergency switch: stop every change at once, on every daemon")
    _target(p)
    p.add_argument("--for", dest="duration", metavar="DURATION",
                   help="end the pause by itself after this (e.g. 2h; default: until 'indexd resume')")
    p.add_argument("--reason", default="", help="why, for the audit log and status")

    p = cmd("resume", "lifecycle:resume", "end an emergency pause")
    _target(p)

    p = cmd("indexes", "lifecycle:indexes", "unused, duplicate, invalid and bloated indexes, with the evidence")
    _target(p)
    _json(p)
    p.add_argument("--drop-unused", action="store_true",
                   help="drop unused indexes indexd created (through every guard), if drop_unused is enabled")

    p = cmd("backup", "backup:backup", "take, list, verify and prune backups")
    bsub = p.add_subparsers(dest="backup_command", metavar="ACTION", required=True)

    def _backup_action(name: str, help_: str) -> argparse.ArgumentParser:
        b = bsub.add_parser(name, help=help_, description=help_, epilog=epilog(f"backup {name}"),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _global(b)
        return b

    b = _backup_action("run", "take a backup now")
    _target(b)
    b = _backup_action("list", "list backups (from the manifests on disk)")
    _target(b)
    _json(b)
    b = _backup_action("verify", "re-check a backup's checksum and contents")
    b.add_argument("id", help="backup id")
    b.add_argument("--restore", action="store_true",
                   help="also restore it into a scratch database and compare row counts (on the backup's own "
                   "server, or backups.verify.restore_dsn's, or --target-dsn's or --dsn's)")
    b.add_argument("--target-dsn", metavar="DSN",
                   help="server to test-restore on, as for restore (default: --dsn's, else "
                   "backups.verify.restore_dsn, else the backup's own server from the config)")
    _target(b, many=False)
    b = _backup_action("prune", "delete backups the retention policy no longer keeps")
    _target(b)
    b.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    _json(b)

    p = cmd("restore", "backup:restore", "restore a backup into a database")
    p.add_argument("id", help="backup id (see 'indexd backup list')")
    p.add_argument("--target-db", required=True, metavar="NAME", help="database to restore into")
    p.add_argument("--target-dsn", metavar="DSN",
                   help="server to restore on (default: the backup's own server, from the config)")
    p.add_argument("--jobs", "-j", type=positive_int, metavar="N", help="parallel restore jobs (directory format)")
    p.add_argument("--yes", action="store_true", help="overwrite an existing database without asking")
    p.add_argument("--no-owner", action="store_true",
                   help="do not restore ownership and privileges (when the roles do not exist on the target)")

    p = cmd("check-config", "config_cmds:check_config", "validate the configuration and exit")
    p.add_argument("--production", action="store_true",
                   help="add the hardening checks (TLS, secrets, bind address, permissions, log level)")

    p = cmd("migrate", "config_cmds:migrate", "create or upgrade the state schema")
    _target(p)

    p = cmd("check", "check:check",
            "is each database ready for indexd, as the role it connects as? ok/missing per piece, with the fix")
    _target(p)
    _json(p)

    p = cmd("demo", "service:demo", "the main job on a throw-away PostgreSQL: workload, advice, build, verify, backup")
    p.add_argument("--scenario", choices=["small", "medium", "large"], default="small", help=SCENARIO_HELP)
    p.add_argument("--keep", action="store_true", help="leave the cluster running and print how to connect")
    p.add_argument("--duration", default="20s", help="how long each workload run lasts (default 20s)")
    _json(p, "print the run as one JSON object")

    p = cmd("simulate", "service:simulate", "create a realistic schema and drive a synthetic workload")
    _target(p, many=False)
    p.add_argument("--scenario", choices=["small", "medium", "large"], default="small", help=SCENARIO_HELP)
    p.add_argument("--duration", default="60s", help="how long to drive the workload (default 60s)")
    p.add_argument("--setup-only", action="store_true", help="create and load the schema, run no workload")
    p.add_argument("--no-setup", action="store_true", help="drive the workload on an existing schema")
    p.add_argument("--clients", type=positive_int, default=2, metavar="N",
                   help="concurrent client connections (default 2)")
    _json(p, "print the workload run as one JSON object")
    return parser


def _print_config_problems(problems: list[str]) -> None:
    """One problem on the `indexd:` line; several under a heading, one a line, as check-config lists them."""
    if len(problems) == 1:
        print(f"indexd: {redact_dsn(problems[0])}", file=sys.stderr)
        return
    print(f"indexd: the configuration has {len(problems)} problems:", file=sys.stderr)
    for problem in problems:
        print(f"  {redact_dsn(problem)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = args.handler.split(":")
    handler = getattr(importlib.import_module(f"indexd.cli.{module_name}"), func_name)
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away (`| head`) is handled below
        return code
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, and keep Python's exit-time flush from complaining again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ConfigError as exc:
        _print_config_problems(exc.problems)
        return exc.exit_code
    except IndexdError as exc:
        print(f"indexd: {redact_dsn(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except (psycopg2.Error, OSError) as exc:
        # What a command acting on one object meets in operation (a server that is down, a refused login, a
        # missing database): one line, like each_database's. A statement of ours that does not parse is a bug.
        if not is_expected(exc):
            raise
        log.debug("%s failed", args.command, exc_info=True)
        print(f"indexd: {args.command} failed: {describe(exc)}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        print("indexd: interrupted", file=sys.stderr)
        return 130
    finally:
        logging.shutdown()

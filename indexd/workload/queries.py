"""An offline workload: statements from a .sql file (or a folder of them) for `recommend --queries PATH`.

Statements are split by PostgreSQL's own scanner (pglast), so semicolons inside strings, dollar quotes and
comments are not boundaries. A line `-- calls: N` just before a statement weighs it N times (default 1).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pglast import parse_sql, split
from pglast.parser import ParseError, scan

from indexd.errors import UsageError
from indexd.statements.statement import Statement

log = logging.getLogger(__name__)

_CALLS = re.compile(r"^\s*--\s*calls\s*:\s*(\d+)\s*$", re.IGNORECASE)
_CALLS_LIKE = re.compile(r"^\s*--\s*calls\s*:", re.IGNORECASE)
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)


class QueryFileError(UsageError):
    """A query file cannot be used at all (missing, unreadable, empty, not SQL)."""


@dataclass(frozen=True)
class BadStatement:
    """A statement left out of the workload, with where it is and why."""

    path: Path
    line: int
    error: str
    number: int = 0  # the statement's number in its file (1 = the first), 0 when unknown
    first_line: str = ""  # the statement's first line

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        if self.number:
            first = self.first_line if len(self.first_line) <= 60 else self.first_line[:57] + "..."
            where += f": statement {self.number}" + (f" {first!r}" if first else "")
        return f"{where}: {self.error}"


@dataclass(frozen=True)
class LoadedQueries:
    statements: list[Statement]
    problems: list[BadStatement]


def load_queries(path: Path) -> list[Statement]:
    """The statements of a .sql file or of every .sql file in a folder (sorted by name).

    A statement that does not parse is left out and logged with its file and line; the others are kept.
    Raises QueryFileError when there is no statement at all (a file of statements that all fail to parse is
    a workload with nothing to recommend, not an error).
    """
    loaded = read_queries(path)
    for problem in loaded.problems:
        log.warning("statement left out of the workload: %s", problem)
    return loaded.statements


def read_queries(path: Path) -> LoadedQueries:
    """Like load_queries, returning the statements left out too."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".sql" and p.is_file())
        if not files:
            raise QueryFileError(f"no .sql files in folder {path}")
    elif path.is_file():
        files = [path]
    else:
        raise QueryFileError(f"query file {path} does not exist")
    statements: list[Statement] = []
    problems: list[BadStatement] = []
    for file in files:
        found, bad = _read_file(file)
        statements += found
        problems += bad
    if not statements and not problems:
        raise QueryFileError(f"no statement in {path}")
    return LoadedQueries(statements, problems)


def _read_file(path: Path) -> tuple[list[Statement], list[BadStatement]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryFileError(f"cannot read query file {path}: {exc}") from exc
    try:
        slices = split(text, with_parser=False, only_slices=True)
    except ParseError as exc:  # e.g. an unterminated string or dollar quote: no statement boundary is certain
        line = text.count("\n", 0, _error_offset(exc, 0)) + 1
        raise QueryFileError(f"{path}:{line}: cannot split into statements: {exc.args[0]}") from exc
    pieces = [*slices, *_unsplit_tail(text, slices[-1].stop if slices else 0)]
    statements: list[Statement] = []
    problems: list[BadStatement] = []
    number = 0
    for piece in pieces:
        chunk = text[piece]
        body_start = piece.start + len(_LEADING.match(chunk).group(0))  # type: ignore[union-attr]
        if body_start >= piece.stop:
            continue  # only comments
        number += 1
        line = text.count("\n", 0, body_start) + 1
        calls, calls_problem = _calls(text[piece.start:body_start])
        body = text[body_start:piece.stop].strip()
        first = body.splitlines()[0].strip() if body else ""
        if calls_problem:
            problems.append(BadStatement(path, line, calls_problem, number, first))
            continue
        try:
            parse_sql(body)
        except ParseError as exc:
            at = text.count("\n", 0, body_start + _error_offset(exc, 0)) + 1
            problems.append(BadStatement(path, at, f"does not parse: {exc.args[0]}", number, first))
            continue
        statements.append(Statement(query=body, calls=calls))
    return statements, problems


def _unsplit_tail(text: str, end: int) -> list[slice]:
    """What the splitter left after its last statement (it stops at an unclosed parenthesis): one more piece, so
    it is reported rather than lost."""
    rest = [t for t in scan(text[end:]) if t.name not in ("ASCII_59", "SQL_COMMENT", "C_COMMENT")]
    return [slice(end + rest[0].start, len(text))] if rest else []


def _calls(leading: str) -> tuple[int, str | None]:
    """The weight from a `-- calls: N` line right before the statement (its last comment line)."""
    lines = [ln for ln in leading.splitlines() if ln.strip()]
    if not lines or not _CALLS_LIKE.match(lines[-1]):
        return 1, None
    m = _CALLS.match(lines[-1])
    if not m or int(m.group(1)) < 1:
        return 1, f"bad weight {lines[-1].strip()!r}: expected '-- calls: N' with N a positive whole number"
    return int(m.group(1)), None


def _error_offset(exc: ParseError, default: int) -> int:
    location = exc.args[1] if len(exc.args) > 1 else None
    return location if isinstance(location, int) and location >= 0 else default

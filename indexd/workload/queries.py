"""An offline workload: statements from a .sql file (or a folder of them) for `recommend --queries PATH`.

Statements are split by PostgreSQL's own scanner (pglast), so semicolons inside strings, dollar quotes and
comments are not boundaries. A line `-- calls: N` just before a statement weighs it N times (default 1).

Files are read in pieces, never whole, and bounded in size (`indexing.queries_max_bytes`). Statements of one
shape (the same parse-tree fingerprint, whatever their constants) are merged into one weighted statement as
they are read, before anything is costed: the advisor sees each shape once, with the sum of its weights.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pglast import split
from pglast.parser import ParseError, fingerprint

from indexd.errors import UsageError
from indexd.statements.statement import Statement

log = logging.getLogger(__name__)

_CALLS = re.compile(r"^\s*--\s*calls\s*:\s*(\d+)\s*$", re.IGNORECASE)
_CALLS_LIKE = re.compile(r"^\s*--\s*calls\s*:", re.IGNORECASE)
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_GAP = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_SEPARATORS = re.compile(r"(?:\s+|;|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_PIECE = 1024 * 1024  # characters read at a time (more while one statement outgrows that)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


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
    statements: list[Statement]  # one per shape, in order of first appearance, weights summed
    problems: list[BadStatement]
    read: int = 0  # statements read before merging shapes


def load_queries(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Statement]:
    """The statement shapes of a .sql file or of every .sql file in a folder (sorted by name).

    A statement that does not parse is left out and logged with its file and line; the others are kept.
    Raises QueryFileError when there is no statement at all (a file of statements that all fail to parse is
    a workload with nothing to recommend, not an error), or when the files hold more than `max_bytes`.
    """
    loaded = read_queries(path, max_bytes)
    for problem in loaded.problems:
        log.warning("statement left out of the workload: %s", problem)
    return loaded.statements


def _files(path: Path, max_bytes: int) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".sql" and p.is_file())
        if not files:
            raise QueryFileError(f"no .sql files in folder {path}")
    elif path.is_file():
        files = [path]
    else:
        raise QueryFileError(f"query file {path} does not exist")
    try:
        size = sum(f.stat().st_size for f in files)
    except OSError as exc:
        raise QueryFileError(f"cannot read query file {path}: {exc}") from exc
    if size > max_bytes:
        raise QueryFileError(_too_large(path, size, max_bytes))
    return files


def _too_large(path: Path, size: int, max_bytes: int) -> str:
    return (f"{path} holds {size} bytes of statements, more than indexing.queries_max_bytes ({max_bytes}): "
            "give each statement shape once with '-- calls: N', split the workload, or raise the limit")


class _Shapes:
    """Statements merged by parse-tree fingerprint as they are read, with the problems found on the way."""

    def __init__(self) -> None:
        self.by_print: dict[str, Statement] = {}
        self.problems: list[BadStatement] = []
        self.read = 0
        self.number = 0  # statements seen so far in the file being read

    def begin_file(self) -> None:
        self.number = 0

    def add(self, path: Path, line: int, leading: str, body: str) -> None:
        self.number += 1
        first = body.splitlines()[0].strip() if body else ""
        calls, calls_problem = _calls(leading)
        if calls_problem:
            self.problems.append(BadStatement(path, line, calls_problem, self.number, first))
            return
        try:
            key = fingerprint(body)  # parses the statement: one that does not parse is left out here
        except ParseError as exc:
            at = line + body.count("\n", 0, _error_offset(exc, 0))
            self.problems.append(BadStatement(path, at, f"does not parse: {exc.args[0]}", self.number, first))
            return
        self.read += 1
        seen = self.by_print.get(key)
        self.by_print[key] = Statement(query=body, calls=calls) if seen is None else \
            Statement(query=seen.query, calls=seen.calls + calls)


def read_queries(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedQueries:
    """Like load_queries, returning the statements left out too."""
    path = Path(path)
    files = _files(path, max_bytes)
    shapes = _Shapes()
    budget = max_bytes
    for file in files:
        budget -= _read_file(file, shapes, budget)
    if not shapes.by_print and not shapes.problems:
        raise QueryFileError(f"no statement in {path}")
    statements = list(shapes.by_print.values())
    log.info("%s: %d statements of %d shape(s), %d left out", path, shapes.read, len(statements),
             len(shapes.problems))
    return LoadedQueries(statements, shapes.problems, shapes.read)


def _read_file(path: Path, shapes: _Shapes, budget: int) -> int:
    """Feed one file's statements to `shapes`, a piece at a time; returns the characters read."""
    shapes.begin_file()
    try:
        with open(path, encoding="utf-8") as fh:
            return _read_pieces(path, fh, shapes, budget)
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryFileError(f"cannot read query file {path}: {exc}") from exc


def _read_pieces(path: Path, fh: TextIO, shapes: _Shapes, budget: int) -> int:
    pending, line, total = "", 1, 0
    # A piece at least as long as what is still pending: text that does not split yet (one long statement, an
    # unclosed parenthesis) is scanned again a bounded number of times, not once per piece.
    while piece := fh.read(max(_PIECE, len(pending))):
        total += len(piece)
        if total > budget:
            raise QueryFileError(_too_large(path, total, budget))
        pending += piece
        try:
            slices = split(pending, with_parser=False, only_slices=True)
        except ParseError:
            continue  # the piece ends inside a string, quote or comment: read on
        cut, line = _take(path, pending, slices, line, shapes, final=False)
        pending = pending[cut:]
    try:
        slices = split(pending, with_parser=False, only_slices=True)
    except ParseError as exc:  # e.g. an unterminated string or dollar quote: no statement boundary is certain
        at = line + pending.count("\n", 0, _error_offset(exc, 0))
        raise QueryFileError(f"{path}:{at}: cannot split into statements: {exc.args[0]}") from exc
    pieces = [*slices, *_unsplit_tail(pending, slices[-1].stop if slices else 0)]
    _take(path, pending, pieces, line, shapes, final=True)
    return total


def _take(path: Path, text: str, slices: Sequence[slice], line: int, shapes: _Shapes, *,
          final: bool) -> tuple[int, int]:
    """Feed the statements of `text` that end in ';' (all of them when `final`) to `shapes`.

    `line` is the line `text` starts on. Returns how far `text` was consumed and the line there; line numbers
    are counted forward from one statement to the next, so a piece costs time in proportion to its length."""
    pos, cut = 0, 0
    for piece in slices:
        end = _GAP.match(text, piece.stop).end()  # type: ignore[union-attr]
        if not final and (end >= len(text) or text[end] != ";"):
            break  # the last statement may go on in the next piece
        chunk = text[piece]
        body_start = piece.start + len(_LEADING.match(chunk).group(0))  # type: ignore[union-attr]
        line += text.count("\n", pos, body_start)
        pos = body_start
        if body_start < piece.stop:  # else only comments
            shapes.add(path, line, text[piece.start:body_start], text[body_start:piece.stop].strip())
        cut = end + 1
    return cut, line + text.count("\n", pos, cut)


def _unsplit_tail(text: str, end: int) -> list[slice]:
    """What the splitter left after its last statement (it stops at an unclosed parenthesis): one more piece, so
    it is reported rather than lost. Only the separators before it are skipped (not a scan of all of it: the
    tail may be the rest of a large file)."""
    start = _SEPARATORS.match(text, end).end()  # type: ignore[union-attr]
    return [slice(start, len(text))] if start < len(text) else []


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

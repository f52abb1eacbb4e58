"""The verdict of a test restore, as pure functions of what pg_restore said and what the row counts showed.

A test restore answers one question: is the backup's data sound? Only a real data problem says no: the dump
cannot be read, rows fail to load, or a table's restored row count differs from the count taken in the dump's
own snapshot. Everything else is about the place the test ran in (no CREATEDB, the disk, the connection, an
object this role or server cannot create) and never marks a backup failed:

- ok:         restored (apart from what was deliberately left out, listed) and every count compared matches;
- incomplete: restored and compared, but some objects could not be created here (listed, with the error);
- failed:     a data problem (listed): the backup is marked failed;
- error:      the test could not run or finish here (says why); the backup's status is left as it was.

pg_restore runs with --verbose, which names the table-of-contents entry before each error it reports.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from indexd.backup.toc import TocEntry


class Result(enum.StrEnum):
    OK = "ok"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    ERROR = "error"


SOUND = frozenset({Result.OK, Result.INCOMPLETE})  # the data that could be restored is sound


class Kind(enum.Enum):
    DATA = "data"  # the backup's data is at fault
    OBJECT = "object"  # a schema object this role or server could not create
    ENVIRONMENT = "environment"  # the disk, the connection, memory, a timeout: nothing to do with the backup


_FROM_ENTRY = re.compile(r"^pg_restore: from TOC entry (\d+); (.*)$")
_ERROR = re.compile(r"^pg_restore: error: (.*)$")
_IGNORED = re.compile(r"^pg_restore: warning: errors ignored on restore: (\d+)")
# Signs of the environment, whatever the entry: the disk, memory, the connection, a timeout or cancel.
_ENVIRONMENT = re.compile(
    r"no space left on device|could not extend file|disk quota|out of memory|could not (?:connect|fork|resize)"
    r"|connection to server|server closed the connection|terminating connection|canceling statement"
    r"|too many connections|could not write to file|the database system is (?:starting|shutting)",
    re.IGNORECASE)


@dataclass(frozen=True)
class RestoreError:
    """One error pg_restore reported, with the entry it was processing (None: reading the archive itself)."""

    entry_id: int | None
    entry_text: str | None
    message: str


def parse_errors(lines: Iterable[str]) -> tuple[list[RestoreError], int | None]:
    """The errors in pg_restore's --verbose stderr, and the count it reported ignoring (None when it said none)."""
    errors: list[RestoreError] = []
    current: tuple[int, str] | None = None
    ignored = None
    for line in lines:
        if m := _FROM_ENTRY.match(line):
            current = (int(m.group(1)), m.group(2).strip())
        elif m := _ERROR.match(line):
            entry_id, text = current if current else (None, None)
            errors.append(RestoreError(entry_id, text, m.group(1).strip()))
            current = None
        elif m := _IGNORED.match(line):
            ignored = int(m.group(1))
    return errors, ignored


def classify(error: RestoreError, entries: dict[int, TocEntry], failed_objects: Sequence[TocEntry]) -> Kind:
    """What an error says about the backup. Data entries failing because their table could not be created
    (an object error before them) follow that table."""
    if _ENVIRONMENT.search(error.message):
        return Kind.ENVIRONMENT
    entry = entries.get(error.entry_id) if error.entry_id is not None else None
    if error.entry_id is None:
        return Kind.DATA  # the archive itself could not be read (its checksum matched: it was written so)
    if entry is None or not entry.is_data:
        return Kind.OBJECT
    if any(f.desc != entry.desc and f.rest == entry.rest for f in failed_objects):
        return Kind.OBJECT
    return Kind.DATA


@dataclass(frozen=True)
class Assessment:
    data: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()
    failed_entries: tuple[TocEntry, ...] = ()  # the entries of object errors (tables that were not created)


def assess(errors: Sequence[RestoreError], entries: Iterable[TocEntry]) -> Assessment:
    by_id = {e.dump_id: e for e in entries}
    data: list[str] = []
    objects: list[str] = []
    environment: list[str] = []
    failed: list[TocEntry] = []
    for err in errors:
        kind = classify(err, by_id, failed)
        entry = by_id.get(err.entry_id) if err.entry_id is not None else None
        where = entry.label if entry is not None else (err.entry_text or "reading the archive")
        text = f"{where}: {err.message}"
        if kind is Kind.OBJECT and entry is not None:
            failed.append(entry)
        {Kind.DATA: data, Kind.OBJECT: objects, Kind.ENVIRONMENT: environment}[kind].append(text)
    return Assessment(tuple(data), tuple(objects), tuple(environment), tuple(failed))


@dataclass(frozen=True)
class Verdict:
    result: Result
    detail: str
    problems: tuple[str, ...] = field(default_factory=tuple)  # data problems (failed) or environment (error)
    not_restored: tuple[str, ...] = field(default_factory=tuple)

    @property
    def marks_failed(self) -> bool:
        return self.result is Result.FAILED


def judge(assessment: Assessment, mismatches: Sequence[str], compared: int, left_out: Sequence[str],
          not_compared: Sequence[str] = ()) -> Verdict:
    """The test restore's verdict. The environment comes first: when the place the test ran in failed, nothing
    else it saw can be trusted to speak about the backup."""
    skipped = f"; left out: {', '.join(left_out)}" if left_out else ""
    if assessment.environment:
        return Verdict(Result.ERROR, "the test restore could not finish here: " + "; ".join(assessment.environment),
                       assessment.environment)
    problems = assessment.data + tuple(mismatches)
    if problems:
        return Verdict(Result.FAILED, "data problem: " + "; ".join(problems), problems, assessment.objects)
    unchecked = f"; not compared: {', '.join(not_compared)}" if not_compared else ""
    if assessment.objects:
        return Verdict(Result.INCOMPLETE, f"{len(assessment.objects)} object(s) could not be created here: "
                       + "; ".join(assessment.objects) + f"; row counts of {compared} table(s) match{unchecked}"
                       + skipped, (), assessment.objects)
    return Verdict(Result.OK, f"row counts of {compared} table(s) match{unchecked}{skipped}")


def status_after(current: str, *, checksum_ok: bool, test: Result | None = None,
                 last_test: str | None = None) -> str:
    """A backup's status after a check: failed when its checksum does not match or its last test restore found
    a data problem, else verified; a test restore that could not run (error) leaves the status as it was.
    `test` is the result of a test restore just run; `last_test` the one on record when only the checksum (and
    table of contents) was checked, so a checksum check never clears a data problem a test restore found."""
    if not checksum_ok:
        return "failed"
    if test is None:
        return "failed" if last_test == Result.FAILED else "verified"
    if test is Result.FAILED:
        return "failed"
    return current if test is Result.ERROR else "verified"


@dataclass(frozen=True)
class TrialRecord:
    """The last test restore of a backup, as its manifest records it (a fact apart from the checksum's)."""

    at: datetime | None
    result: str  # a Result
    detail: str | None


def last_trial(manifest: dict[str, Any]) -> TrialRecord | None:
    """The manifest's `restore_test`, also in the shape older versions wrote (ok and mismatches only)."""
    raw = manifest.get("restore_test")
    if not isinstance(raw, dict):
        return None
    at = raw.get("at")
    when = datetime.fromisoformat(str(at)) if at else None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    result = raw.get("result") or (Result.OK if raw.get("ok") else Result.FAILED)
    detail = raw.get("detail") or ("; ".join(raw.get("mismatches") or []) or None)
    return TrialRecord(when, str(result), detail)

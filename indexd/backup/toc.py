"""A dump's table of contents (`pg_restore --list`) and the list a test restore uses (`pg_restore --use-list`).

`pg_restore --list` prints one line per entry: `<id>; <tableoid> <oid> <DESC> <schema or -> <name> <owner>`, where
DESC may be several words ("TABLE DATA") and a name may hold spaces. A role without superuser cannot create what
only a superuser may: extensions that are not trusted (HypoPG, pg_stat_statements), event triggers,
subscriptions; and nobody can create an extension the restore server does not have installed. A test restore
leaves those entries out of its list (with the comments on them, and the data of an extension's configuration
tables, which only the extension creates) and names each one it left out, with why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Every DESC pg_dump writes with more than one word, longest first, so "TABLE DATA" is not read as "TABLE".
_LONG_DESCS = sorted((
    "ACCESS METHOD", "BLOB COMMENTS", "CHECK CONSTRAINT", "DATABASE PROPERTIES", "DEFAULT ACL", "EVENT TRIGGER",
    "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "INDEX ATTACH", "LARGE OBJECT",
    "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR CLASS", "OPERATOR FAMILY", "PROCEDURAL LANGUAGE",
    "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "SECURITY LABEL", "SEQUENCE OWNED BY",
    "SEQUENCE SET", "SHELL TYPE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "USER MAPPING",
), key=len, reverse=True)
# Entries that load rows: an error there is an error in the backup's data.
DATA_DESCS = frozenset({"TABLE DATA", "SEQUENCE SET", "BLOB", "BLOBS", "LARGE OBJECT", "MATERIALIZED VIEW DATA"})
# Objects only a superuser may create (whatever the database's owner may do).
SUPERUSER_ONLY_DESCS = frozenset({"EVENT TRIGGER", "SUBSCRIPTION"})
_ENTRY = re.compile(r"^(\d+);\s+(\d+)\s+(\d+)\s+(.*?)\s*$")


@dataclass(frozen=True)
class TocEntry:
    """One line of the table of contents."""

    dump_id: int
    desc: str  # TABLE, TABLE DATA, EXTENSION, COMMENT ...
    rest: str  # "<schema or -> <name> <owner>" as pg_restore prints it
    line: str

    @property
    def label(self) -> str:
        """The entry as a person reads it: "TABLE DATA public t postgres" without a schema dash."""
        rest = self.rest[2:] if self.rest.startswith("- ") else self.rest
        return f"{self.desc} {rest}".strip()

    @property
    def is_data(self) -> bool:
        return self.desc in DATA_DESCS


def is_table_entry(label: str, schema: str, table: str) -> bool:
    """Whether an entry's label is the TABLE or TABLE DATA entry of schema.table (its owner last)."""
    head = label.rsplit(" ", 1)[0]
    return head in (f"TABLE {schema} {table}", f"TABLE DATA {schema} {table}")


def parse_entry(line: str) -> TocEntry | None:
    """A table-of-contents line as an entry; None for comments (`;`) and blank lines."""
    m = _ENTRY.match(line.strip())
    if m is None:
        return None
    dump_id, text = int(m.group(1)), m.group(4)
    desc = next((d for d in _LONG_DESCS if text == d or text.startswith(d + " ")), text.split(" ", 1)[0])
    return TocEntry(dump_id, desc, text[len(desc):].strip(), line.rstrip("\n"))


def parse_list(lines: Iterable[str]) -> list[TocEntry]:
    return [e for e in (parse_entry(line) for line in lines) if e is not None]


def extension_of(entry: TocEntry) -> str | None:
    """The extension an entry creates or comments on (None for anything else)."""
    words = entry.rest.split()
    if entry.desc == "EXTENSION" and len(words) >= 2:
        return words[1]
    if entry.desc == "COMMENT" and len(words) >= 3 and words[1] == "EXTENSION":
        return words[2]
    return None


@dataclass(frozen=True)
class LeftOut:
    """An entry the test restore did not ask for, and why."""

    entry: str
    why: str

    def __str__(self) -> str:
        return f"{self.entry} ({self.why})"


@dataclass(frozen=True)
class RestoreServer:
    """What the restoring role may create on the restore server."""

    superuser: bool
    creatable: Callable[[str], str | None]  # extension name -> None when the role may create it, else why not


def select_entries(entries: list[TocEntry], server: RestoreServer) -> tuple[list[TocEntry], list[LeftOut]]:
    """The entries a test restore asks for, and those it leaves out because the role (or the server) cannot
    create them. The data of an extension's configuration table (a TABLE DATA entry with no TABLE entry: the
    extension creates the table) goes with a left-out extension."""
    left: list[LeftOut] = []
    kept: list[TocEntry] = []
    extension_gone = False
    for entry in entries:
        ext = extension_of(entry)
        why = server.creatable(ext) if ext is not None else None
        if why is None and entry.desc in SUPERUSER_ONLY_DESCS and not server.superuser:
            why = "only a superuser may create it"
        if why is not None:
            left.append(LeftOut(entry.label, why))
            extension_gone = extension_gone or entry.desc == "EXTENSION"
            continue
        kept.append(entry)
    if extension_gone:
        tables = [e for e in kept if e.desc == "TABLE"]
        orphans = [e for e in kept if e.desc == "TABLE DATA" and not any(t.rest == e.rest for t in tables)]
        left += [LeftOut(e.label, "data of an extension's table; the extension is left out") for e in orphans]
        kept = [e for e in kept if e not in orphans]
    return kept, left


def list_text(entries: Iterable[TocEntry]) -> str:
    """The text of a `pg_restore --use-list` file naming exactly these entries."""
    return "".join(f"{e.line}\n" for e in entries)

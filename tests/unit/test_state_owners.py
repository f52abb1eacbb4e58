"""One owner per state table: every INSERT, UPDATE or DELETE against a table of the state schema is in its
owner module under indexd/state/, and a recommendation status is spelled out only where `Status` is defined
(indexd/state/statuses.py) and in the table's owner (indexd/state/recommendations.py); everyone else uses
`Status`. Read from the source, no server."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from indexd.state.history import TARGETS
from indexd.state.statuses import Status

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "indexd"

# table -> statement -> the one module that may run it. Pruning (DELETE) of history belongs to history.py.
OWNERS: dict[str, dict[str, str]] = {
    "schema_version": {"INSERT": "state/migrations.py"},
    "snapshots": {"INSERT": "state/snapshots.py", "DELETE": "state/history.py"},
    "statement_snapshots": {"INSERT": "state/snapshots.py", "DELETE": "state/history.py"},
    "recommendations": {"INSERT": "state/recommendations.py", "UPDATE": "state/recommendations.py"},
    "mutation_log": {"INSERT": "state/audit.py", "DELETE": "state/history.py"},
    "index_verdicts": {"INSERT": "state/verdicts.py"},
    "backups": {"INSERT": "state/backups.py"},
    "pause": {"INSERT": "state/pause.py", "UPDATE": "state/pause.py"},
    "job_runs": {"INSERT": "state/job_runs.py", "UPDATE": "state/job_runs.py", "DELETE": "state/history.py"},
}

# INSERT INTO / UPDATE / DELETE FROM / TRUNCATE, then an optional "schema." (a name or a {placeholder}) and the
# table: a name, or a {placeholder} composed elsewhere (allowed only inside indexd/state/).
WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+"
                   r"((?:\{\w*\}|\w+|\"[^\"]+\")\.)?(\{\w*\}|\w+)", re.IGNORECASE)

# Words that are recommendation statuses and nothing else in indexd: spelled out only in their owner.
ONLY_STATUS = {s.value for s in Status} - {"failed", "kept", "reverted"}  # those three also name other things
# A status compared or assigned, in SQL or Python: status = 'x', status <> 'x', status == "x", status IN ('x'...
STATUS_USE = re.compile(r"""\bstatus\b\s*(?:=|<>|!=|==)\s*['"](\w+)['"]"""
                        r"""|\bstatus\b\s+(?:not\s+)?in\s*[(\[]\s*['"](\w+)['"]""", re.IGNORECASE)
# Legitimate other uses of the same words, each with its reason: (path or folder prefix, word).
NOT_RECOMMENDATIONS = {
    ("simulate/", "pending"): "the synthetic shop's own orders.status, an application table",
    ("advisor/candidates.py", "pending"): "a docstring's example of an application's partial-index predicate",
    ("advisor/predicates.py", "pending"): "a comment's example of an application's partial-index predicate",
    ("advisor/qualstats.py", "pending"): "a docstring's example of a dominant constant and its partial index",
    ("backup/", "failed"): "a backup's own status (the backups table and the manifests)",
    ("cli/service.py", "built"): "a JSON key of the demo's summary: how many indexes were built",
}


def _modules() -> list[tuple[str, str]]:
    return [(p.relative_to(PACKAGE).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


def _writes(text: str) -> list[tuple[str, str, int]]:
    """(statement, table or '{…}' for a composed one, line) of every write in `text` against a state table."""
    found = []
    for m in WRITE.finditer(text):
        verb, table = m.group(1).split()[0].upper(), m.group(3)
        if table in OWNERS or table.startswith("{"):
            found.append((verb, table, text.count("\n", 0, m.start()) + 1))
    return found


def test_every_table_of_the_schema_has_owners() -> None:
    created = set()
    for path in (ROOT / "sql").glob("[0-9]*.sql"):
        created |= set(re.findall(r"CREATE TABLE (\w+)", path.read_text(encoding="utf-8")))
    assert created == set(OWNERS)
    pruned = {t.table for t in TARGETS}
    assert pruned == {table for table, verbs in OWNERS.items() if verbs.get("DELETE") == "state/history.py"}


def test_each_write_against_a_state_table_is_in_its_owner() -> None:
    wrong, seen = [], set()
    for path, text in _modules():
        for verb, table, line in _writes(text):
            if table.startswith("{"):  # a composed target: only the state layer builds those
                if not path.startswith("state/"):
                    wrong.append(f"{path}:{line}: {verb} into a composed table name outside indexd/state/")
                continue
            owner = OWNERS[table].get(verb)
            seen.add((table, verb))
            if owner != path:
                wrong.append(f"{path}:{line}: {verb} {table} (owner: {owner or 'nobody may'})")
    assert wrong == [], "\n".join(wrong)
    # the scan sees the owners' own writes (all but the pruning, composed from TARGETS in history.py)
    expected = {(t, v) for t, verbs in OWNERS.items() for v, owner in verbs.items() if owner != "state/history.py"}
    assert expected <= seen


def test_the_scan_catches_a_write_outside_its_owner() -> None:
    sample = ('cur.execute(sql.SQL("UPDATE {}.recommendations SET status = %s").format(schema))\n'
              'q = "insert into pause (reason) values (%s)"\nx = "DELETE FROM {s}.{table} WHERE id = 1"\n')
    assert _writes(sample) == [("UPDATE", "recommendations", 1), ("INSERT", "pause", 2), ("DELETE", "{table}", 3)]
    assert _writes('"ON CONFLICT (id) DO UPDATE SET x = 1", "the target of an UPDATE or DELETE"') == []


def _exempt(path: str, word: str) -> bool:
    return any(path.startswith(prefix) and word == w for prefix, w in NOT_RECOMMENDATIONS)


def _string_literals(text: str) -> list[tuple[str, int]]:
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):  # an f-string: its pieces are no status word on their own
                continue
            if isinstance(value, str):
                out.append((value, tok.start[0]))
    return out


def test_status_words_are_spelled_out_only_in_their_owner() -> None:
    wrong = []
    for path, text in _modules():
        if path in ("state/statuses.py", "state/recommendations.py"):
            continue
        for value, line in _string_literals(text):
            if value in ONLY_STATUS and not _exempt(path, value):
                wrong.append(f"{path}:{line}: the literal {value!r} (use Status.{value.upper()})")
        for m in STATUS_USE.finditer(text):
            word = m.group(1) or m.group(2)
            if word in {s.value for s in Status} and not _exempt(path, word):
                wrong.append(f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}")
    assert wrong == [], "\n".join(wrong)


def test_the_status_scan_catches_literals() -> None:
    sample = 'if rec.status == "built":\n    q = "WHERE r.status IN (\'pending\', \'approved\')"\nx = "kept"\n'
    assert [m.group(1) or m.group(2) for m in STATUS_USE.finditer(sample)] == ["built", "pending"]
    assert [v for v, _ in _string_literals(sample) if v in ONLY_STATUS] == ["built"]
    assert all(_exempt(prefix + ("x.py" if prefix.endswith("/") else ""), word)
               for prefix, word in NOT_RECOMMENDATIONS)

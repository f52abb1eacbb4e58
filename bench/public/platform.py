"""The index selection algorithms of the public evaluation platform (Kossmann et al., PVLDB 2020), run as they are.

The platform is not part of this repository: `extract` unpacks it at run time from a bare git repository (or
copies a checkout) into a temporary folder, and its `selection` package is imported from there. Its
PostgresDatabaseConnector connects with `dbname=NAME` only, so libpq's PGHOST/PGPORT/PGUSER point it at the
bench's cluster; no file of it is patched. Parameters follow the platform's published TPC-H configuration
(max_index_width 2, DB2Advis without its TryVariations phase, AutoAdmin with one naive index).

Budgets: Extend, DB2Advis and Relaxation take a storage budget (the platform's MB are 10^6 bytes). AutoAdmin and
Drop take a number of indexes; as in the paper, where they are plotted by the storage they use, each is run for
1, 2, ... indexes and the largest set whose hypothetical (HypoPG) size fits the budget is kept.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from bench.public.indexes import IndexDef

DEFAULT_PATH = Path("/work/.mirror/hyrise+index_selection_evaluation/repo")
BUDGETED = {
    "extend": ("selection.algorithms.extend_algorithm", "ExtendAlgorithm", {"max_index_width": 2}),
    "db2advis": ("selection.algorithms.db2advis_algorithm", "DB2AdvisAlgorithm",
                 {"max_index_width": 2, "try_variations_seconds": 0}),
    "relaxation": ("selection.algorithms.relaxation_algorithm", "RelaxationAlgorithm", {"max_index_width": 2}),
}
COUNTED = {
    "auto_admin": ("selection.algorithms.auto_admin_algorithm", "AutoAdminAlgorithm",
                   {"max_indexes_naive": 1, "max_index_width": 2}),
    "drop": ("selection.algorithms.drop_heuristic_algorithm", "DropHeuristicAlgorithm", {}),
}
ALGORITHMS = (*BUDGETED, *COUNTED)
MAX_COUNT = 13  # the published configuration sweeps 1..13 indexes for AutoAdmin and Drop

# Local patches to the unpacked copy: (file, text, replacement, why). Each must apply exactly once.
PATCHES = (
    ("selection/dbms/postgres_dbms.py",
     "stmt = \"select indexname from pg_indexes where schemaname='public'\"",
     "stmt = \"select indexname from pg_indexes where schemaname='public' \"\n"
     "        stmt += \"and indexname not in (select conname from pg_constraint where contype in ('p', 'u', 'x'))\"",
     "every algorithm first drops all indexes of the schema; keep those that back a primary key (pgbench's), "
     "which cannot be dropped on their own"),
)


@dataclass
class Choice:
    """One algorithm's index set for one budget."""

    indexes: list[IndexDef]
    advise_s: float
    estimated_bytes: int
    parameters: dict[str, Any] = field(default_factory=dict)


def extract(path: Path, into: Path) -> Path:
    """Unpack the platform (a bare git repository, or a checkout) under `into`; the folder holding `selection`."""
    target = into / "index_selection_evaluation"
    if (path / "selection").is_dir():
        shutil.copytree(path, target, ignore=shutil.ignore_patterns(".git"))
    elif (path / "HEAD").exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "--git-dir", str(path), "archive", "HEAD"], capture_output=True, check=False)
        if archive.returncode != 0:
            raise SystemExit(f"git archive of {path} failed: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    else:
        raise SystemExit(f"--platform {path}: neither a git repository nor a checkout with a selection/ folder")
    if not (target / "selection" / "algorithms").is_dir():
        raise SystemExit(f"--platform {path}: no selection/algorithms in it; is it the index selection platform?")
    for rel, old, new, why in PATCHES:
        file = target / rel
        text = file.read_text(encoding="utf-8")
        if text.count(old) != 1:
            raise SystemExit(f"--platform {path}: cannot apply the local patch to {rel} ({why}): its text changed")
        file.write_text(text.replace(old, new), encoding="utf-8")
    return target


def revision(path: Path) -> str:
    """The platform's commit, when it is a git repository."""
    git_dir = path if (path / "HEAD").exists() else path / ".git"
    proc = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


class TimeLimit(Exception):
    """An algorithm ran past the bench's time limit (reported as its error; the other tools still run)."""


@contextmanager
def time_limit(seconds: float | None, name: str) -> Iterator[None]:
    """Raise TimeLimit in the main thread once `seconds` have passed (SIGALRM); no limit when None."""
    if not seconds:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TimeLimit(f"{name} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def unpacked(path: Path, host: str, port: int, user: str, limit_s: float | None = None) -> Iterator[Platform]:
    """The platform unpacked in a temporary folder, importable, its connector pointed at host:port; each
    algorithm's choice is stopped after `limit_s` seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        root = extract(path, Path(tmp))
        saved = {k: os.environ.get(k) for k in ("PGHOST", "PGPORT", "PGUSER")}
        os.environ.update({"PGHOST": host, "PGPORT": str(port), "PGUSER": user})
        sys.path.insert(0, str(root))
        logging.getLogger().setLevel(logging.WARNING)  # the platform logs every cost request at INFO/DEBUG
        try:
            yield Platform(root, limit_s)
        finally:
            sys.path.remove(str(root))
            for name in [m for m in sys.modules if m == "selection" or m.startswith("selection.")]:
                del sys.modules[name]
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class Platform:
    """The platform's workload model and algorithms, imported from its unpacked copy."""

    def __init__(self, root: Path, limit_s: float | None = None) -> None:
        self.root = root
        self.limit_s = limit_s
        self.workload_mod = importlib.import_module("selection.workload")
        self.parser_mod = importlib.import_module("selection.workload_parser")
        self.connector_mod = importlib.import_module("selection.dbms.postgres_dbms")

    def workload(self, dbname: str, queries: Sequence[tuple[int | str, str]]) -> Any:
        """A platform Workload of the given texts; indexable columns found as the platform's parser finds them
        (a column of a table the text names, whose name appears in the text)."""
        parser = self.parser_mod.WorkloadParser("postgres", dbname, "bench")
        tables = parser.get_tables()
        out = []
        for nr, text in queries:
            query = self.workload_mod.Query(nr, text)
            parser.store_indexable_columns(query, tables)
            out.append(query)
        return self.workload_mod.Workload(out)

    def _run(self, dbname: str, module: str, cls: str, params: dict[str, Any],
             workload: Any) -> tuple[list[Any], float]:
        algorithm_cls = getattr(importlib.import_module(module), cls)
        connector = self.connector_mod.PostgresDatabaseConnector(dbname, autocommit=True)
        try:
            t0 = time.perf_counter()
            found = algorithm_cls(connector, dict(params)).calculate_best_indexes(workload)
            return list(found), time.perf_counter() - t0
        finally:
            connector.close()

    def choose(self, name: str, dbname: str, dsn: str, workload: Any, budget_bytes: int) -> Choice:
        """Algorithm `name`'s index set within `budget_bytes` (TimeLimit past the platform's limit)."""
        with time_limit(self.limit_s, name):
            return self._choose(name, dbname, dsn, workload, budget_bytes)

    def _choose(self, name: str, dbname: str, dsn: str, workload: Any, budget_bytes: int) -> Choice:
        if name in BUDGETED:
            module, cls, fixed = BUDGETED[name]
            params: dict[str, Any] = {**fixed, "budget_MB": budget_bytes / 1e6}
            found, elapsed = self._run(dbname, module, cls, params, workload)
            defs = [_index_def(i) for i in found]
            return Choice(defs, elapsed, hypothetical_bytes(dsn, defs), params)
        module, cls, fixed = COUNTED[name]
        best = Choice([], 0.0, 0, {**fixed, "max_indexes": 0})
        total = 0.0
        for count in range(1, MAX_COUNT + 1):
            found, elapsed = self._run(dbname, module, cls, {**fixed, "max_indexes": count}, workload)
            total += elapsed
            defs = [_index_def(i) for i in found]
            size = hypothetical_bytes(dsn, defs)
            if size > budget_bytes:
                break
            best = Choice(defs, 0.0, size, {**fixed, "max_indexes": count})
        best.advise_s = total
        return best


def _index_def(index: Any) -> IndexDef:
    return IndexDef(table=str(index.table()), columns=tuple(c.name for c in index.columns))


def hypothetical_bytes(dsn: str, indexes: list[IndexDef]) -> int:
    """HypoPG's size of the index set, on a connection of its own (hypothetical indexes are per session)."""
    if not indexes:
        return 0
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        total = 0
        with conn.cursor() as cur:
            for idx in indexes:
                cur.execute("SELECT hypopg_relation_size(indexrelid) FROM hypopg_create_index(%s)",
                            (idx.create_sql(sql.Identifier("hypo")).as_string(conn),))
                total += int(cur.fetchone()[0])
            cur.execute("SELECT hypopg_reset()")
        return total
    finally:
        conn.close()

"""Tests create their databases one way: tests.support.cluster.new_database (pytest-postgresql's janitor on the
embedded cluster), never by open-coding CREATE DATABASE or calling the cluster's own helper."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = TESTS / "support" / "cluster.py"
OTHER_WAYS = re.compile(r"\.create_database\(|execute\(\s*f?[\"']CREATE DATABASE", re.IGNORECASE)


def test_no_test_creates_a_database_another_way() -> None:
    offenders = [f"{path.relative_to(TESTS)}:{n}"
                 for path in sorted(TESTS.rglob("*.py")) if path not in (SUPPORT, Path(__file__).resolve())
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if OTHER_WAYS.search(line)]
    assert offenders == [], "create test databases with tests.support.cluster.new_database: " + ", ".join(offenders)

"""Unit tests run without a server: any attempt to connect fails loudly."""

from __future__ import annotations

import psycopg2
import pytest


@pytest.fixture(autouse=True)
def _no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test tried to connect to a database")

    monkeypatch.setattr(psycopg2, "connect", refuse)

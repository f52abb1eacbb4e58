"""Which daemon status asks: decided from the leader lock's holder; no HTTP endpoint is asked unless the holder
is a process on this host, and its answer counts only when it comes from that very process."""

from __future__ import annotations

from typing import Any

import pytest

from indexd.status import daemon as status_daemon
from indexd.status.daemon import Holder, identify, matching_database


class Asked:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.urls: list[str] = []
        self.answer = answer

    def __call__(self, base: str, token: str | None) -> dict[str, Any] | None:
        self.urls.append(base)
        return self.answer


@pytest.mark.parametrize(("holder", "says"), [
    (None, "no process holds the leader lock"),
    (Holder(4242, "203.0.113.7", 50123, 5432), "203.0.113.7:50123, on another host"),
    (Holder(4242, None, None, 5432), "connected from a local socket; its process cannot be told"),
])
def test_no_endpoint_is_asked_unless_the_holder_runs_here(holder: Holder | None, says: str) -> None:
    asked = Asked({"pid": 1})
    found = identify(holder, None, fetch=asked)
    assert asked.urls == [] and found.health is None and says in found.note


def test_a_local_holder_whose_process_is_unseen_is_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_daemon, "owning_process", lambda addr, port, server_port: None)
    asked = Asked({"pid": 1})
    found = identify(Holder(4242, "127.0.0.1", 50123, 5432), None, fetch=asked)
    assert asked.urls == [] and "not visible to this user" in found.note


@pytest.mark.parametrize(("answer", "trusted"), [({"pid": 321, "status": "ok"}, True),
                                                 ({"pid": 999, "status": "ok"}, False),
                                                 ({"status": "ok"}, False), (None, False)])
def test_only_the_holders_own_health_counts(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any] | None,
                                            trusted: bool) -> None:
    monkeypatch.setattr(status_daemon, "owning_process", lambda addr, port, server_port: 321)
    monkeypatch.setattr(status_daemon, "listening_endpoints", lambda pid: ["http://127.0.0.1:9470"])
    asked = Asked(answer)
    cache: dict[int, Any] = {}
    found = identify(Holder(4242, "::ffff:127.0.0.1", 50123, 5432), "tok", fetch=asked, cache=cache)
    assert asked.urls == ["http://127.0.0.1:9470"] and found.os_pid == 321
    assert (found.health is not None) is trusted
    identify(Holder(4243, "127.0.0.1", 50124, 5432), "tok", fetch=asked, cache=cache)
    assert len(asked.urls) == 1  # one process is asked once per status run


def test_the_daemons_entry_for_the_database() -> None:
    health = {"databases": {
        "main": {"leader": True, "dsn": "postgresql://indexd@db1:5432/app"},
        "other": {"leader": True, "dsn": "host=db1 dbname=shop user=indexd"},
        "idle": {"leader": False, "dsn": "host=db1 dbname=idle"}}}
    assert matching_database(health, "main", "whatever") is health["databases"]["main"]
    assert matching_database(health, "renamed", "shop") is health["databases"]["other"]
    assert matching_database(health, "renamed", "idle") is None  # not leading it: not that database's daemon
    assert matching_database({"databases": []}, "main", "app") is None

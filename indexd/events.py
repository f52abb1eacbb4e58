"""Events worth telling someone about (an index built, a backup failed, a pause began ...), published where they
happen and handed to whatever sinks are registered.

A leaf module, so every layer may publish: the lifecycle and backup code call `publish`, the service registers
a sink that delivers to webhooks. With no sink registered, publishing does nothing. A sink must return at once
(the webhook sink only enqueues); one that raises is logged and never fails the code that published.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from indexd.clock import utcnow

log = logging.getLogger(__name__)

EventName = Literal[
    "index_built",
    "index_kept",
    "index_reverted",
    "build_failed",
    "backup_failed",
    "test_restore_failed",
    "pause_started",
    "pause_ended",
    "leadership_gained",
    "leadership_lost",
]
EVENT_NAMES: tuple[str, ...] = get_args(EventName)

INDEX_BUILT: EventName = "index_built"
INDEX_KEPT: EventName = "index_kept"
INDEX_REVERTED: EventName = "index_reverted"
BUILD_FAILED: EventName = "build_failed"
BACKUP_FAILED: EventName = "backup_failed"
TEST_RESTORE_FAILED: EventName = "test_restore_failed"
PAUSE_STARTED: EventName = "pause_started"
PAUSE_ENDED: EventName = "pause_ended"
LEADERSHIP_GAINED: EventName = "leadership_gained"
LEADERSHIP_LOST: EventName = "leadership_lost"


@dataclass(frozen=True)
class Event:
    """One thing that happened: its name, the managed database (by its configured name), a one-line summary
    for people, and details for machines (plain JSON values)."""

    name: EventName
    database: str | None
    summary: str
    at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


Sink = Callable[[Event], None]

_lock = threading.Lock()
_sinks: tuple[Sink, ...] = ()  # replaced whole under _lock, read without it


def subscribe(sink: Sink) -> None:
    """Hand every event published from now on to `sink` (once, however often it is subscribed)."""
    global _sinks
    with _lock:
        if sink not in _sinks:
            _sinks = (*_sinks, sink)


def unsubscribe(sink: Sink) -> None:
    global _sinks
    with _lock:
        _sinks = tuple(s for s in _sinks if s != sink)


def subscribed() -> int:
    """How many sinks are registered."""
    return len(_sinks)


def publish(name: EventName, database: str | None, summary: str, *, at: datetime | None = None,
            **details: Any) -> Event | None:
    """Tell every registered sink about an event; None (and nothing built) when no sink listens.

    Never raises: a failing sink is logged, and the code that published carries on."""
    sinks = _sinks
    if not sinks:
        return None
    event = Event(name, database, summary, at or utcnow(), {k: _plain(v) for k, v in details.items()})
    for sink in sinks:
        try:
            sink(event)
        except Exception:  # noqa: BLE001 - telling someone must never break the work itself
            log.warning("an event sink failed on %s", name, exc_info=True)
    return event


def _plain(value: Any) -> Any:
    """A JSON-friendly copy: timestamps as ISO 8601 text, tuples as lists, anything odd as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)

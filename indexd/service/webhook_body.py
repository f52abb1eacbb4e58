"""The body a webhook receives for one event: Slack-compatible `{"text": ...}`, or a JSON object with the event,
database, time, host, a readable text and the details. Pure: no I/O, every string scrubbed of secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from indexd import __version__
from indexd.events import Event
from indexd.log import scrub

Format = Literal["json", "slack"]

_TITLES = {
    "index_built": "index built",
    "index_kept": "index kept",
    "index_reverted": "index reverted",
    "build_failed": "index build failed",
    "backup_failed": "backup failed",
    "test_restore_failed": "test restore failed",
    "pause_started": "indexing paused",
    "pause_ended": "indexing resumed",
    "leadership_gained": "leadership gained",
    "leadership_lost": "leadership lost",
}


def title(name: str) -> str:
    return _TITLES.get(name, name.replace("_", " "))


def text_line(event: Event, host: str) -> str:
    """One line for people: `indexd on db1: main: index built: <summary>`."""
    where = f"{event.database}: " if event.database else ""
    return scrub(f"indexd on {host}: {where}{title(event.name)}: {event.summary}")


def payload(event: Event, fmt: Format, host: str) -> dict[str, Any]:
    """The object sent for `event` in format `fmt`; every string in it passes through the log's scrubbing."""
    text = text_line(event, host)
    if fmt == "slack":
        return {"text": text}
    return {
        "event": event.name,
        "database": event.database,
        "time": event.at.isoformat(),
        "host": host,
        "text": text,
        "summary": scrub(event.summary),
        "details": _scrubbed(event.details),
        "source": "indexd",
        "version": __version__,
    }


def render(event: Event, fmt: Format, host: str) -> bytes:
    return json.dumps(payload(event, fmt, host), default=str, sort_keys=True).encode("utf-8")


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value

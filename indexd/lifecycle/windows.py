"""Maintenance windows: when may an index be built, and does a build of this size fit before the window ends?

A window is a start and an end time of day in an IANA time zone, on some days of the week; the day is the
day the window starts (a 22:00-02:00 window on "fri" runs Friday night into Saturday). `end <= start` crosses
midnight; `end == start` is a full day. Several windows are merged where they touch or overlap.

Wall-clock times are resolved DST-safely, with one rule: a time of day means the first instant the local clock
shows it. In a spring-forward gap (02:30 does not exist in Europe/Berlin on the last Sunday of March) that is
the instant the clock jumps (03:00 CEST); on a fall-back day (02:30 happens twice) it is the first one. Every
comparison is made in UTC, so a 01:00-05:00 window lasts 3 real hours on spring-forward day and 5 on fall-back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from indexd.config.schema import DAYS, IndexingSettings, WindowSettings

# The default of `indexing.build_throughput`: table bytes per second a concurrent build gets through.
ASSUMED_BUILD_THROUGHPUT = IndexingSettings.build_throughput


@dataclass(frozen=True)
class Interval:
    """A stretch of time when builds may run, in UTC; `label` names the window(s) it comes from."""

    start: datetime
    end: datetime
    label: str

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def build_throughput(settings: IndexingSettings) -> int:
    return int(settings.build_throughput)


def estimate_build_duration(table_bytes: int, throughput_bytes_per_s: int = ASSUMED_BUILD_THROUGHPUT) -> timedelta:
    """How long building an index on a table of this size should take, at the assumed throughput."""
    return timedelta(seconds=max(0, table_bytes) / max(1, throughput_bytes_per_s))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def resolve_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the local clock of `tz` on `day` shows `at` — or, in a DST gap where
    it never does, the instant the clock jumps past it."""
    wall = datetime.combine(day, at.replace(tzinfo=None))
    candidate = wall
    for _ in range(24 * 60 + 1):
        instant = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == candidate:
            return instant
        # In a gap: walk forward a minute at a time (from the whole minute) until the local time exists.
        candidate = candidate.replace(second=0, microsecond=0) + timedelta(minutes=1)
    raise ValueError(f"{wall} never exists in {tz.key}")  # not a real time zone rule


def describe(window: WindowSettings) -> str:
    days = ",".join(window.days) if tuple(window.days) != DAYS else "daily"
    return f"{days} {window.start:%H:%M}-{window.end:%H:%M} {window.timezone}"


def occurrences(window: WindowSettings, around: datetime, days_ahead: int = 8) -> list[Interval]:
    """The instances of one window starting from the local day before `around` up to `days_ahead` later."""
    tz = zone(window.timezone)
    today = around.astimezone(tz).date()
    label = describe(window)
    found = []
    for offset in range(-1, days_ahead + 1):
        day = today + timedelta(days=offset)
        if DAYS[day.weekday()] not in window.days:
            continue
        end_day = day if window.end > window.start else day + timedelta(days=1)
        start, end = resolve_local(day, window.start, tz), resolve_local(end_day, window.end, tz)
        if end > start:
            found.append(Interval(start, end, label))
    return found


def merged_intervals(windows: Iterable[WindowSettings], around: datetime) -> list[Interval]:
    """Every window's instances near `around`, merged where they overlap or touch, in order."""
    spans = sorted((i for w in windows for i in occurrences(w, around)), key=lambda i: i.start)
    merged: list[Interval] = []
    for span in spans:
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            label = last.label if span.label in last.label.split(" + ") else f"{last.label} + {span.label}"
            merged[-1] = Interval(last.start, max(last.end, span.end), label)
        else:
            merged.append(span)
    return merged


def current_window(windows: Iterable[WindowSettings], now: datetime) -> Interval | None:
    """The (merged) window open at `now`, or None."""
    return next((i for i in merged_intervals(windows, now) if now in i), None)


def next_window_start(windows: Iterable[WindowSettings], now: datetime) -> datetime | None:
    """When the next window opens after `now` (None when no window ever opens)."""
    return next((i.start for i in merged_intervals(windows, now) if i.start > now), None)

"""Maintenance windows: midnight crossings, several windows, IANA zones and DST days, duration estimates."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from indexd.config.schema import WindowSettings
from indexd.lifecycle.windows import (
    current_window,
    estimate_build_duration,
    merged_intervals,
    next_window_start,
    resolve_local,
    zone,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def win(start: str, end: str, tz: str = "UTC", days: tuple[str, ...] | None = None) -> WindowSettings:
    kwargs = {} if days is None else {"days": days}
    return WindowSettings(start=time.fromisoformat(start), end=time.fromisoformat(end), timezone=tz, **kwargs)


def is_open(windows: tuple[WindowSettings, ...], now: datetime) -> bool:
    return current_window(windows, now) is not None


# 2026-11-23 is a Monday.
@pytest.mark.parametrize(("now", "expected"), [
    (utc(2026, 11, 23, 0, 59, 59), False),
    (utc(2026, 11, 23, 1, 0), True),
    (utc(2026, 11, 23, 4, 59, 59), True),
    (utc(2026, 11, 23, 5, 0), False),
    (utc(2026, 11, 23, 12, 0), False),
])
def test_plain_window_edges(now: datetime, expected: bool) -> None:
    assert is_open((win("01:00", "05:00"),), now) is expected


@pytest.mark.parametrize(("now", "expected"), [
    (utc(2026, 11, 27, 21, 59), False),   # Friday, before it opens
    (utc(2026, 11, 27, 22, 0), True),     # Friday 22:00
    (utc(2026, 11, 27, 23, 59), True),
    (utc(2026, 11, 28, 0, 0), True),      # Saturday, after midnight: still Friday's window
    (utc(2026, 11, 28, 1, 59), True),
    (utc(2026, 11, 28, 2, 0), False),
    (utc(2026, 11, 28, 23, 0), False),    # Saturday night: not a window day
    (utc(2026, 11, 27, 1, 0), False),     # Friday early morning belongs to Thursday's (absent) window
])
def test_window_crossing_midnight_belongs_to_its_start_day(now: datetime, expected: bool) -> None:
    assert is_open((win("22:00", "02:00", days=("fri",)),), now) is expected


def test_window_crossing_midnight_ends_on_the_next_day() -> None:
    w = current_window((win("22:00", "02:00"),), utc(2026, 11, 24, 0, 30))
    assert w is not None and (w.start, w.end) == (utc(2026, 11, 23, 22), utc(2026, 11, 24, 2))


def test_equal_start_and_end_is_a_full_day() -> None:
    w = current_window((win("03:00", "03:00", days=("mon",)),), utc(2026, 11, 24, 2, 59))
    assert w is not None and w.end - w.start == timedelta(days=1)


def test_local_time_zone() -> None:
    # 01:00-05:00 Europe/Berlin in winter (CET, UTC+1) = 00:00-04:00 UTC
    windows = (win("01:00", "05:00", "Europe/Berlin"),)
    assert is_open(windows, utc(2026, 11, 23, 0, 0))
    assert not is_open(windows, utc(2026, 11, 23, 4, 0))
    assert not is_open(windows, utc(2026, 11, 22, 23, 59))


# ---- DST --------------------------------------------------------------------------------------------------

def test_berlin_spring_forward_day_window_is_three_real_hours() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST. 01:00 CET = 00:00 UTC; 05:00 CEST = 03:00 UTC.
    w = current_window((win("01:00", "05:00", "Europe/Berlin"),), utc(2026, 3, 29, 1, 30))
    assert w is not None and (w.start, w.end) == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 3))
    assert not is_open((win("01:00", "05:00", "Europe/Berlin"),), utc(2026, 3, 29, 3, 0))


def test_berlin_fall_back_day_window_is_five_real_hours() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET. 01:00 CEST = 23:00 UTC (24th); 05:00 CET = 04:00 UTC.
    windows = (win("01:00", "05:00", "Europe/Berlin"),)
    w = current_window(windows, utc(2026, 10, 25, 1, 30))
    assert w is not None and (w.start, w.end) == (utc(2026, 10, 24, 23), utc(2026, 10, 25, 4))
    assert is_open(windows, utc(2026, 10, 25, 3, 59)) and not is_open(windows, utc(2026, 10, 25, 4, 0))


def test_start_in_the_spring_gap_opens_when_the_clock_jumps() -> None:
    # 02:30 never exists in Berlin on 2026-03-29: the window opens at 03:00 CEST = 01:00 UTC.
    berlin = zone("Europe/Berlin")
    assert resolve_local(datetime(2026, 3, 29).date(), time(2, 30), berlin) == utc(2026, 3, 29, 1, 0)
    w = current_window((win("02:30", "04:00", "Europe/Berlin"),), utc(2026, 3, 29, 1, 0))
    assert w is not None and (w.start, w.end) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))


def test_ambiguous_fall_back_time_means_its_first_occurrence() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25: first at 00:30 UTC (CEST), again at 01:30 UTC (CET).
    berlin = zone("Europe/Berlin")
    assert resolve_local(datetime(2026, 10, 25).date(), time(2, 30), berlin) == utc(2026, 10, 25, 0, 30)
    w = current_window((win("02:30", "03:30", "Europe/Berlin"),), utc(2026, 10, 25, 1, 0))
    assert w is not None and (w.start, w.end) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30))


def test_new_york_spring_forward_and_fall_back() -> None:
    ny = (win("01:00", "05:00", "America/New_York"),)
    spring = current_window(ny, utc(2026, 3, 8, 7, 0))  # 2026-03-08: 02:00 EST -> 03:00 EDT
    assert spring is not None and (spring.start, spring.end) == (utc(2026, 3, 8, 6), utc(2026, 3, 8, 9))
    fall = current_window(ny, utc(2026, 11, 1, 7, 0))  # 2026-11-01: 02:00 EDT -> 01:00 EST
    assert fall is not None and (fall.start, fall.end) == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 10))
    # 01:30 happens twice in New York that night; a window starting then starts at the first (EDT).
    assert resolve_local(datetime(2026, 11, 1).date(), time(1, 30), zone("America/New_York")) == \
        utc(2026, 11, 1, 5, 30)


def test_window_crossing_midnight_over_a_dst_change() -> None:
    # Saturday 22:00 -> Sunday 04:00 in Berlin across spring-forward: 21:00 UTC -> 02:00 UTC = 5 real hours.
    w = current_window((win("22:00", "04:00", "Europe/Berlin", days=("sat",)),), utc(2026, 3, 29, 1, 0))
    assert w is not None and (w.start, w.end) == (utc(2026, 3, 28, 21), utc(2026, 3, 29, 2))


# ---- several windows ---------------------------------------------------------------------------------------

def test_touching_windows_merge_and_the_next_start_is_found() -> None:
    windows = (win("01:00", "03:00"), win("03:00", "05:00"), win("13:00", "14:00", days=("sat", "sun")))
    w = current_window(windows, utc(2026, 11, 23, 2, 0))
    assert w is not None and (w.start, w.end) == (utc(2026, 11, 23, 1), utc(2026, 11, 23, 5))
    assert "+" in w.label
    assert next_window_start(windows, utc(2026, 11, 23, 6, 0)) == utc(2026, 11, 24, 1)
    assert next_window_start(windows, utc(2026, 11, 28, 6, 0)) == utc(2026, 11, 28, 13)


def test_windows_in_different_zones() -> None:
    windows = (win("01:00", "02:00", "Europe/Berlin"), win("01:00", "02:00", "America/New_York"))
    assert is_open(windows, utc(2026, 11, 23, 0, 30))   # 01:30 Berlin
    assert is_open(windows, utc(2026, 11, 23, 6, 30))   # 01:30 New York
    assert not is_open(windows, utc(2026, 11, 23, 3, 0))
    assert len(merged_intervals(windows, utc(2026, 11, 23, 3, 0))) >= 16


def test_next_start_a_week_later_and_never() -> None:
    monday_only = (win("01:00", "05:00", days=("mon",)),)
    assert next_window_start(monday_only, utc(2026, 11, 23, 6, 0)) == utc(2026, 11, 30, 1)
    assert next_window_start((win("01:00", "05:00", days=()),), utc(2026, 11, 23, 6, 0)) is None


def test_estimated_build_duration_and_unknown_zone() -> None:
    assert estimate_build_duration(100 * 1024**2, 10 * 1024**2) == timedelta(seconds=10)
    assert estimate_build_duration(0) == timedelta(0)
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus")

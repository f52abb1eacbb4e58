"""Waiting before a build, inside one apply run: the application gets `throttle.pause_between_builds` to recover
after each build, and a refusal that ends soon (the latency probe, rechecked every guards.PROBE_RECHECK; a rate
limit freeing up in seconds) is waited out rather than left to the next run, for at most PATIENCE per build.

The guards are asked again after every wait: what allowed a build a minute ago may refuse it now. A stop request
(the daemon's cancel event) ends the wait at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from indexd.config.schema import ThrottleSettings
from indexd.lifecycle.guards import BuildRequest, Decision, Readings, pacing_wait

log = logging.getLogger(__name__)

SHORT_REFUSAL = timedelta(seconds=60)  # a refusal ending sooner than this is waited out ...
PATIENCE = timedelta(seconds=90)  # ... for at most this long per build

Ask = Callable[[datetime], tuple[BuildRequest, Readings]]
Judge = Callable[[BuildRequest, Readings, datetime], Decision]
Wait = Callable[[float], bool]  # seconds -> True when a stop was requested meanwhile


@dataclass(frozen=True)
class Ready:
    """The guards' last word on one build, after any waiting."""

    request: BuildRequest
    readings: Readings
    decision: Decision
    pause_s: float = 0.0  # pacing still due (a dry run does not wait)
    waited_s: float = 0.0


def ready(ask: Ask, judge: Judge, throttle: ThrottleSettings, clock: Callable[[], datetime], wait: Wait, *,
          dry_run: bool = False) -> Ready | None:
    """Ask the guards, waiting for the pause between builds and for refusals that end soon; None when a stop was
    requested while waiting."""
    waited, paced = 0.0, False
    while True:
        at = clock()
        request, readings = ask(at)
        decision = judge(request, readings, at)
        if decision.allowed:
            pause = pacing_wait(readings.last_build_end, throttle.pause_between_builds, at).total_seconds()
            if dry_run or paced or pause <= 0:
                return Ready(request, readings, decision, 0.0 if paced else pause, waited)
            log.info("pausing %.1fs between builds (indexing.throttle.pause_between_builds) before %s", pause,
                     request.index_name)
            if wait(pause):
                return None
            waited, paced = waited + pause, True
            continue
        delay = (decision.retry_after - at).total_seconds() if decision.retry_after is not None else None
        if dry_run or delay is None or delay > SHORT_REFUSAL.total_seconds() \
                or waited + delay > PATIENCE.total_seconds():
            return Ready(request, readings, decision, 0.0, waited)
        step = max(1.0, delay)  # a refusal whose end is already past still gets a second: no busy loop
        log.info("waiting %.0fs before building %s: %s", step, request.index_name, "; ".join(decision.reasons))
        if wait(step):
            return None
        waited += step

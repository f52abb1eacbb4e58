"""Notifications: the events the lifecycle and backup code publish (`indexd.events`), delivered to the
webhooks of `notifications.webhooks`, each through its own bounded queue and thread (`webhook.py`).

The daemon makes one `Notifications`, subscribes it when it starts, swaps its webhooks on reload (unchanged
ones keep their queue) and closes it last when it stops: queued events get `drain_timeout` to go out, then
are dropped and counted. A CLI command that changes something (pause, resume, apply, backup) uses `delivering`:
the same delivery in the background while it works, and at its end a wait of at most `drain_timeout`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from indexd import events
from indexd.config.schema import NotificationSettings, WebhookSettings
from indexd.events import Event
from indexd.service.webhook import DEFAULT_BACKOFF, Backoff, NotifyStats, WebhookChannel

log = logging.getLogger(__name__)

RELOAD_DRAIN_S = 1.0  # a webhook changed or removed by a reload gets this long for what it still holds


def labels(hooks: tuple[WebhookSettings, ...]) -> list[str]:
    """Each webhook's label: its name, else its URL's host; a repeated label gets #2, #3 ..."""
    seen: dict[str, int] = {}
    out = []
    for hook in hooks:
        base = hook.name or urlsplit(hook.url).hostname or "webhook"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


class Notifications:
    """Every webhook channel of one process, fed by the event bus."""

    def __init__(self, settings: NotificationSettings, *, host: str | None = None,
                 backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.settings = settings
        self.host = host or socket.gethostname()
        self.backoff = backoff
        self.stats = NotifyStats()
        self._lock = threading.Lock()
        self._channels: dict[str, WebhookChannel] = {}
        self._started = False

    # ---- the sink: called from any thread, never blocks ----------------------------------------------------
    def __call__(self, event: Event) -> None:
        for channel in self.channels():
            if channel.wants(event):
                channel.offer(event)

    def channels(self) -> list[WebhookChannel]:
        with self._lock:
            return list(self._channels.values())

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a channel per webhook and listen to the event bus (nothing to do without webhooks)."""
        with self._lock:
            self._channels = self._make(self.settings)
            for channel in self._channels.values():
                channel.start()
            self._started = True
        events.subscribe(self)

    def update(self, settings: NotificationSettings) -> None:
        """Reload: unchanged webhooks keep their queue; a changed one hands its queue to its successor."""
        if not self._started:
            self.settings = settings
            return
        wanted = self._make(settings, keep=self._channels)
        with self._lock:
            old, self._channels, self.settings = self._channels, wanted, settings
        for label, channel in wanted.items():
            if old.get(label) is not channel:
                channel.start()
        replaced = [channel for label, channel in old.items() if wanted.get(label) is not channel]
        for channel, left in _close_all(replaced, RELOAD_DRAIN_S):
            successor = wanted.get(channel.label)
            for event in left:
                if successor is not None and successor.wants(event):
                    successor.offer(event)
                else:
                    self.stats.count("dropped", channel.label, "removed")
        if replaced or old.keys() != wanted.keys():
            log.info("notifications: %d webhook(s) after reload", len(wanted))

    def close(self, timeout_s: float | None = None) -> int:
        """Stop listening, give queued events at most `timeout_s` (default drain_timeout) in all, then drop
        and count what is left; returns how many were dropped."""
        events.unsubscribe(self)
        timeout = self.settings.drain_timeout.total_seconds() if timeout_s is None else timeout_s
        with self._lock:
            channels, self._channels, self._started = list(self._channels.values()), {}, False
        left = _close_all(channels, timeout)
        for channel, undelivered in left:
            if undelivered:
                self.stats.count("dropped", channel.label, "shutdown", len(undelivered))
                log.warning("notifications: %d event(s) for webhook %s not delivered within %.1fs, dropped",
                            len(undelivered), channel.label, timeout)
        return sum(len(u) for _, u in left)

    def _make(self, settings: NotificationSettings,
              keep: dict[str, WebhookChannel] | None = None) -> dict[str, WebhookChannel]:
        made: dict[str, WebhookChannel] = {}
        for label, hook in zip(labels(settings.webhooks), settings.webhooks, strict=True):
            current = (keep or {}).get(label)
            same = current is not None and current.settings == hook and settings.queue_size == self.settings.queue_size
            made[label] = current if same and current is not None else WebhookChannel(
                label, hook, settings.queue_size, self.stats, self.host, self.backoff)
        return made


def _close_all(channels: list[WebhookChannel], timeout_s: float) -> list[tuple[WebhookChannel, list[Event]]]:
    """Close every channel in parallel, so the bound does not grow with the number of webhooks."""
    results: dict[str, list[Event]] = {}

    def close(channel: WebhookChannel) -> None:
        results[channel.label] = channel.close(timeout_s)

    closers = [threading.Thread(target=close, args=(c,), name=f"close-webhook-{c.label}", daemon=True)
               for c in channels]
    for t in closers:
        t.start()
    for t in closers:
        t.join(timeout_s + 1.0)
    return [(c, results.get(c.label, [])) for c in channels]


@contextmanager
def delivering(settings: NotificationSettings, *, host: str | None = None,
               backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[Notifications | None]:
    """For a CLI command: deliver the events it causes while it runs, then wait at most drain_timeout for them.
    Without webhooks nothing is started (None)."""
    if not settings.webhooks:
        yield None
        return
    notes = Notifications(settings, host=host, backoff=backoff)
    notes.start()
    try:
        yield notes
    finally:
        notes.close()


class NotificationCollector(Collector):
    """indexd_notifications_{sent,failed,dropped}_total and the queue depth per webhook, read at scrape time."""

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    def collect(self) -> Iterator[Metric]:
        sent, failed, dropped = self.notifications.stats.copy()
        fam_sent = CounterMetricFamily("indexd_notifications_sent", "events delivered to a webhook",
                                       labels=["webhook"])
        fam_failed = CounterMetricFamily("indexd_notifications_failed", "events given up after their attempts",
                                         labels=["webhook", "reason"])
        fam_dropped = CounterMetricFamily("indexd_notifications_dropped", "events never sent: queue full, "
                                          "webhook removed, or still queued at stop", labels=["webhook", "reason"])
        queued = GaugeMetricFamily("indexd_notifications_queued", "events waiting for delivery", labels=["webhook"])
        for webhook, n in sorted(sent.items()):
            fam_sent.add_metric([webhook], n)
        for (webhook, reason), n in sorted(failed.items()):
            fam_failed.add_metric([webhook, reason], n)
        for (webhook, reason), n in sorted(dropped.items()):
            fam_dropped.add_metric([webhook, reason], n)
        for channel in self.notifications.channels():
            queued.add_metric([channel.label], channel.pending())
        yield from (fam_sent, fam_failed, fam_dropped, queued)

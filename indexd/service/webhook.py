"""Delivery to one webhook: a bounded queue, one worker thread, a POST per event with bounded retries.

`offer` never blocks: it appends to the queue (dropping, and counting, the oldest event when it is full).
The worker posts each event in turn; a transient failure (connection, timeout, 408/429/5xx) is retried with
exponential backoff and jitter, bounded by `attempts` and `retry_for`; anything else fails at once. Redirects
are not followed (they would carry the bearer token to another place). Logs name the webhook by its label
and show at most the URL's scheme and host: a webhook's path can be a secret, and so is its token.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from indexd import __version__
from indexd.config.schema import WebhookSettings
from indexd.config.secrets import read_secret_file
from indexd.errors import ConfigError
from indexd.events import Event
from indexd.service.webhook_body import render

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 1.0  # the first retry waits about this long, each next one twice as long ...
BACKOFF_MAX_S = 30.0  # ... up to this, each plus up to BACKOFF_JITTER_S at random
BACKOFF_JITTER_S = 1.0
RESPONSE_READ_MAX = 64 * 1024  # bytes of a receiver's answer read (and ignored)
DROP_LOG_EVERY = 100  # a full queue logs its first drop and every hundredth after it


@dataclass(frozen=True)
class Backoff:
    initial_s: float = BACKOFF_INITIAL_S
    max_s: float = BACKOFF_MAX_S
    jitter_s: float = BACKOFF_JITTER_S
    rand: Callable[[float, float], float] = random.uniform

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1, 2, ...): doubling from initial_s up to max_s,
        plus up to jitter_s at random so several daemons do not retry in step."""
        return min(self.max_s, self.initial_s * 2.0 ** max(0, attempt - 1)) + self.rand(0.0, self.jitter_s)


@dataclass
class NotifyStats:
    """Counters of every channel, kept across reloads (the metrics read them)."""

    sent: dict[str, int] = field(default_factory=dict)  # webhook -> events delivered
    failed: dict[tuple[str, str], int] = field(default_factory=dict)  # (webhook, reason) -> events given up
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (webhook, reason) -> events never sent
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, kind: str, webhook: str, reason: str | None = None, n: int = 1) -> int:
        """Add `n` to one counter; returns its new value."""
        table: dict[Any, int] = getattr(self, kind)
        key: Any = webhook if reason is None else (webhook, reason)
        with self.lock:
            table[key] = table.get(key, 0) + n
            return table[key]

    def copy(self) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        with self.lock:
            return dict(self.sent), dict(self.failed), dict(self.dropped)


class DeliveryError(Exception):
    """One failed attempt: why (a metrics label), whether trying again can help, and a readable message."""

    def __init__(self, reason: str, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


class _Aborted(Exception):
    """The channel was told to give up while waiting to retry."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx answer


DEFAULT_BACKOFF = Backoff()
_OPENER = urllib.request.build_opener(_NoRedirect)


def display_url(url: str) -> str:
    """scheme://host[:port] of a URL: what logs may show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST `body` once; the HTTP status of a 2xx answer, else DeliveryError (never naming the URL)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(RESPONSE_READ_MAX)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _status_error(exc.code) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise DeliveryError("timeout", f"no answer within {timeout_s:g}s", retry=True) from None
        raise DeliveryError("connection", f"cannot connect: {exc.reason}", retry=True) from None
    except TimeoutError:
        raise DeliveryError("timeout", f"no answer within {timeout_s:g}s", retry=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError("connection", f"connection failed: {exc or type(exc).__name__}", retry=True) from None


def _status_error(status: int) -> DeliveryError:
    if 300 <= status < 400:
        return DeliveryError("redirect", f"answered {status}, a redirect (not followed): correct the URL", retry=False)
    if status in (408, 429) or status >= 500:
        return DeliveryError(f"http_{status // 100}xx" if status >= 500 else f"http_{status}",
                             f"answered {status}", retry=True)
    return DeliveryError("http_4xx", f"answered {status}: check the URL and the token", retry=False)


def read_token(path: str, label: str) -> str:
    """The bearer token in `path`, read at each delivery so a rotated token is used at once."""
    try:
        token = read_secret_file(path, f"token_file of webhook {label}")
    except ConfigError as exc:
        raise DeliveryError("token", str(exc), retry=False) from None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        raise DeliveryError("token", f"token_file of webhook {label}: {path} holds more than one token",
                            retry=False)
    return token


class WebhookChannel:
    """One webhook's queue and the thread that delivers from it."""

    def __init__(self, label: str, settings: WebhookSettings, queue_size: int, stats: NotifyStats, host: str,
                 backoff: Backoff = DEFAULT_BACKOFF, poster: Callable[[str, bytes, dict[str, str], float], int] = post,
                 ) -> None:
        self.label = label
        self.settings = settings
        self.stats = stats
        self.host = host
        self.backoff = backoff
        self._post = poster
        self._queue: deque[Event] = deque()
        self._size = queue_size
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._last_error: DeliveryError | None = None
        self._thread = threading.Thread(target=self._work, name=f"webhook-{label}", daemon=True)

    def wants(self, event: Event) -> bool:
        return not self.settings.events or event.name in self.settings.events

    def start(self) -> None:
        self._thread.start()
        log.info("notifications to webhook %s (%s, %s format) started", self.label,
                 display_url(self.settings.url), self.settings.format)

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def offer(self, event: Event) -> None:
        """Queue `event` (O(1), never blocks); a full queue drops its oldest event."""
        if self._abort.is_set():  # closed by a reload between the sink's look at the channels and now
            self.stats.count("dropped", self.label, "closed")
            return
        with self._cond:
            dropped = len(self._queue) >= self._size
            if dropped:
                self._queue.popleft()
            self._queue.append(event)
            self._cond.notify()
        if dropped:
            n = self.stats.count("dropped", self.label, "queue_full")
            if n == 1 or n % DROP_LOG_EVERY == 0:
                log.warning("notification queue of webhook %s is full (%d events): dropped the oldest (%d so far)",
                            self.label, self._size, n)

    def close(self, timeout_s: float) -> list[Event]:
        """Deliver what is queued for at most `timeout_s`, then give up; returns the events left undelivered
        (not counted here). The worker, if still inside a request, ends after it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout_s))
        self._abort.set()
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        return left

    # ---- the worker ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abort.is_set():
                    return
                event = self._queue.popleft()
            try:
                self._deliver(event)
            except Exception:  # noqa: BLE001 - a bug in one delivery must not end the channel
                self.stats.count("failed", self.label, "error")
                log.error("notification %s to webhook %s failed unexpectedly", event.name, self.label, exc_info=True)

    def _deliver(self, event: Event) -> None:
        body = render(event, self.settings.format, self.host)
        try:
            headers = self._headers()
            attempts = self._send(event, body, headers)
        except (DeliveryError, _Aborted) as exc:
            error = exc if isinstance(exc, DeliveryError) else self._last_error
            reason = error.reason if error is not None else "stopped"
            self.stats.count("failed", self.label, reason)
            log.warning("notification %s to webhook %s not delivered: %s%s", event.name, self.label, error,
                        " (stopping)" if isinstance(exc, _Aborted) else "")
            return
        self.stats.count("sent", self.label)
        log.info("notification %s delivered to webhook %s%s", event.name, self.label,
                 f" (attempt {attempts})" if attempts > 1 else "")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": f"indexd/{__version__}"}
        if self.settings.token_file:
            headers["Authorization"] = f"Bearer {read_token(self.settings.token_file, self.label)}"
        return headers

    def _send(self, event: Event, body: bytes, headers: dict[str, str]) -> int:
        """POST with retries; returns the number of attempts it took."""
        s = self.settings
        budget = s.retry_for.total_seconds()

        def wait(state: RetryCallState) -> float:  # never sleep past the retry budget
            return max(0.0, min(self.backoff.delay(state.attempt_number),
                                budget - (state.seconds_since_start or 0.0)))

        retrying = Retrying(
            stop=stop_after_attempt(s.attempts) | stop_after_delay(budget),
            wait=wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryError) and exc.retry),
            sleep=self._sleep,
            before_sleep=lambda state: self._note_retry(event, state),
            reraise=True,
        )
        self._last_error = None
        retrying(self._post, s.url, body, headers, s.timeout.total_seconds())
        return retrying.statistics.get("attempt_number", 1)

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            raise _Aborted()

    def _note_retry(self, event: Event, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        self._last_error = error if isinstance(error, DeliveryError) else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("notification %s to webhook %s: attempt %d failed (%s); next in %.1fs", event.name,
                    self.label, state.attempt_number, error, delay)

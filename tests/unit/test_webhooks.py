"""Webhook delivery against a real HTTP receiver on 127.0.0.1: formats, token, filter, retries, dead and slow
receivers, bounded queues, secrets, reload, metrics, and the bounded wait of a CLI command."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from indexd import events
from indexd.clock import utcnow
from indexd.config.load import load_settings
from indexd.config.schema import NotificationSettings, WebhookSettings
from indexd.service.notify import NotificationCollector, Notifications, delivering
from indexd.service.webhook import Backoff
from tests.support.webhook_receiver import dead_url, receiver

FAST = Backoff(initial_s=0.05, max_s=0.2, jitter_s=0.01)
TOKEN = "tok-5up3r-s3cret"
Make = Callable[..., Notifications]


@pytest.fixture
def notes() -> Iterator[Make]:
    """Starts Notifications for the given webhooks; every one is closed (and unsubscribed) after the test."""
    made: list[Notifications] = []

    def make(*hooks: WebhookSettings, queue_size: int = 1000, drain_s: float = 3.0) -> Notifications:
        settings = NotificationSettings(webhooks=hooks, queue_size=queue_size,
                                        drain_timeout=timedelta(seconds=drain_s))
        n = Notifications(settings, host="db1.example", backoff=FAST)
        n.start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.close(0.5)
    assert events.subscribed() == 0


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "webhook.token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_json_format_carries_event_database_time_host_and_details(notes: Make, token_file: str) -> None:
    with receiver() as rec:
        n = notes(WebhookSettings(url=rec.url, token_file=token_file, format="json"))
        events.publish("index_built", "main", "public.indexd_t_a_1 on public.t built in 1.5s (2.0 MB)",
                       index="public.indexd_t_a_1", size_bytes=2 * 1024**2)
        (got,) = rec.wait_for(1)
    assert got.path == "/hooks/T000/B000/secret-path"
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Content-Type"] == "application/json"
    body = got.body
    assert body["event"] == "index_built" and body["database"] == "main" and body["host"] == "db1.example"
    sent_at = datetime.fromisoformat(body["time"])
    assert sent_at.tzinfo is not None and abs((utcnow() - sent_at).total_seconds()) < 30
    assert body["details"] == {"index": "public.indexd_t_a_1", "size_bytes": 2 * 1024**2}
    assert body["text"] == ("indexd on db1.example: main: index built: public.indexd_t_a_1 on public.t built in "
                            "1.5s (2.0 MB)")
    assert until(lambda: n.stats.copy()[0] == {"127.0.0.1": 1})  # counted once the answer is read


def test_slack_format_is_text_only(notes: Make, token_file: str) -> None:
    with receiver() as rec:
        notes(WebhookSettings(url=rec.url, token_file=token_file, format="slack"))
        events.publish("pause_started", "main", "by ann (until resumed): deploy", by="ann")
        (got,) = rec.wait_for(1)
    assert got.body == {"text": "indexd on db1.example: main: indexing paused: by ann (until resumed): deploy"}
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"


def test_without_token_file_no_authorization_header(notes: Make) -> None:
    with receiver() as rec:
        notes(WebhookSettings(url=rec.url))
        events.publish("leadership_gained", "main", "this process now leads main")
        (got,) = rec.wait_for(1)
    assert "Authorization" not in got.headers


def test_events_filter(notes: Make) -> None:
    with receiver() as only_pauses, receiver() as everything:
        notes(WebhookSettings(url=only_pauses.url, name="pauses", events=("pause_started", "pause_ended")),
              WebhookSettings(url=everything.url, name="all"))
        for name in ("index_built", "pause_started", "backup_failed", "pause_ended"):
            events.publish(name, "main", f"{name} happened")  # type: ignore[arg-type]
        assert [r.body["event"] for r in everything.wait_for(4)] == [
            "index_built", "pause_started", "backup_failed", "pause_ended"]
        assert [r.body["event"] for r in only_pauses.wait_for(2)] == ["pause_started", "pause_ended"]
        time.sleep(0.1)
        assert only_pauses.requests == 2


def test_retries_a_receiver_that_fails_twice(notes: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "indexd.service.webhook")
    with receiver(statuses=[503, 500]) as rec:
        n = notes(WebhookSettings(url=rec.url, name="flaky", attempts=5))
        events.publish("backup_failed", "main", "backup of main failed: disk full")
        assert len(rec.wait_for(1)) == 1
        assert until(lambda: n.stats.copy()[0].get("flaky") == 1)
    assert rec.requests == 3
    assert n.stats.copy()[1] == {}
    retries = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert retries[0].startswith("notification backup_failed to webhook flaky: attempt 1 failed (answered 503)")
    assert retries[1].startswith("notification backup_failed to webhook flaky: attempt 2 failed (answered 500)")
    assert retries[2] == "notification backup_failed delivered to webhook flaky (attempt 3)"


@pytest.mark.parametrize(("status", "reason"), [(404, "http_4xx"), (401, "http_4xx"), (302, "redirect")])
def test_client_errors_and_redirects_are_not_retried(notes: Make, status: int, reason: str) -> None:
    with receiver(statuses=[status]) as rec:
        n = notes(WebhookSettings(url=rec.url, name="h", attempts=5))
        events.publish("index_kept", "main", "kept")
        assert until(lambda: n.stats.copy()[1] == {("h", reason): 1})
        time.sleep(0.1)
    assert rec.requests == 1 and rec.received == []  # a redirect is never followed (the token stays put)


def test_dead_receiver_bounded_attempts_counted_and_the_publisher_never_waits(
        notes: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "indexd.service.webhook")
    n = notes(WebhookSettings(url=dead_url(), name="dead", attempts=3, retry_for=timedelta(seconds=5),
                              timeout=timedelta(seconds=1)))
    t0 = time.monotonic()
    for _ in range(3):
        events.publish("build_failed", "main", "building x failed: lock timeout")
    published_in = time.monotonic() - t0
    assert published_in < 0.05, f"publishing took {published_in:.3f}s"
    assert until(lambda: n.stats.copy()[1].get(("dead", "connection")) == 3, timeout=10)
    took = time.monotonic() - t0
    assert took < 5, f"three events against a dead receiver took {took:.1f}s"
    attempts = [r for r in caplog.records if "attempt" in r.getMessage() and "failed" in r.getMessage()]
    assert len(attempts) == 3 * 2  # 3 attempts per event: 2 retries logged, then the final failure
    assert sum("not delivered: cannot connect" in r.getMessage() for r in caplog.records) == 3


def test_slow_receiver_times_out_and_the_queue_stays_bounded(notes: Make) -> None:
    with receiver(delay_s=1.0) as rec:
        n = notes(WebhookSettings(url=rec.url, name="slow", attempts=2, timeout=timedelta(milliseconds=200),
                                  retry_for=timedelta(milliseconds=500)), queue_size=3)
        (channel,) = n.channels()
        t0 = time.monotonic()
        for i in range(20):
            events.publish("index_built", "main", f"event {i}")
            assert channel.pending() <= 3
        assert time.monotonic() - t0 < 0.2
        assert until(lambda: n.stats.copy()[1].get(("slow", "timeout"), 0) >= 1, timeout=5)
        _, _, dropped = n.stats.copy()
        assert dropped[("slow", "queue_full")] >= 16  # 20 events, 3 queued, at most 1 in flight
        n.close(0.2)

        def settled() -> bool:
            sent, failed, dropped = n.stats.copy()
            return sum(sent.values()) + sum(failed.values()) + sum(dropped.values()) == 20

        assert until(settled, timeout=5), n.stats  # every event accounted for: sent, failed or dropped
        assert n.stats.copy()[2].get(("slow", "shutdown"), 0) >= 1


def test_no_secret_in_any_body(tmp_path: Path, token_file: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = "postgresql://indexd:s3cret-pw@db1.example:5432/app"
    with receiver() as as_json, receiver() as as_slack:
        config = tmp_path / "indexd.yaml"
        config.write_text(
            f"databases:\n  - name: main\n    dsn: {dsn}\n"
            f"notifications:\n  webhooks:\n    - url: {as_json.url}\n      token_file: {token_file}\n"
            f"    - url: {as_slack.url}\n      format: slack\n", encoding="utf-8")
        settings = load_settings(str(config), env={})
        with delivering(settings.notifications, backoff=FAST):
            events.publish("backup_failed", "main", f"backup of main failed: cannot connect to {dsn}",
                           dsn=settings.databases[0].dsn, error="password=s3cret-pw rejected",
                           nested={"env": ["PGPASSWORD=s3cret-pw"]})
        bodies = [r.raw.decode() for r in as_json.wait_for(1) + as_slack.wait_for(1)]
    assert len(bodies) == 2
    for body in bodies:
        assert "s3cret-pw" not in body and "***" in body
    assert "postgresql://indexd:***@db1.example:5432/app" in bodies[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "secret-path" not in logged


def test_publishing_without_a_sink_does_nothing() -> None:
    assert events.subscribed() == 0
    assert events.publish("index_built", "main", "nobody listens") is None


def test_a_failing_sink_never_breaks_the_publisher(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[events.Event] = []

    def broken(event: events.Event) -> None:
        raise RuntimeError("sink bug")

    events.subscribe(broken)
    events.subscribe(seen.append)
    try:
        event = events.publish("pause_ended", "main", "resumed", until=datetime(2030, 1, 1), ids=(1, 2))
    finally:
        events.unsubscribe(broken)
        events.unsubscribe(seen.append)
    assert seen == [event] and event is not None
    assert event.details == {"until": "2030-01-01T00:00:00", "ids": [1, 2]}
    assert "an event sink failed on pause_ended" in caplog.text


def test_reload_keeps_unchanged_webhooks_and_replaces_changed_ones(notes: Make) -> None:
    with receiver() as a, receiver() as b, receiver() as c:
        hook_a = WebhookSettings(url=a.url, name="a")
        n = notes(hook_a, WebhookSettings(url=b.url, name="b"))
        kept = {ch.label: ch for ch in n.channels()}["a"]
        n.update(NotificationSettings(webhooks=(hook_a, WebhookSettings(url=b.url, name="b", events=("index_kept",)),
                                                WebhookSettings(url=c.url, name="c"))))
        now = {ch.label: ch for ch in n.channels()}
        assert now["a"] is kept and set(now) == {"a", "b", "c"}
        events.publish("index_built", "main", "built")
        events.publish("index_kept", "main", "kept")
        assert len(a.wait_for(2)) == 2 and len(c.wait_for(2)) == 2
        assert [r.body["event"] for r in b.wait_for(1)] == ["index_kept"]
        n.update(NotificationSettings(webhooks=(hook_a,)))
        assert [ch.label for ch in n.channels()] == ["a"]
        assert until(lambda: n.stats.copy()[0] == {"a": 2, "b": 1, "c": 2})  # counters outlive the reloads


def test_a_changed_webhook_hands_its_queue_to_its_successor(notes: Make) -> None:
    with receiver(delay_s=1.2) as slow, receiver() as fast:
        n = notes(WebhookSettings(url=slow.url, name="ops", timeout=timedelta(seconds=5)))
        for i in range(3):
            events.publish("index_built", "main", f"event {i}")
        assert until(lambda: slow.requests == 1)  # the first is in flight, two wait
        t0 = time.monotonic()
        n.update(NotificationSettings(webhooks=(WebhookSettings(url=fast.url, name="ops"),)))
        assert time.monotonic() - t0 < 1.5  # the old channel got RELOAD_DRAIN_S, not its whole queue's time
        assert [r.body["summary"] for r in fast.wait_for(2)] == ["event 1", "event 2"]
        assert [r.body["summary"] for r in slow.wait_for(1)] == ["event 0"]
        assert until(lambda: n.stats.copy()[0] == {"ops": 3}) and n.stats.copy()[2] == {}


def test_metrics(notes: Make) -> None:
    with receiver(statuses=[404]) as rec, receiver(delay_s=1.0) as slow:
        n = notes(WebhookSettings(url=rec.url, name="ops", events=("index_built",)),
                  WebhookSettings(url=slow.url, name="slow", attempts=1, timeout=timedelta(milliseconds=300),
                                  events=("index_kept",)), queue_size=1)
        events.publish("index_built", "main", "one")  # 404: failed, not retried
        assert until(lambda: n.stats.copy()[1].get(("ops", "http_4xx")) == 1)
        events.publish("index_built", "main", "two")  # delivered
        for _ in range(3):  # one in flight, one queued: at least one dropped
            events.publish("index_kept", "main", "kept")
        assert until(lambda: n.stats.copy()[0].get("ops") == 1 and ("slow", "timeout") in n.stats.copy()[1])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NotificationCollector(n))
    text = generate_latest(registry).decode()
    assert 'indexd_notifications_sent_total{webhook="ops"} 1.0' in text
    assert 'indexd_notifications_failed_total{reason="http_4xx",webhook="ops"} 1.0' in text
    assert 'indexd_notifications_failed_total{reason="timeout",webhook="slow"}' in text
    assert 'indexd_notifications_dropped_total{reason="queue_full",webhook="slow"}' in text
    assert 'indexd_notifications_queued{webhook="ops"} 0.0' in text


def test_a_cli_command_waits_for_its_events_at_most_drain_timeout() -> None:
    with receiver() as rec:
        live = NotificationSettings(webhooks=(WebhookSettings(url=rec.url),), drain_timeout=timedelta(seconds=3))
        with delivering(live, backoff=FAST) as n:
            events.publish("pause_started", "main", "paused")
        assert len(rec.received) == 1 and n is not None  # delivered before the command ends
    dead = NotificationSettings(webhooks=(WebhookSettings(url=dead_url(), name="dead", retry_for=timedelta(minutes=1),
                                                          attempts=20),),
                                drain_timeout=timedelta(milliseconds=500))
    t0 = time.monotonic()
    with delivering(dead, backoff=Backoff(initial_s=0.2, max_s=1, jitter_s=0)) as n:
        events.publish("pause_started", "main", "paused")
    took = time.monotonic() - t0
    assert took < 1.5, f"the command waited {took:.1f}s"
    assert n is not None and until(lambda: n.stats.copy()[1] == {("dead", "connection"): 1}, timeout=3)
    assert events.subscribed() == 0
    with delivering(NotificationSettings()) as nothing:
        assert nothing is None and events.subscribed() == 0


def test_a_rotated_token_is_used_at_once(notes: Make, token_file: str) -> None:
    with receiver() as rec:
        notes(WebhookSettings(url=rec.url, token_file=token_file))
        events.publish("index_built", "main", "one")
        rec.wait_for(1)
        Path(token_file).write_text("tok-rotated\n", encoding="utf-8")
        events.publish("index_built", "main", "two")
        got = rec.wait_for(2)
    assert [r.headers["Authorization"] for r in got] == [f"Bearer {TOKEN}", "Bearer tok-rotated"]


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    exact = Backoff(initial_s=1.0, max_s=30.0, jitter_s=1.0, rand=lambda low, high: 0.0)
    assert [exact.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    highest = Backoff(initial_s=1.0, max_s=30.0, jitter_s=1.0, rand=lambda low, high: high)
    assert highest.delay(1) == 2.0 and highest.delay(9) == 31.0
    real = Backoff(initial_s=0.5, max_s=4.0, jitter_s=0.25)
    assert all(0.5 <= real.delay(1) <= 0.75 for _ in range(100))

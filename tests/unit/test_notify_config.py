"""The notifications section: every broken webhook names its key path and line; production checks for tokens."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from indexd.config.checks import production_problems
from indexd.config.load import load_settings
from indexd.config.schema import NotificationSettings, Settings, WebhookSettings
from indexd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HEAD = "databases:\n  - name: main\n    dsn: postgresql://indexd@127.0.0.1:5432/app\n"


def _write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "indexd.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return str(path)


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, body), env={})
    return caught.value.problems


def test_a_full_webhook_section_loads(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n", encoding="utf-8")
    settings = load_settings(_write(tmp_path, f"""\
        notifications:
          queue_size: 50
          drain_timeout: 2s
          webhooks:
            - url: https://hooks.example.com/services/T/B/X
              format: slack
              events: [pause_started, pause_ended]
            - url: http://127.0.0.1:8080/indexd
              name: local
              token_file: {token}
              timeout: 2s
              attempts: 3
              retry_for: 30s
        """), env={})
    n = settings.notifications
    assert n.queue_size == 50 and n.drain_timeout == timedelta(seconds=2)
    slack, local = n.webhooks
    assert slack.format == "slack" and slack.events == ("pause_started", "pause_ended")
    assert local.name == "local" and local.token_file == str(token) and local.format == "json"
    assert (local.timeout, local.attempts, local.retry_for) == (timedelta(seconds=2), 3, timedelta(seconds=30))
    assert "services" not in repr(slack)  # the URL's path can be a secret: not in reprs either


def test_no_section_means_no_webhooks(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, ""), env={}).notifications == NotificationSettings()


def test_every_broken_webhook_is_named_with_its_line(tmp_path: Path) -> None:
    found = _problems(tmp_path, f"""\
        notifications:
          webhooks:
            - url: ftp://files.example.com/drop
            - url: https://hooks.example.com/x
              events: [index_built, index_bilt]
            - url: https://hooks.example.com/y
              token_file: {tmp_path}/missing.token
            - url: https://ops:hunter2@hooks.example.com/z
            - url: https://hooks.example.com/w
              events: []
              format: teams
              timeout: 0s
            - format: json
        """)
    assert found == [
        "notifications.webhooks[0].url (line 6): expected an http:// or https:// URL, not 'ftp'",
        "notifications.webhooks[1].events[1] (line 8): must be one of index_built, index_kept, index_reverted, "
        "build_failed, backup_failed, test_restore_failed, pause_started, pause_ended, leadership_gained, "
        "leadership_lost (got 'index_bilt')",
        f"notifications.webhooks[2].token_file (line 10): {tmp_path}/missing.token does not exist; create it "
        "(mode 600) with the bearer token, or remove token_file",
        "notifications.webhooks[3].url (line 11): the URL carries credentials; remove them and put a bearer "
        "token in token_file",
        "notifications.webhooks[4].events (line 13): names no event; leave events out to send every event",
        "notifications.webhooks[4].format (line 14): must be one of json, slack (got 'teams')",
        "notifications.webhooks[4].timeout (line 15): must be between 100ms and 5m (got '0s')",
        "notifications.webhooks[5] (line 16): missing required key 'url'",
    ]
    assert not any("hunter2" in p or "/drop" in p for p in found)


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty; write the bearer token into it"),
    ("two words\n", "holds more than one word or a control character"),
])
def test_a_token_file_must_hold_one_token(tmp_path: Path, content: str, message: str) -> None:
    token = tmp_path / "token"
    token.write_text(content, encoding="utf-8")
    (problem,) = _problems(tmp_path, f"notifications:\n  webhooks:\n    - url: https://h.example.com/\n"
                                     f"      token_file: {token}\n")
    assert problem.startswith("notifications.webhooks[0].token_file (line 7): ") and message in problem
    assert "two words" not in problem


def test_bad_url_shapes(tmp_path: Path) -> None:
    found = _problems(tmp_path, """\
        notifications:
          webhooks:
            - url: "https://h.example.com:99999/x"
            - url: "https:///no-host"
            - url: hooks.example.com/x
        """)
    assert found == [
        "notifications.webhooks[0].url (line 6): not a valid URL (its host or port cannot be read)",
        "notifications.webhooks[1].url (line 7): the URL names no host",
        "notifications.webhooks[2].url (line 8): expected an http:// or https:// URL, not 'one without a scheme'",
    ]


def test_queue_and_drain_bounds(tmp_path: Path) -> None:
    found = _problems(tmp_path, "notifications:\n  queue_size: 0\n  drain_timeout: 1m\n")
    assert found == ["notifications.queue_size (line 5): must be between 1 and 100000 (got 0)",
                     "notifications.drain_timeout (line 6): must be between 0s and 10s (got '1m')"]


def test_production_checks_token_files_and_clear_text(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok\n", encoding="utf-8")
    os.chmod(token, 0o644)
    hooks = (WebhookSettings(url="http://hooks.example.com/x", token_file=str(token)),
             WebhookSettings(url="http://127.0.0.1:9000/x"),
             WebhookSettings(url="https://hooks.example.com/y", token_file=str(token)))
    settings = Settings(environment="production", notifications=NotificationSettings(webhooks=hooks))
    found = [p for p in production_problems(settings, None, env={}) if p.startswith("notifications")]
    assert found == [
        f"notifications.webhooks[0].token_file: {token} is readable by group or others; chmod 600 it",
        "notifications.webhooks[0].url: plain http to hooks.example.com sends every event and the bearer token "
        "in clear text; use https",
        f"notifications.webhooks[2].token_file: {token} is readable by group or others; chmod 600 it",
    ]
    os.chmod(token, 0o600)
    found = [p for p in production_problems(settings, None, env={}) if p.startswith("notifications")]
    assert found == [found[0]] and "plain http" in found[0]


def test_the_shipped_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = (REPO / "indexpilot_config.yaml").read_text(encoding="utf-8")
    block = text[text.index("# notifications:"):]
    uncommented = "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines() if line.startswith("#"))
    token = tmp_path / "webhook.token"
    token.write_text("tok\n", encoding="utf-8")
    uncommented = uncommented.replace("/etc/indexd/webhook.token", str(token))
    settings = load_settings(_write(tmp_path, uncommented + "\n"), env={})
    assert [h.format for h in settings.notifications.webhooks] == ["slack", "json"]
    assert settings.notifications.webhooks[0].events[0] == "build_failed"

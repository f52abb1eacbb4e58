"""http.listen: one parser, so check-config and the server agree on every value."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexd.config.listen import ListenAddress, listen_address, parse_listen
from indexd.config.load import load_settings
from indexd.config.schema import HttpSettings, Settings
from indexd.embedded import free_port
from indexd.errors import ConfigError
from indexd.service.http import HttpServer
from indexd.service.metrics import Metrics
from indexd.service.runtime import Runtime

GOOD = """\
databases:
  - name: main
    dsn: postgresql://indexd@127.0.0.1:5432/app
http:
  listen: "{listen}"
"""

ACCEPTED = {
    "127.0.0.1:9470": ListenAddress("127.0.0.1", 9470),
    " localhost:1 ": ListenAddress("localhost", 1),
    "metrics.example.org:65535": ListenAddress("metrics.example.org", 65535),
    "0.0.0.0:9470": ListenAddress("0.0.0.0", 9470),
    "[::1]:9470": ListenAddress("::1", 9470),
    "[::]:9470": ListenAddress("::", 9470),
}
REJECTED = {
    ":9470": "the host is missing",
    "127.0.0.1:0.0.0.0:5520": "more than one ':'",
    "::1:9470": "more than one ':'",
    "localhost": "there is no port",
    "127.0.0.1:": "the port must be a number from 1 to 65535",
    "127.0.0.1:0": "the port must be a number from 1 to 65535",
    "127.0.0.1:65536": "the port must be a number from 1 to 65535",
    "127.0.0.1:94x0": "the port must be a number from 1 to 65535",
    "127.0.0.1:٩٤٧٠": "the port must be a number from 1 to 65535",  # Arabic-Indic digits are digits to str
    "999.1.1.1:9470": "'999.1.1.1' is no IPv4 address",
    "[127.0.0.1]:9470": "'127.0.0.1' is no IPv6 address",
    "[::1:9470": "more than one ':'",
    "host_name:9470": "'host_name' is no host name",
    "-bad.example:9470": "'-bad.example' is no host name",
}


@pytest.mark.parametrize(("text", "address"), ACCEPTED.items())
def test_accepted_forms(text: str, address: ListenAddress) -> None:
    assert parse_listen(text) == address
    assert listen_address(HttpSettings(listen=text)) == address


@pytest.mark.parametrize(("text", "why"), REJECTED.items())
def test_check_config_and_the_server_reject_the_same_values(tmp_path: Path, text: str, why: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(GOOD.format(listen=text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), env={})
    (problem,) = caught.value.problems
    assert problem.startswith("http.listen (line 5): expected host:port such as 127.0.0.1:9470 or [::1]:9470")
    assert why in problem
    with pytest.raises(ConfigError) as served:
        listen_address(HttpSettings(listen=text))
    assert served.value.problems == [problem.replace(" (line 5)", "")]


@pytest.mark.parametrize(("text", "loopback"), [
    ("127.0.0.1:1", True), ("127.9.9.9:1", True), ("localhost:1", True), ("LOCALHOST.:1", True), ("[::1]:1", True),
    ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.5:1", False), ("db-host:1", False),
    ("localhost.example.org:1", False),
])
def test_loopback(text: str, loopback: bool) -> None:
    assert parse_listen(text).is_loopback is loopback


def test_a_local_client_reaches_a_wildcard_bind_on_loopback() -> None:
    assert parse_listen("0.0.0.0:9470").client_url("/health") == "http://127.0.0.1:9470/health"
    assert parse_listen("[::]:9470").client_url("/x") == "http://[::1]:9470/x"
    assert parse_listen("[::1]:9470").client_url("/x") == "http://[::1]:9470/x"
    assert str(parse_listen("[::1]:9470")) == "[::1]:9470" and str(parse_listen("localhost:80")) == "localhost:80"


def test_the_server_itself_refuses_to_serve_other_hosts_without_a_token() -> None:
    server = HttpServer(Runtime(Settings()), Metrics(Runtime(Settings())))
    port = free_port()
    with pytest.raises(ConfigError) as caught:
        server.start(HttpSettings(listen=f"0.0.0.0:{port}"))
    assert caught.value.problems[0].startswith(f"http.listen: 0.0.0.0:{port} is reachable from other hosts")
    assert server.address is None

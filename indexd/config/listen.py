"""`http.listen`: the one reading of the address the HTTP endpoints bind to.

Configuration checks, the server and `status` (which asks the running daemon) all parse it here, so a value
the check accepts is one the server can bind, and the reverse. Accepted forms:

* `HOST:PORT` with an IPv4 address or a host name: `127.0.0.1:9470`, `localhost:9470`, `0.0.0.0:9470`;
* `[IPv6]:PORT`: `[::1]:9470`, `[::]:9470`.

The port is 1-65535. An empty host (`:9470`) is rejected rather than read as "every address": binding beyond
loopback needs `http.token_file`, so it must be asked for explicitly (`0.0.0.0:9470`). Names are not resolved
here; only `localhost` counts as loopback among them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from indexd.config.schema import HttpSettings
from indexd.errors import ConfigError

EXAMPLES = "such as 127.0.0.1:9470 or [::1]:9470"
_BRACKETED = re.compile(r"\[([^\[\]]*)\]:([^:]*)")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # bind-to-all addresses -> where a local client connects


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP address (IPv6 without brackets) or a host name
    port: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host.rstrip(".").lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def client_url(self, path: str) -> str:
        """The URL a client on this machine uses to reach the server bound here."""
        host = _WILDCARDS.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"


def listen_address(settings: HttpSettings) -> ListenAddress:
    """The configured address, or ConfigError naming the key."""
    try:
        return parse_listen(settings.listen)
    except ValueError as exc:
        raise ConfigError(f"http.listen: {exc}") from None


def parse_listen(text: str) -> ListenAddress:
    """The address in `text`; ValueError with an operator-facing message when it is not one of the forms above."""
    value = text.strip()
    m = _BRACKETED.fullmatch(value)
    if m:
        host, port = m.group(1), m.group(2)
        _check_ipv6(host, text)
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: there is no port")
        _check_host(host, text)
    return ListenAddress(host, _port(port, text))


def _check_ipv6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: {host!r} is no IPv6 address") from None


def _check_host(host: str, text: str) -> None:
    if not host:
        raise ValueError(
            f"expected host:port {EXAMPLES}, got {text!r}: the host is missing; write 127.0.0.1:PORT for this "
            "machine only, or 0.0.0.0:PORT for every address (which needs http.token_file)"
        )
    if ":" in host or "[" in host or "]" in host:
        raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: more than one ':' (an IPv6 address goes "
                         "in brackets, e.g. [::1]:9470)")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: {host!r} is no IPv4 address") from None
    elif not _HOST_NAME.fullmatch(host) or len(host) > 253:
        raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: {host!r} is no host name")


def _port(port: str, text: str) -> int:
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"expected host:port {EXAMPLES}, got {text!r}: the port must be a number from 1 to 65535")
    return int(port)

"""Whether a DSN reaches its database on this very host: then this host's CPU is the database server's.

libpq connects through a unix socket when no host is given (or PGHOST is unset) or when the host is a directory
(it starts with '/' or '@'), and over loopback when the host is localhost or a 127.0.0.0/8 or ::1 address.
Several hosts (a failover list) are local only when every one of them is. `hostaddr` wins over `host`.
"""

from __future__ import annotations

import ipaddress
import os

from indexd.dsn import parse_dsn

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_local_host(host: str) -> bool:
    """One libpq host entry: a socket directory, a loopback name or a loopback address."""
    host = host.strip()
    if not host or host.startswith(("/", "@")):
        return True
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local(dsn: str, environ: dict[str, str] | None = None) -> bool:
    """Whether every host this DSN may connect to is on this machine (PGHOST/PGHOSTADDR when it names none)."""
    env = os.environ if environ is None else environ
    params = parse_dsn(dsn)
    hosts = params.get("hostaddr") or params.get("host") or env.get("PGHOSTADDR") or env.get("PGHOST") or ""
    return all(is_local_host(h) for h in hosts.split(","))

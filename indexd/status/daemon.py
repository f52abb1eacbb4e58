"""Which daemon `status` may ask: the one that holds the database's leader lock, found from the database itself.

The leader lock's holder is a backend; pg_stat_activity gives its client address and port. When that client is
on this host, the local process owning that TCP connection is found (psutil), and only the HTTP endpoints that
very process listens on are asked for /health, whose `pid` must be that process's. Whatever else answers on
some port (another daemon, an unrelated server) is never presented as this database's daemon. When the holder
is on another host, connects over a local socket, or its process is not visible to this user, status says who
holds leadership and asks no HTTP endpoint at all.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from indexd.dsn import parse_dsn
from indexd.errors import ConfigError

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 3.0
Fetch = Callable[[str, str | None], dict[str, Any] | None]


@dataclass(frozen=True)
class Holder:
    """The leader lock's holder as the database reports it."""

    backend_pid: int
    client_addr: str | None  # None: a local (unix) socket
    client_port: int | None
    server_port: int


@dataclass(frozen=True)
class Found:
    """What status learnt about a holder: its local process (if any), and its /health when verified."""

    note: str  # for people: who holds leadership, and why its daemon was or was not asked
    os_pid: int | None = None
    health: dict[str, Any] | None = None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def is_this_host(addr: str) -> bool:
    """A loopback address, or one of this host's interface addresses."""
    ip = _ip(addr)
    if ip is None:
        return False
    if ip.is_loopback:
        return True
    own = {_ip(a.address) for nics in psutil.net_if_addrs().values() for a in nics}
    return ip in own


def owning_process(addr: str, port: int, server_port: int) -> int | None:
    """The local process whose TCP connection goes from (addr, port) to the server's port; None when unseen."""
    want = _ip(addr)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError) as exc:
        log.debug("cannot list this host's connections: %s", exc)
        return None
    for c in conns:
        if (c.laddr and c.raddr and c.pid and c.laddr.port == port and c.raddr.port == server_port
                and _ip(c.laddr.ip) == want):
            return int(c.pid)
    return None


def listening_endpoints(os_pid: int) -> list[str]:
    """http://host:port of every TCP socket the process listens on (wildcards asked on loopback)."""
    try:
        conns = psutil.Process(os_pid).net_connections(kind="tcp")
    except (psutil.Error, OSError) as exc:
        log.debug("cannot list the sockets of process %s: %s", os_pid, exc)
        return []
    out = []
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.laddr:
            continue
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(c.laddr.ip, c.laddr.ip)
        out.append(f"http://{'[' + host + ']' if ':' in host else host}:{c.laddr.port}")
    return sorted(set(out))


def fetch_health(base: str, token: str | None) -> dict[str, Any] | None:
    """GET base/health; None when it does not answer with a JSON object."""
    req = urllib.request.Request(f"{base}/health")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            doc = json.loads(resp.read().decode())
    except (OSError, ValueError) as exc:
        log.debug("%s/health did not answer: %s", base, exc)
        return None
    return doc if isinstance(doc, dict) else None


def _where(holder: Holder) -> str:
    if holder.client_addr is None:
        return "a local socket"
    return f"{holder.client_addr}:{holder.client_port}"


def identify(holder: Holder | None, token: str | None, *, fetch: Fetch = fetch_health,
             cache: dict[int, Found] | None = None) -> Found:
    """Who leads, and the leader's own /health when it runs on this host and proves to be that process."""
    if holder is None:
        return Found("no process holds the leader lock: no daemon leads this database")
    what = f"leader lock held by backend {holder.backend_pid}, connected from {_where(holder)}"
    if holder.client_addr is None or holder.client_port is None:
        return Found(f"{what}; its process cannot be told from a local socket: no daemon asked")
    if not is_this_host(holder.client_addr):
        return Found(f"{what}, on another host: its daemon is not asked from here")
    os_pid = owning_process(holder.client_addr, holder.client_port, holder.server_port)
    if os_pid is None:
        return Found(f"{what}, on this host, by a process not visible to this user: no daemon asked")
    if cache is not None and os_pid in cache:
        return cache[os_pid]
    found = _ask(what, os_pid, token, fetch)
    if cache is not None:
        cache[os_pid] = found
    return found


def _ask(what: str, os_pid: int, token: str | None, fetch: Fetch) -> Found:
    endpoints = listening_endpoints(os_pid)
    for base in endpoints:
        health = fetch(base, token)
        if health is not None and health.get("pid") == os_pid:
            return Found(f"{what}: process {os_pid} on this host, its /health at {base}", os_pid, health)
    where = f" (asked {', '.join(endpoints)})" if endpoints else ""
    return Found(f"{what}: process {os_pid} on this host, whose HTTP endpoint does not answer as its "
                 f"/health{where}", os_pid)


def matching_database(health: dict[str, Any], name: str, dbname: str) -> dict[str, Any] | None:
    """The daemon's entry for this database: same name and leading, else the one leading database whose DSN
    names the same database."""
    entries = health.get("databases") or {}
    if not isinstance(entries, dict):
        return None
    same = entries.get(name)
    if isinstance(same, dict) and same.get("leader"):
        return same
    leading = [e for e in entries.values() if isinstance(e, dict) and e.get("leader")
               and _dbname(str(e.get("dsn", ""))) == dbname]
    return leading[0] if len(leading) == 1 else None


def _dbname(dsn: str) -> str | None:
    try:
        return parse_dsn(dsn).get("dbname")
    except ConfigError:
        return None

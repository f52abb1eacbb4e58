"""A private, throw-away PostgreSQL cluster built from the local server binaries.

Used by `indexd demo` and by the test suite. PostgreSQL refuses to run as root, so when we are root the
cluster's files belong to an unprivileged OS user (``postgres`` by default) and every server command runs as
that user. The server listens on 127.0.0.1 and on a socket directory of its own; nothing else is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg2
from psycopg2 import sql

from indexd.errors import IndexdError

log = logging.getLogger(__name__)

SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_stat_statements'",  # and pg_qualstats when installed (see init)
    "pg_stat_statements.track": "all",
    "pg_stat_statements.max": "10000",
    "track_io_timing": "on",
    "max_connections": "100",
    "shared_buffers": "128MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
# pg_qualstats (predicates with their real constants), loaded when its library is installed; it samples one
# statement in max_connections by default: every one here, so a short workload shows its constants.
QUALSTATS = "pg_qualstats"
QUALSTATS_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "'pg_stat_statements,pg_qualstats'",
    "pg_qualstats.sample_rate": "1",
    # Room for every statement shape a long test run makes: pg_qualstats_reset() keeps the example queries, and
    # once their table is full new examples compete with old ones for a slot.
    "pg_qualstats.max": "20000",
}

# Superuser over loopback trusts; every other role must give its password, so wrong passwords can be tested.
HBA = """\
local   all           all                       trust
host    all           postgres   127.0.0.1/32   trust
host    replication   postgres   127.0.0.1/32   trust
host    all           all        127.0.0.1/32   scram-sha-256
"""


class ClusterError(IndexdError):
    """The embedded cluster could not be created, started or stopped."""


def find_bindir() -> Path:
    """Where the PostgreSQL server binaries are: $INDEXD_PG_BINDIR, pg_config, or Debian's layout."""
    candidates: list[Path] = []
    if os.environ.get("INDEXD_PG_BINDIR"):
        candidates.append(Path(os.environ["INDEXD_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
        "(Debian: apt-get install postgresql-15 postgresql-15-hypopg) or set INDEXD_PG_BINDIR"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The OS user to run the server as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("INDEXD_PG_OS_USER", "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise ClusterError(
            f"running as root and there is no OS user {name!r} to run PostgreSQL as; "
            "create one (useradd --system postgres) or set INDEXD_PG_OS_USER"
        ) from exc
    return name


@dataclass
class EmbeddedCluster:
    """One private PostgreSQL cluster: initdb, start, stop, restart, kill, pause, drop."""

    base_dir: Path | None = None
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"

    def __post_init__(self) -> None:
        self.bindir = find_bindir()
        self.os_user = _run_as()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="indexd-pg-"))
        self.base_dir = Path(self.base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        if not self.port:
            self.port = free_port()

    # ---- commands -------------------------------------------------------------------------------------
    def _cmd(self, args: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the unprivileged OS user when we are root."""
        user = group = None
        extra: list[int] | None = None
        if self.os_user:
            user, group, extra = self.os_user, pwd.getpwnam(self.os_user).pw_gid, []
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, cwd=self.base_dir, check=False,
            user=user, group=group, extra_groups=extra,
        )
        if check and proc.returncode != 0:
            tail = self.server_log_tail()
            raise ClusterError(
                f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}\n{tail}"
            )
        return proc

    def _chown(self, path: Path) -> None:
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> EmbeddedCluster:
        """Create the data directory (initdb) and write our server settings."""
        assert self.base_dir is not None
        self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        self._chown(self.base_dir)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        self._cmd(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            timeout=300,
        )
        conf = dict(SERVER_SETTINGS)
        if self.has_library(QUALSTATS):
            conf.update(QUALSTATS_SETTINGS)
        conf.update({"port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'"})
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        (self.data_dir / "pg_hba.conf").write_text(HBA, encoding="utf-8")
        return self

    def start(self, timeout: float = 60) -> EmbeddedCluster:
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        self._cmd(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
             "-t", str(int(timeout)), "start"],
            timeout=timeout + 10,
        )
        return self

    def make_standby(self, timeout: float = 120) -> EmbeddedCluster:
        """A hot standby of this running cluster, started: `pg_basebackup -R` over loopback as the cluster's OS
        user, then a port and socket folder of its own. The caller destroys it (before this one, ideally)."""
        standby = EmbeddedCluster(superuser=self.superuser)
        assert standby.base_dir is not None
        os.chmod(standby.base_dir, 0o755)
        standby._chown(standby.base_dir)
        standby.socket_dir.mkdir(exist_ok=True)
        standby._chown(standby.socket_dir)
        self._cmd([str(self.bindir / "pg_basebackup"), "-D", str(standby.data_dir), "-h", "127.0.0.1", "-p",
                   str(self.port), "-U", self.superuser, "-R", "-X", "stream", "-c", "fast", "--no-sync"],
                  timeout=timeout)
        # The copied settings name this cluster's port and socket folder: the last line of a key wins.
        with open(standby.data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as fh:
            fh.write(f"port = {standby.port}\nunix_socket_directories = '{standby.socket_dir}'\n")
        return standby.start(timeout)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_running():
            return
        self._cmd(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)),
             "stop"],
            timeout=timeout + 10,
        )

    def restart(self, mode: str = "fast", timeout: float = 60) -> None:
        self.stop(mode, timeout)
        self.start(timeout)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _server_pids(self) -> list[int]:
        pid = self.postmaster_pid()
        if pid is None:
            return []
        try:
            proc = psutil.Process(pid)
            return [pid] + [c.pid for c in proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash, as abrupt as it gets."""
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections hang, nothing answers."""
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        """Stop the server at once and delete every file of the cluster."""
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self.stop("immediate", timeout=30)
        if self.is_running():
            self.kill()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def server_log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- clients ----------------------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        auth = user or self.superuser
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self.dsn(dbname), connect_timeout=10, application_name="indexd-embedded")
        conn.autocommit = autocommit
        return conn

    def execute(self, statement: str | sql.Composable, dbname: str = "postgres") -> None:
        self.fetch(statement, dbname)

    def fetch(self, statement: str | sql.Composable, dbname: str = "postgres",
              params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own; its rows ([] for a statement that returns none)."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    def create_database(self, name: str, extensions: tuple[str, ...] | None = None) -> str:
        """Create a database with the given extensions (by default pg_stat_statements, HypoPG and, when the
        server loads it, pg_qualstats); returns its DSN."""
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if extensions is None:
            extensions = ("pg_stat_statements", "hypopg") + ((QUALSTATS,) if self.preloads(QUALSTATS) else ())
        for ext in extensions:
            self.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)), dbname=name)
        return self.dsn(name)

    def clone_databases(self, template: str, names: list[str], parallel: int = 8) -> None:
        """Create many databases as copies of `template` (extensions and all), `parallel` at a time: the
        FILE_COPY strategy's checkpoints are shared by concurrent copies, a few milliseconds each that way."""
        def copy(part: list[str]) -> None:
            conn = self.connect()
            try:
                with conn.cursor() as cur:
                    for name in part:
                        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                            sql.Identifier(name), sql.Identifier(template)))
            finally:
                conn.close()

        with ThreadPoolExecutor(max(1, parallel)) as pool:
            for done in [pool.submit(copy, names[i::parallel]) for i in range(parallel)]:
                done.result()

    def drop_database(self, name: str) -> None:
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def has_library(self, name: str) -> bool:
        """Whether the server's shared library of this name is installed on this host."""
        libdirs = [self.bindir.parent / "lib", self.bindir.parent / "lib" / "postgresql"]  # Debian, source builds
        return any((d / f"{name}.so").exists() for d in libdirs)

    def preloads(self, name: str) -> bool:
        """Whether the running server has this library in shared_preload_libraries."""
        rows = self.fetch("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'")
        return bool(rows) and name in [part.strip() for part in str(rows[0][0]).split(",")]

    def has_extension(self, name: str) -> bool:
        """Whether the extension is installed on this host (its control file exists)."""
        sharedirs = list(self.bindir.parent.parent.glob("share/postgresql/*/extension"))
        sharedirs += list(Path("/usr/share/postgresql").glob("*/extension"))
        return any((d / f"{name}.control").exists() for d in sharedirs)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


@contextlib.contextmanager
def throwaway_cluster(**kwargs: object) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(**kwargs)  # type: ignore[arg-type]
    try:
        yield cluster.start()
    finally:
        cluster.destroy()

"""scripts/install.sh for real on this machine: a virtualenv service install on Debian, run twice, removed.

The install happens once per run (a module fixture: it downloads the dependencies). What the test created
that the uninstaller keeps on purpose (configuration, data, logs, the indexd user) is removed afterwards, so
the machine is left as it was found.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from indexd.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install.sh"
VENV = Path("/opt/indexd")
BIN = Path("/usr/local/bin/indexd")
UNIT = Path("/etc/systemd/system/indexd.service")
SHARE = Path("/usr/share/indexd")
CONF_DIR = Path("/etc/indexd")
CONF = CONF_DIR / "indexpilot_config.yaml"
STATE_DIR = Path("/var/lib/indexd")
LOG_DIR = Path("/var/log/indexd")
KEPT = (CONF_DIR, STATE_DIR, LOG_DIR)
# Nothing of the calling shell (PYTHONPATH pointing at this checkout above all) may reach the installed program.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass
class Install:
    first: subprocess.CompletedProcess[str]
    seconds: float
    created: list[Path] = field(default_factory=list)  # kept paths that did not exist before the test
    user_created: bool = False


def _installer(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=CLEAN_ENV, cwd="/")


def _as_indexd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "indexd", "--", str(BIN), *args], capture_output=True, text=True,
                          timeout=120, env=CLEAN_ENV, cwd="/")


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "the installer test needs root (it creates a user and writes to /opt, /etc and /var)"
    if not Path("/etc/debian_version").exists() or not shutil.which("apt-get"):
        return "the installer is for Debian (no /etc/debian_version or apt-get here)"
    if not shutil.which("runuser"):
        return "runuser (util-linux) is missing"
    present = [str(p) for p in (VENV, BIN, UNIT) if p.exists() or p.is_symlink()]
    if present:
        return f"indexd is installed on this machine ({', '.join(present)}); the test installs and removes it"
    if CONF.exists() and CONF.read_bytes() != (REPO / "indexpilot_config.yaml").read_bytes():
        return f"{CONF} holds a configuration of an earlier installation; the test would run on it"
    return None


def _cleanup(state: Install | None) -> None:
    if VENV.exists() or BIN.is_symlink() or UNIT.exists():
        _installer("--uninstall")
    if state is None:
        return
    for path in state.created:
        shutil.rmtree(path, ignore_errors=True)
    if state.user_created and _has_user("indexd"):
        subprocess.run(["userdel", "indexd"], check=False, capture_output=True)
    try:
        grp.getgrnam("indexd")
    except KeyError:
        return
    if state.user_created:
        subprocess.run(["groupdel", "indexd"], check=False, capture_output=True)


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    reason = _why_not_here()
    if reason:
        pytest.skip(reason)
    created = [p for p in KEPT if not p.exists()]
    user_created = not _has_user("indexd")
    state: Install | None = None
    try:
        t0 = time.monotonic()
        first = _installer()
        state = Install(first, time.monotonic() - t0, created, user_created)
        assert first.returncode == 0, first.stdout + first.stderr
        print(f"\ninstall.sh took {state.seconds:.1f}s")
        yield state
    finally:
        _cleanup(state or Install(subprocess.CompletedProcess([], 1, "", ""), 0.0, created, user_created))


def _mode_owner(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


def _assert_layout() -> None:
    assert _mode_owner(CONF_DIR) == (0o750, "root", "indexd")
    assert _mode_owner(CONF) == (0o640, "root", "indexd")
    for folder in (STATE_DIR, STATE_DIR / "backups", LOG_DIR):
        assert _mode_owner(folder) == (0o700, "indexd", "indexd"), folder
    assert BIN.is_symlink() and os.readlink(BIN) == str(VENV / "bin" / "indexd")
    assert UNIT.read_bytes() == (REPO / "config" / "indexd.service").read_bytes()
    assert stat.S_IMODE(UNIT.stat().st_mode) == 0o644


def test_help_and_usage_errors() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "--uninstall" in done.stdout and "postgresql-client-15" in done.stdout
    done = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown argument --frobnicate" in done.stderr
    done = subprocess.run(["bash", str(SCRIPT), "--venv", "relative/dir"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "absolute" in done.stderr


def test_installs_a_virtualenv_service(install: Install) -> None:
    _assert_layout()
    user = pwd.getpwnam("indexd")
    assert user.pw_dir == str(STATE_DIR) and user.pw_shell == "/usr/sbin/nologin"
    assert grp.getgrgid(user.pw_gid).gr_name == "indexd"
    assert user.pw_uid < 1000  # a system user
    # Debian's interpreter, and indexd as a copy in site-packages (not an editable link to this checkout).
    probe = ("import json, sys, indexd, importlib.resources as r;"
             "print(json.dumps([sys.base_prefix, sys.version_info[:2], indexd.__file__,"
             " sorted(p.name for p in r.files('indexd').joinpath('sql').iterdir())]))")
    done = subprocess.run([str(VENV / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                          env=CLEAN_ENV, cwd="/", timeout=60, check=True)
    base, version, module, sql_files = json.loads(done.stdout)
    assert base == "/usr" and version == [3, 11]
    assert module.startswith(str(VENV / "lib")), module
    assert "001_state.sql" in sql_files  # the migrations travel in the wheel
    assert os.access(SHARE / "scripts" / "backup.sh", os.X_OK)
    dashboard = REPO / "config" / "grafana" / "indexd.json"
    assert (SHARE / "grafana" / "indexd.json").read_bytes() == dashboard.read_bytes()
    assert (SHARE / "prometheus-alerts.yml").is_file()
    assert "no daemon-reload" in install.first.stdout or Path("/run/systemd/system").is_dir()


def test_installed_unit_passes_systemd_analyze(install: Install) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    done = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "indexd.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_shipped_config_checks_out_as_the_indexd_user(install: Install) -> None:
    done = _as_indexd("check-config", "--config", str(CONF))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration OK" in done.stdout
    # The production checks fault only what the shipped file says (a development default), never the modes
    # the installer gave its files and folders.
    done = _as_indexd("check-config", "--production", "--config", str(CONF))
    assert done.returncode == 2
    assert "environment" in done.stderr
    assert "chmod" not in done.stderr and "world-" not in done.stderr, done.stderr


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_daemon_runs_as_the_indexd_user_with_the_installed_layout(install: Install, tmp_path: Path) -> None:
    """The service as the unit runs it (its user, the installed config), writing its log where the config says;
    the configured database need not exist for the daemon to come up and stop cleanly."""
    port = free_port()
    env = dict(CLEAN_ENV, HOME=str(STATE_DIR), INDEXD_HTTP__LISTEN=f"127.0.0.1:{port}")
    user = pwd.getpwnam("indexd")
    out = open(tmp_path / "daemon.out", "w+", encoding="utf-8")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(BIN), "run", "--config", str(CONF)], env=env, cwd="/",
                            user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _live(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert proc.poll() is None and _live(port), (tmp_path / "daemon.out").read_text()
        log_file = LOG_DIR / "indexd.log"
        assert log_file.exists() and _mode_owner(log_file)[1] == "indexd"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            out.close()
    assert code == 0, (tmp_path / "daemon.out").read_text()[-4000:]


def test_second_run_keeps_the_config_and_repairs_modes(install: Install) -> None:
    edited = CONF.read_bytes() + b"\n# edited by the operator\n"
    CONF.write_bytes(edited)
    STATE_DIR.chmod(0o755)
    t0 = time.monotonic()
    again = _installer()
    print(f"\nsecond install.sh run took {time.monotonic() - t0:.1f}s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"kept the existing {CONF}" in again.stdout
    assert "created" not in again.stdout  # user, group and virtualenv were there already
    assert CONF.read_bytes() == edited
    _assert_layout()
    done = _as_indexd("check-config", "--config", str(CONF))
    assert done.returncode == 0, done.stdout + done.stderr


def test_uninstall_keeps_config_and_data(install: Install) -> None:
    before = CONF.read_bytes()
    done = _installer("--uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    for gone in (VENV, SHARE, UNIT):
        assert not gone.exists(), gone
    assert not BIN.exists() and not BIN.is_symlink()
    assert CONF.read_bytes() == before
    assert STATE_DIR.is_dir() and LOG_DIR.is_dir() and _has_user("indexd")
    assert "kept the configuration" in done.stdout
    again = _installer("--uninstall")  # nothing left to remove is no error
    assert again.returncode == 0, again.stdout + again.stderr

"""The shipped systemd unit: valid for systemd itself, and consistent with the daemon's own bounds."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from indexd.service.databases import STOP_BOUND_S
from indexd.service.status_view import LOOP_MAX_AGE_S, SCHEDULER_MAX_AGE_S

UNIT = Path(__file__).resolve().parents[2] / "config" / "indexd.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def _seconds(value: str) -> float:
    value = value.strip()
    for suffix, factor in (("min", 60), ("ms", 0.001), ("s", 1), ("h", 3600)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's binary exists: point it at a temporary copy of a real executable.
    binary = tmp_path / "indexd"
    shutil.copy2(shutil.which("true") or "/bin/true", binary)
    text = UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/indexd", str(binary))
    unit = tmp_path / "indexd.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "indexd.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_unit_matches_the_daemon() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "indexd"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].split()[1] == "run"
    # systemd must not kill a stop that is still within the daemon's own bound.
    assert _seconds(service["TimeoutStopSec"]) > STOP_BOUND_S
    # Pings come every WatchdogSec/2 while alive; a healthy daemon whose heartbeat is just under the
    # liveness threshold must still be pinged in time.
    watchdog = _seconds(service["WatchdogSec"])
    assert watchdog >= 2 * max(LOOP_MAX_AGE_S, SCHEDULER_MAX_AGE_S)


def test_unit_is_hardened() -> None:
    service = _unit()["Service"]
    expected = {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected.items():
        assert service[key] == value, key
    assert set(service["ReadWritePaths"].split()) == {"/var/lib/indexd", "/var/log/indexd"}

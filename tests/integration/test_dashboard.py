"""The Grafana dashboard: a well-formed model whose every panel query answers from a real Prometheus that scraped a
real daemon through a demo-sized cycle (workload, capture, advice, builds, verification, backup, test restore)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from indexd.config.load import load_settings
from indexd.config.schedule import JOB_ORDER
from indexd.embedded import EmbeddedCluster, free_port
from indexd.service.app import IndexdService
from indexd.simulate import drive, setup
from tests.conftest import _make_db
from tests.support.daemon import daemon_config, http_get, wait_until
from tests.support.prometheus import PrometheusServer

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "indexd.json"
METRIC = re.compile(r"\b(indexd_[a-z0-9_]+)\b(\{[^}]*\})?")
# What Grafana puts in for its own variables; the test's database and instance replace $database and $instance.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "1h"}
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def _targets(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, expression) of every query in the dashboard."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in _panels(board) for t in p.get("targets", [])]


def _legends(board: dict[str, Any]) -> dict[str, str]:
    return {f"{p['title']} / {t['refId']}": t.get("legendFormat", "") for p in _panels(board)
            for t in p.get("targets", [])}


def test_dashboard_is_a_grafana_model() -> None:
    board = _dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "database"):
        assert variables[name]["type"] == "query" and variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    panels = _panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("leader", "breaker", "pool", "pause", "builds", "verdicts", "pending advice", "saving",
                  "statements", "backup", "verified backup", "job failures"):
        assert topic in titles, topic
    # Every selector names the instance: the same database name may live behind several daemons.
    for where, expr in _targets(board):
        for name, matchers in METRIC.findall(expr):
            assert 'instance=~"$instance"' in matchers, (where, name)


@dataclass
class Monitored:
    prom: PrometheusServer
    instance: str
    metrics: str  # the daemon's /metrics text after the cycle


@pytest.fixture(scope="module")
def monitored(pg_cluster: EmbeddedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    """Prometheus scraping a daemon through one run of every job (what its start-up round does) after a short
    workload: capture, advise, apply (builds), verify, health, backup, test restore, prune."""
    tmp = tmp_path_factory.mktemp("dashboard")
    dbname = next(db := _make_db(pg_cluster, "dash"))
    try:
        dsn = pg_cluster.dsn(dbname)
        setup(dsn, "small")
        drive(dsn, "small", timedelta(seconds=4))
        port = free_port()
        cfg = daemon_config(tmp / "indexd.yaml", dsn, port=port, backups_dir=tmp / "backups")
        instance = f"127.0.0.1:{port}"
        prom = PrometheusServer([instance], log_dir=tmp)
        try:
            svc = IndexdService(load_settings(str(cfg), env={}), str(cfg), env={})
            svc.start()
            try:
                # Scraped before the round, so its counters' increases show in Prometheus.
                wait_until(lambda: prom.query(f'indexd_leader{{instance="{instance}"}} == 1'), timeout=60,
                           what="Prometheus to scrape the daemon as leader")
                svc.runner.round("main", JOB_ORDER)
                last = svc.runtime.databases["main"].last_runs
                assert set(last) == set(JOB_ORDER)
                assert not [rec for rec in last.values() if rec.outcome == "failed"], last
                # Scraped after the round: the series that only the round creates are in Prometheus.
                wait_until(lambda: prom.query(f'indexd_backup_last_verified_timestamp_seconds{{instance="{instance}"}}'
                                              f' and indexd_statements_captured{{instance="{instance}"}}'),
                           timeout=30, what="Prometheus to scrape the finished round")
                time.sleep(3)  # a few more samples, so rates and increases over the round have two points
                yield Monitored(prom, instance, http_get(port, "/metrics")[1])
            finally:
                svc.stop()
        finally:
            prom.stop()
    finally:
        db.close()


def _substitute(expr: str, instance: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr.replace("$instance", re.escape(instance).replace("\\", "\\\\")).replace("$database", "main")


def _answers(monitored: Monitored) -> dict[str, list[dict[str, Any]]]:
    """Every panel query's instant result, by panel title / refId; a query error fails the test."""
    out, errors = {}, []
    for where, expr in _targets(_dashboard()):
        body = monitored.prom.api("/api/v1/query", query=_substitute(expr, monitored.instance))
        if body.get("status") != "success":
            errors.append(f"{where}: {body.get('error', body)}")
        else:
            out[where] = list(body["data"]["result"])
    assert not errors, "\n".join(errors)
    return out


def test_every_panel_query_returns_series(monitored: Monitored) -> None:
    answers = _answers(monitored)
    empty = [where for where, series in answers.items() if not series]
    assert not empty, "queries without a series: " + ", ".join(empty)
    # Each {{label}} of a legend names a label its query's series really have.
    legends = _legends(_dashboard())
    for where, series in answers.items():
        for label in LEGEND_LABEL.findall(legends[where]):
            assert all(label in s["metric"] for s in series), (where, label, series[0]["metric"])


def _total(answers: dict[str, list[dict[str, Any]]], where: str) -> float:
    return sum(float(s["value"][1]) for s in answers[where])


def test_panels_show_the_cycle(monitored: Monitored) -> None:
    """What the round did is what the panels show: builds, verdicts awaited, statements, a verified backup."""
    answers = _answers(monitored)
    assert _total(answers, "Builds, reverts and failures / A") >= 1
    assert _total(answers, "Builds, reverts and failures / C") == 0
    assert _total(answers, "Verdicts / A") >= 1
    assert _total(answers, "Statements captured / A") >= 1
    assert _total(answers, "Job failures / A") == 0
    runs = {s["metric"]["outcome"]: float(s["value"][1]) for s in answers["Job runs by outcome / A"]}
    assert runs["ok"] >= len(JOB_ORDER) - 1 and runs["failed"] == 0
    assert {s["metric"]["job_name"] for s in answers["Time since each job last succeeded / A"]} >= {"capture", "backup"}
    assert 0 <= _total(answers, "Last good backup / A") < 300
    assert _total(answers, "Backup size and duration / A") > 0
    assert [s["value"][1] for s in answers["Database / A"]] == ["1"]
    assert [s["value"][1] for s in answers["Leader / A"]] == ["1"]
    assert [s["value"][1] for s in answers["Circuit breaker / A"]] == ["0"]


def _exposed(metrics: str) -> tuple[set[str], set[str]]:
    """(every name the daemon exposes, including families without samples now; names whose series carry a
    database label)."""
    names, per_database = set(), set()
    for family in text_string_to_metric_families(metrics):
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            if "database" in sample.labels:
                per_database.add(sample.name)
    for line in metrics.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names, per_database


def test_dashboard_metrics_exist_in_the_daemon_output(monitored: Monitored) -> None:
    names, per_database = _exposed(monitored.metrics)
    used = {name for _, expr in _targets(_dashboard()) for name, _ in METRIC.findall(expr)}
    assert used and used <= names, sorted(used - names)
    # A per-database series is always narrowed to the chosen databases.
    for where, expr in _targets(_dashboard()):
        for name, matchers in METRIC.findall(expr):
            if name in per_database:
                assert 'database=~"$database"' in matchers, (where, name)


def test_variable_queries_find_the_daemon(monitored: Monitored) -> None:
    """label_values(indexd_info, instance) and label_values(indexd_database_up{instance=~"$instance"}, database)."""
    variables = {v["name"]: v["query"] for v in _dashboard()["templating"]["list"]}
    assert variables["instance"] == "label_values(indexd_info, instance)"
    instances = {s["metric"]["instance"] for s in monitored.prom.query("indexd_info")}
    assert monitored.instance in instances
    selector = re.fullmatch(r"label_values\((.+), database\)", variables["database"])
    assert selector is not None
    found = monitored.prom.query(_substitute(selector.group(1), monitored.instance))
    assert {s["metric"]["database"] for s in found} == {"main"}

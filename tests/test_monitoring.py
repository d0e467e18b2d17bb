"""The alert rules and the Grafana dashboard shipped in deploy/: valid for Prometheus's own
promtool (Debian's prometheus package, scripts/test-deps), unit-tested alert by alert, and
naming only metrics that /metrics really exposes."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from .fixture_upstream import Upstream
from .servers import ROOT
from .wheels import make_wheel

RULES = ROOT / "deploy" / "prometheus" / "pypicache-rules.yml"
RULE_TESTS = RULES.with_name("pypicache-rules.test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "pypicache-dashboard.json"
ALERTS = {"PypicacheUpstreamFailing", "PypicacheErrorRate", "PypicacheDownloadsFailing",
          "PypicacheCacheOverCap", "PypicacheCacheNearCap", "PypicacheMetricsAbsent"}
_METRIC = re.compile(r"\bpypicache_[a-z0-9_]+")
# What Grafana puts in place of its variables before it sends a query.
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: run scripts/test-deps (Debian's prometheus package)"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def exposed_metrics(client) -> set[str]:
    """Every sample name /metrics can carry, from its TYPE lines (a counter or histogram is
    declared before it has any sample)."""
    names = set()
    for line in client.get("/metrics").data.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            elif kind == "histogram":
                names.update(name + suffix for suffix in ("_bucket", "_count", "_sum"))
            else:
                names.add(name)
    return names


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
            for target in panel["targets"]]


def test_promtool_checks_the_alert_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout
    assert {rule["alert"] for rule in rules()} == ALERTS


def test_promtool_unit_tests_fire_each_alert_and_keep_quiet_when_healthy():
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == ALERTS


def test_promtool_refuses_a_broken_rule(tmp_path):
    """The check above could not pass a rule Prometheus would refuse."""
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("> 0.5", "> > 0.5", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_the_dashboards_queries_are_promql_that_promtool_accepts(tmp_path):
    queries = dashboard_queries()
    for variable, value in _GRAFANA_VARIABLES.items():
        queries = [query.replace(variable, value) for query in queries]
    recorded = tmp_path / "dashboard-queries.yml"
    recorded.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"pypicache:panel_query_{i}", "expr": query} for i, query in enumerate(queries)]}]}))
    done = promtool("check", "rules", str(recorded))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_name_only_metrics_that_are_exposed(make_app):
    exposed = exposed_metrics(make_app(max_size=1 << 30).test_client())
    assert {"pypicache_cache_max_bytes", "pypicache_download_seconds_bucket"} <= exposed
    in_rules = {name for rule in rules() for name in _METRIC.findall(rule["expr"])}
    in_dashboard = {name for query in dashboard_queries() for name in _METRIC.findall(query)}
    assert in_rules - exposed == set()
    assert in_dashboard - exposed == set()
    assert len(in_dashboard) >= 10  # the check above looked at queries, not nothing


DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "templating": {"type": "object", "required": ["list"]},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "heatmap", "table"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": {"const": {"type": "prometheus", "uid": "${datasource}"}},
                "gridPos": {
                    "type": "object", "required": ["x", "y", "w", "h"],
                    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 23},
                                   "y": {"type": "integer", "minimum": 0},
                                   "w": {"type": "integer", "minimum": 1, "maximum": 24},
                                   "h": {"type": "integer", "minimum": 1}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr"],
                    "properties": {"expr": {"type": "string", "minLength": 1}}}},
            }}},
    },
}


def test_the_dashboard_loads_with_its_panels_laid_out_and_its_topics_covered():
    dashboard = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
    titles = {panel["title"] for panel in panels}
    assert {"Cache hits and misses", "Bytes served", "Upstream requests and errors",
            "Disk use and size cap", "Download durations"} <= titles


def test_metrics_give_the_size_cap_and_time_each_download(make_app, tmp_path):
    up = Upstream(tmp_path / "up").start()
    try:
        filename, data = make_wheel("timed", "1.0", payload=1 << 20)
        wheel = up.add_file("timed", filename, data)
        app = make_app(mirror_url=up.index_url, files_url=up.files_url, max_size=64 << 20)
        client = app.test_client()
        assert client.get("/packages" + wheel.path[len("/packages"):]).data == data
        deadline = time.monotonic() + 10
        while True:  # counted by the download's own thread once it has published the file
            metrics = client.get("/metrics").data.decode()
            if "pypicache_download_seconds_count 1.0" in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        up.stop()
    assert "pypicache_download_seconds_count 1.0" in metrics
    assert "pypicache_cache_max_bytes 6.7108864e+07" in metrics
    assert 'pypicache_download_seconds_bucket{le="+Inf"} 1.0' in metrics


@pytest.mark.parametrize("expression", [rule["expr"] for rule in rules()])
def test_every_rule_sums_over_instances(expression):
    """One node or several behind a balancer: a rule never compares one instance's series
    with another's, so every metric it reads is aggregated (or only tested for absence)."""
    for name in _METRIC.findall(expression):
        aggregated = re.search(rf"(sum|max)(\s+by\s*\([^)]*\))?\s*\((rate|increase)?\(?{name}\b",
                               expression)
        assert aggregated or f"absent({name}" in expression, (name, expression)

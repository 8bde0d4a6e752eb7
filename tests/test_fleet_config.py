"""The example Prometheus rules and Grafana dashboard use only metrics the console exports, with their labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.fleet.metrics import exposition
from agent.fleet.model import Fleet
from tests.test_console import NOW, alert, health, status
from tests.test_fleet_model import availability

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "config" / "prometheus" / "venue-agent-rules.yml"
DASHBOARD = REPO / "config" / "grafana" / "venue-agent-fleet.json"
METRIC = re.compile(r"\b(venue_agent_[a-z_]+)(?:\{([^}]*)\})?")


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a fleet with one venue of every kind of report."""
    fleet = Fleet("venues")
    fleet.apply("venues/hk/status", status("online", "b", 1), now=NOW)
    fleet.apply("venues/hk/health", health(), now=NOW)
    fleet.apply("venues/hk/availability", json.dumps(availability(False, 1)), now=NOW)
    fleet.apply("venues/hk/alerts", alert("order_failed", NOW), now=NOW)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition(fleet).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def check(expr: str, names: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, labels in METRIC.findall(expr):
        if name not in names:
            wrong.append(f"{name} is not exported")
            continue
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|=)", labels):
            if label not in names[name]:
                wrong.append(f"{name} has no label {label}")
    return wrong


def test_every_rule_uses_exported_metrics_and_labels() -> None:
    names = exported()
    rules: list[dict[str, Any]] = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    wrong = [f"{r['alert']}: {w}" for r in rules for w in check(r["expr"], names)]
    assert wrong == []
    assert all(r["annotations"]["summary"] for r in rules)


def test_every_dashboard_query_uses_exported_metrics_and_labels() -> None:
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert len(exprs) > 15
    wrong = [w for e in exprs for w in check(e, names)]
    assert wrong == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

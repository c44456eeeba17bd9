"""contrib/grafana/ecmpd.json: valid, and its queries use only what ecmpd exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ecmpd.metrics import EcmpdCollector
from tests.unit.fixtures import COUNTERS, STATUS

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "ecmpd.json"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
METRIC_RE = re.compile(r"\becmpd_[a-z_]+\b")
SELECTOR_RE = re.compile(r"\b(ecmpd_[a-z_]+)\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_RE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def exported() -> dict[str, set[str]]:
    """Every sample name ecmpd exports, with its label names (from a full status)."""
    collector = EcmpdCollector()
    collector.update(STATUS, COUNTERS)
    registry = CollectorRegistry()
    registry.register(collector)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    return names


def dashboard() -> dict[str, Any]:
    """The dashboard, parsed."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in data["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(data: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend format) of every target and query variable."""
    for panel in panels(data):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            yield f"${var['name']}", var["query"]["query"], ""


def test_dashboard_is_a_grafana_dashboard() -> None:
    data = dashboard()
    assert data["uid"] == "ecmpd-uplinks"
    assert isinstance(data["schemaVersion"], int)
    ids = [p["id"] for p in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(data):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = {p["title"] for p in panels(data)}
    for wanted in (
        "Uplink state",
        "Round-trip time per target",
        "Probe loss per target",
        "Throughput per interface",
        "Health transitions",
    ):
        assert wanted in titles


def test_every_query_uses_exported_metrics_and_labels() -> None:
    names = exported()
    seen: set[str] = set()
    for where, expr, legend in queries(dashboard()):
        used = set(METRIC_RE.findall(expr))
        assert used, f"{where}: {expr!r} uses no ecmpd metric"
        unknown = used - set(names)
        assert not unknown, f"{where}: {sorted(unknown)} not exported"
        seen |= used
        labels = set().union(*(names[m] for m in used)) | TARGET_LABELS
        for metric, matchers in SELECTOR_RE.findall(expr):
            for label in MATCHER_RE.findall(matchers):
                assert label in names[metric] | TARGET_LABELS, f"{where}: {metric}{{{label}}}"
        for group in GROUPING_RE.findall(expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels, f"{where}: by ({label})"
        for label in LEGEND_RE.findall(legend):
            assert label in labels, f"{where}: legend {{{{{label}}}}}"
    # The dashboard's purpose: state, RTT/loss, throughput and transitions are shown.
    for metric in (
        "ecmpd_uplink_state",
        "ecmpd_probe_rtt_avg_seconds",
        "ecmpd_probe_loss_ratio",
        "ecmpd_interface_bytes_total",
        "ecmpd_uplink_transitions_total",
    ):
        assert metric in seen, metric


def test_health_panels_keep_the_address_families_apart() -> None:
    # Health is per family: summing IPv4 and IPv6 would show a half-failed uplink as
    # neither up nor down, so these panels group and label by family too.
    per_family = {
        "Uplinks in service",
        "Transitions (24 h)",
        "Uplink state",
        "In the balancer",
        "Probes answered",
        "Health transitions",
    }
    checked: set[str] = set()
    for where, expr, legend in queries(dashboard()):
        if where not in per_family:
            continue
        checked.add(where)
        for group in GROUPING_RE.findall(expr):
            assert "family" in {g.strip() for g in group.split(",")}, f"{where}: {expr}"
        assert "family" in LEGEND_RE.findall(legend), f"{where}: legend {legend!r}"
    assert checked == per_family
    assert "family" in exported()["ecmpd_uplink_state"]
    assert "family" not in exported()["ecmpd_uplink_carrier"]  # the interface's, shared

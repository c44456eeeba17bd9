"""Smoke test of bench.failover: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

import subprocess
from typing import Any

from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns

CONFIG_KEYS = (
    "detection_bound_s",
    "restore_udp_s",
    "restore_tcp_s",
    "removal_s",
    "recovery_s",
    "carrier_removal_ms",
    "carrier_recovery_s",
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sane_seconds(stats: dict[str, Any], upper: float, positive: bool = True) -> bool:
    median, worst = float(stats["median"]), float(stats["max"])
    return (median > 0 if positive else median >= 0) and median <= worst <= upper


def test_quick_failover_benchmark_reports_sane_numbers_and_cleans_up(bench_runs: BenchRuns) -> None:
    # The conftest's prefix: should the script leave anything, the session-end
    # safety net removes it too.
    run = bench_runs.get("failover")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix

    assert doc["benchmark"] == "failover"
    assert doc["netns_prefix"] == lab_prefix
    assert doc["runs"] == 2 and doc["quick"] is True
    for name in ("default", "tuned"):
        result = doc[name]
        assert all(key in result for key in CONFIG_KEYS), name
        assert result["failed_runs"] == [], result["failed_runs"]
        assert result["restore_udp_s"]["n"] == 2
        assert _sane_seconds(result["restore_udp_s"], 3.0), result["restore_udp_s"]
        assert _sane_seconds(result["restore_tcp_s"], 3.0, positive=False)
        assert _sane_seconds(result["recovery_s"], 5.0), result["recovery_s"]
        # The fault really took the uplink out, and the flows came back with it.
        assert result["restore_udp_s"]["max"] >= result["removal_s"]["median"] * 0.5
        assert 0 < result["carrier_removal_ms"]["max"] < 1000
    # Tuned probing detects faster than the defaults, within its own bound.
    assert doc["tuned"]["detection_bound_s"] <= 0.25 < doc["default"]["detection_bound_s"]
    assert doc["tuned"]["removal_s"]["median"] < doc["default"]["removal_s"]["median"]

    anchor = doc["anchor_cron"]
    assert anchor["period_s"] == 60
    assert 20 < anchor["modelled_restore_s"]["median"] < 40
    assert 55 < anchor["modelled_restore_s"]["max"] < 65
    measured = anchor["measured_short_period"]
    assert measured["failed_runs"] == []
    assert _sane_seconds(measured["restore_udp_s"], measured["period_s"] + 3)
    # ecmpd restores much faster than a monitor that only looks once a minute.
    assert 0 < doc["ratios"]["default_vs_cron_median"] < 0.2
    assert 0 < doc["ratios"]["tuned_vs_cron_median"] < doc["ratios"]["default_vs_cron_median"]

    loss = doc["false_transitions"]
    assert loss["loss"] == 0.05 and loss["duration_s"] > 0 and _number(loss["count"])
    for per_config in loss["per_config"].values():
        assert per_config["probe_loss_observed"] > 0  # the loss really happened
    _check_dual_stack(doc)
    cost = doc["daemon_cost"]
    assert (cost["uplinks"], cost["targets"], cost["rate_hz"]) == (8, 2, 10)
    assert 0 < cost["cpu_percent"] < 100 and 5 < cost["rss_mb"] < 500
    assert cost["all_up_at_end"] is True
    assert set(doc["met"]) == set(doc["targets"]) | {"tuned_detection_bound_s"}
    assert all(isinstance(v, bool) for v in doc["met"].values())

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab_prefix not in listed.stdout
    assert netns.list_netns(lab_prefix) == []


def _check_dual_stack(doc: dict[str, Any]) -> None:
    """The IPv6 phase: both families timed in the same lab, neither touching the other."""
    dual = doc["ipv6"]
    assert dual["failed_runs"] == [], dual["failed_runs"]
    assert dual["targets_per_family"] == {"ipv4": 2, "ipv6": 2}
    assert {r["family"] for r in dual["runs"]} == {"ipv4", "ipv6"}
    for family in ("ipv6", "ipv4"):
        assert dual[f"{family}_removal_s"]["n"] == 2, family
        assert _sane_seconds(dual[f"{family}_removal_s"], 3.0), dual[f"{family}_removal_s"]
        assert _sane_seconds(dual[f"{family}_recovery_s"], 5.0), dual[f"{family}_recovery_s"]
    for run in dual["runs"]:
        # Nothing is judged lost before a probe's timeout: the removal was the daemon's doing.
        assert run["removal_s"] >= dual["check"]["timeout_s"], run
        # The other family's group was read all along (2 ms polls over a second or more).
        assert run["other_family_polls"] > 50, run
    assert dual["other_family_changes"] == {"ipv6": 0, "ipv4": 0}, dual["runs"]
    # The same check in both families: neither should take several times the other.
    for key in ("ipv6_vs_ipv4_removal_median", "ipv6_vs_ipv4_recovery_median"):
        assert 0.2 < doc["ratios"][key] < 5, (key, doc["ratios"][key])
    # IPv6 is held to IPv4's gray-failure target for the default check.
    targets = doc["targets"]
    assert targets["ipv6_detection_s"] == targets["ipv6_recovery_s"] == targets["restore_default_s"]

"""Smoke test of bench.flows: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

import subprocess

from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def test_quick_flows_benchmark_reports_sane_numbers_and_cleans_up(bench_runs: BenchRuns) -> None:
    # The conftest's prefix: should the script leave anything, the session-end
    # safety net removes it too.
    run = bench_runs.get("flows")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix
    assert doc["benchmark"] == "flows" and doc["quick"] is True
    assert doc["netns_prefix"] == lab_prefix

    lookups = doc["moved_lookups"]["variants"]
    ecmpd, anchor = lookups["ecmpd_resilient"], lookups["anchor_multipath_route"]
    for variant in (ecmpd, anchor):
        assert variant["flows"] == 3000
        assert variant["failure"]["dead_moved"] == variant["failure"]["on_failed_uplink"] > 0
        assert variant["failure"]["still_on_failed_uplink"] == 0
    assert ecmpd["failure"]["healthy_moved"] == 0
    # Recovery: new flows' lookups go to the recovered uplink, its share at once, and
    # nowhere else (connections keep their uplink by their marks: moved_tcp below).
    assert ecmpd["recovery"]["moved_not_to_recovered"] == 0
    assert 0.2 < ecmpd["recovery"]["moved_fraction"] < 0.45  # 1/3: 3 equal uplinks
    # Hash-threshold with 3 equal uplinks: 1/4 of the healthy flows, 1/2 of all at recovery.
    assert 0.15 < anchor["failure"]["healthy_moved_fraction"] < 0.35
    assert 0.4 < anchor["recovery"]["moved_fraction"] < 0.6

    tcp = doc["moved_tcp"]["variants"]["ecmpd_resilient"]
    assert tcp["failure"]["on_healthy_uplinks"] + tcp["failure"]["on_failed_uplink"] == 60
    assert tcp["failure"]["healthy_broken"] == 0
    assert tcp["failure"]["dead_broken"] == tcp["failure"]["on_failed_uplink"]
    assert tcp["failure"]["dead_reconnected_elsewhere"] == tcp["failure"]["on_failed_uplink"]
    assert tcp["recovery"]["broken"] == 0
    assert doc["moved_tcp"]["variants"]["anchor_multipath_route"]["recovery"]["broken"] > 0

    (now, now_sustained, stops, sustained) = doc["recovered_share"]["runs"]
    assert now["idle_timer_s"] == now_sustained["idle_timer_s"] == 0
    # ecmpd's idle_timer 0: the share at the group replace, also with every bucket busy.
    for run in (now, now_sustained):
        assert run["t_share_s"] is not None and run["t_share_s"] <= 1.0, run
        assert run["long_lived_broken_at_recovery"] == 0
    assert stops["load"] == "stops" and sustained["load"] == "sustained"
    # Busy buckets wait out the idle timer; the kernel checks at most every 0.5 s.
    idle = stops["idle_timer_s"]
    assert stops["t_share_s"] is not None and idle - 0.5 <= stops["t_share_s"] <= idle + 2.0
    assert stops["buckets_at_end"]["isp-a"] == stops["wanted_buckets"]
    assert stops["long_lived_broken_at_recovery"] == 0

    goodput = doc["goodput"]["2_uplinks"]
    assert goodput["summed_mbit"] == 300
    assert 0.5 < goodput["ecmpd"]["fraction"] <= 1.0
    assert 0.2 < goodput["anchor_single_route"]["fraction"] < 0.4
    assert goodput["ecmpd"]["mbit"] > goodput["anchor_single_route"]["mbit"] * 1.5
    assert set(doc["met"]) == {
        "healthy_moved_on_failure",
        "moved_on_recovery",
        "recovered_share_s",
        "goodput_fraction",
    }

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab_prefix not in listed.stdout
    assert netns.list_netns(lab_prefix) == []

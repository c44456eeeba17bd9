"""Smoke test of bench.connections: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def test_quick_connections_benchmark_reports_sane_numbers_and_cleans_up(
    bench_runs: BenchRuns,
) -> None:
    run = bench_runs.get("connections")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix
    assert doc["benchmark"] == "connections" and doc["netns_prefix"] == lab_prefix
    idle = doc["idle"]["variants"]
    for variant in idle.values():
        assert variant["connections"] == 4 * doc["idle"]["buckets"]
        assert variant["on_healthy_uplinks"] > variant["connections"] // 2
    assert idle["ecmpd"]["healthy_broken"] == 0
    # The anchors break some: a resilient group hands idle buckets to the returning
    # uplink, a classic route rehashes (measured: about 1 in 6 and 1 in 10).
    assert idle["anchor_resilient_group"]["healthy_broken"] > 0
    assert idle["anchor_multipath_route"]["healthy_broken"] > 0
    inter = doc["interrupted"]["variants"]
    ours, anchor = inter["ecmpd"], inter["anchor_multipath_route"]
    assert (
        ours["on_failed_uplink"] > 0 and ours["back_after_left_s"]["n"] == ours["on_failed_uplink"]
    )
    # Reset at once, back within the 0.5 s of the uplink leaving; the anchor's
    # flows wait for their next retransmission (backoff since the fault: 1 s and more).
    assert ours["back_after_left_s"]["max"] <= 0.5, ours
    assert anchor["back_after_left_s"]["median"] > ours["back_after_left_s"]["median"], inter
    cost = doc["cost"]
    assert cost["ecmpd_mbit"] > 0 and cost["nat_only_mbit"] > 0
    assert doc["met"] == {"idle_broken_by_recovery": True, "interrupted_back_s": True}
    assert netns.list_netns(lab_prefix) == []

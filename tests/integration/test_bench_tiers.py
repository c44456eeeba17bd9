"""Smoke test of bench.tiers: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

from bench.tiers.rows import rows
from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def test_tiers_benchmark_times_a_takeover_and_cleans_up(bench_runs: BenchRuns) -> None:
    run = bench_runs.get("tiers")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix
    assert doc["benchmark"] == "tiers" and doc["netns_prefix"] == lab_prefix
    assert doc["failed_runs"] == [], doc["failed_runs"]
    (takeover,) = doc["takeover"]["runs"]
    # After the takeover (from sparse probing: the backup is metered) every flow leaves
    # by the backup, and it came back to tier 1.
    assert set(takeover["flows_by_uplink_after"]) == {"isp-c"}
    # Both are after the fault (the group is polled, UDP arrivals carry kernel stamps:
    # either may come first by a poll's few ms).
    assert takeover["switch_s"] > 0 and takeover["restore_udp_s"] > 0
    (tier1,) = doc["tier1"]["runs"]
    assert "isp-c" not in tier1["flows_by_uplink_after"]
    cron = doc["anchor_cron"]["modelled_takeover_restore_s"]
    assert 2.0 <= cron["median"] <= 62.0
    probes = doc["standby_probes"]
    assert 0 < probes["bytes_per_min"] <= probes["budget_bytes_per_min"]
    assert doc["met"]["standby_probe_bytes_per_min"] is True
    assert len(rows(doc)) == 3
    assert netns.list_netns(lab_prefix) == []

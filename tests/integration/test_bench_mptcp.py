"""Smoke test of bench.mptcp: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

from bench.mptcp.rows import rows
from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def test_quick_mptcp_benchmark_reports_sane_numbers_and_cleans_up(bench_runs: BenchRuns) -> None:
    run = bench_runs.get("mptcp")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix

    assert doc["benchmark"] == "mptcp" and doc["rates_mbit"] == [100, 200]
    for key in ("equal_rtt", "rtt_10ms_60ms", "rtt_60ms_10ms"):
        g = doc["goodput"][key]
        singles = g["tcp_by_uplink_mbit"]
        assert set(singles) == {"isp-a", "isp-b"} and all(v > 0 for v in singles.values())
        # One connection over both uplinks beats the best one alone (the benchmark checked
        # it ran subflows on both); the targets themselves are the benchmark's verdict.
        assert g["mptcp_mbit"] > max(singles.values()), key
    (run,) = doc["events"]["ecmpd"]
    assert run["cut_uplink"] in ("isp-a", "isp-b")
    assert run["gap_s"] >= 0 and run["endpoint_back_after_heal_s"] is not None
    assert run["carrying_after_return_s"] is not None
    assert doc["events"]["kernel_alone"][0]["endpoint_back_after_heal_s"] is None
    assert set(doc["met"]) == set(doc["targets"])
    assert all(isinstance(v, bool) for v in doc["met"].values())
    assert len(rows(doc)) == 5
    assert netns.list_netns(lab_prefix) == []

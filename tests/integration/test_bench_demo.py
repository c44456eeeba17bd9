"""Smoke test of bench.demo: both variants run the real demo, its JSON is sane, it
leaves no namespace."""

from __future__ import annotations

import pytest

from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def test_quick_demo_benchmark_reports_sane_numbers_and_cleans_up(bench_runs: BenchRuns) -> None:
    run = bench_runs.get("demo")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix
    assert doc["benchmark"] == "demo" and doc["netns_prefix"] == lab_prefix
    assert set(doc["variants"]) == {"ecmpd", "no_queue"}
    for variant in doc["variants"].values():
        (one,) = variant["runs"]  # --quick: one run each
        assert one["interrupted_flows"] > 0
        # Each flow reconnects, then delivers; the last flow no sooner than the median.
        assert one["reset_s"] > 0 and 0 < one["reconnected_median_s"] <= one["median_s"]
        assert one["median_s"] <= one["last_s"]
        assert variant["last_worst_s"] == pytest.approx(one["last_s"], abs=0.001)
        assert variant["within_target"] == (1 if one["last_s"] <= 0.5 else 0)
    assert doc["met"]["every_flow_back_s"] == (doc["variants"]["ecmpd"]["within_target"] == 1)
    assert netns.list_netns(lab_prefix) == []

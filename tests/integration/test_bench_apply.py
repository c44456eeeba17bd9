"""Smoke test of bench.apply: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

import subprocess
from typing import Any

from ecmpd.lab import netns
from tests.integration.fixtures.bench import BenchRuns


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def test_quick_apply_benchmark_reports_sane_numbers_and_cleans_up(bench_runs: BenchRuns) -> None:
    # The conftest's prefix: should the script leave anything, the session-end
    # safety net removes it too.
    run = bench_runs.get("apply")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix

    assert doc["benchmark"] == "apply"
    assert doc["netns_prefix"] == lab_prefix
    assert _positive(doc["cpus"]) and doc["kernel"]
    results = doc["results"]
    assert [r["uplinks"] for r in results] == [2, 8]
    for r in results:
        assert r["reapply_ops"] == 0
        assert r["failover_ops"] == 1
        assert r["apply_ops"] > r["uplinks"]  # at least a nexthop per uplink, and more
        for key in ("apply_ms", "reapply_ms", "failover_ms", "failback_ms"):
            assert _positive(r[key]["median"]) and r[key]["max"] >= r[key]["median"], key
        assert r["failover_ms"]["n"] >= 20
        # The anchors subtract process start-up (an empty `ip -batch`): for a few
        # commands on a loaded machine two quick runs' difference can fall below zero,
        # so here the raw runs must be real and the net figures numbers; the full run
        # (more uplinks and repetitions) is where the ratio means something.
        assert _positive(r["anchor_ip_batch"]["raw_ms"]["median"])
        assert _positive(r["anchor_multipath_replace"]["raw_ms"]["median"])
        assert isinstance(r["anchor_ip_batch_ms"], float)
        ratio = r["ratio_apply_vs_ip_batch"]  # None when there is nothing to divide by
        assert _positive(ratio) == (r["anchor_ip_batch_ms"] > 1e-6), ratio
    assert results[1]["apply_ops"] > results[0]["apply_ops"]
    assert doc["targets"] == {"apply_64_ms": 100, "failover_ms": 2}
    assert doc["met"]["apply_64_ms"] is None  # --quick stops at 8 uplinks
    assert isinstance(doc["met"]["failover_ms"], bool)

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert lab_prefix not in listed.stdout
    assert netns.list_netns(lab_prefix) == []

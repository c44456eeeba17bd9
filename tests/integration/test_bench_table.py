"""Smoke test of bench.table: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

from ecmpd.lab import netns
from tests.integration.fixtures.bench import TABLE_ROUTES as ROUTES
from tests.integration.fixtures.bench import BenchRuns


def test_table_benchmark_reads_a_full_main_table_and_cleans_up(bench_runs: BenchRuns) -> None:
    run = bench_runs.get("table")  # also merged by test_lab_bench
    doc, lab_prefix = run.doc, run.prefix
    assert doc["benchmark"] == "table" and doc["routes"] == ROUTES
    empty, full = doc["empty_table"], doc["full_table"]
    # The benchmark checked observe read back ecmpd's state and a failover was one
    # operation, with the table loaded: the figures are of the right thing.
    assert full["routes_in_kernel"] >= ROUTES > empty["routes_in_kernel"]
    for part in (empty, full):
        for key in ("observe_ms", "carrier_path_ms", "anchor_unfiltered_dump_ms"):
            assert part[key]["median"] > 0 and part[key]["n"] == 2, key
    assert doc["ratio_observe_vs_unfiltered_dump"] > 0
    assert netns.list_netns(lab_prefix) == []

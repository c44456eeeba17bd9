"""Smoke test of bench.table: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

from ecmpd.lab import netns
from tests.integration.fixtures.bench import run_benchmark

ROUTES = 20_000


def test_table_benchmark_reads_a_full_main_table_and_cleans_up(lab_prefix: str) -> None:
    doc = run_benchmark(
        "table", "--routes", str(ROUTES), "--reps", "2", "--prefix", lab_prefix, timeout=600
    )
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

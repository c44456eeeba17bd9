"""Smoke test of bench/table_bench.py: it runs, its JSON is sane, it leaves no namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ecmpd.lab import netns

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "table_bench.py"
ROUTES = 20_000


def test_table_benchmark_reads_a_full_main_table_and_cleans_up(lab_prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--routes", str(ROUTES), "--reps", "2",
         "--prefix", lab_prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
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

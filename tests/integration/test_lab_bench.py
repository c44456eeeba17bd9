"""`./dev bench --quick` (python -m bench): every benchmark, one merged JSON document, a table."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench.report import markdown_table
from bench.suite import BENCHES
from ecmpd.lab import netns
from tests.integration.fixtures.bench import ROOT
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

BENCH_TIMEOUT_S = 600
# What each benchmark's document must carry for the README's table.
KEYS = {
    "apply": ("results", "targets", "met"),
    "failover": ("default", "tuned", "anchor_cron", "ratios", "false_transitions", "ipv6", "met"),
    "flows": ("moved_lookups", "moved_tcp", "recovered_share", "goodput", "met"),
    "table": ("empty_table", "full_table", "ratio_observe_vs_unfiltered_dump"),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `python -m bench --quick --json --table FILE` run."""
    require_netns()
    prefix = next_lab_prefix()  # the session's safety net removes it, should a script not
    table = tmp_path_factory.mktemp("bench") / "performance.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", "--table", str(table),
         "--prefix", prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )  # fmt: skip
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {
        "status": done.returncode,
        "stderr": done.stderr,
        "doc": json.loads(done.stdout) if done.stdout.strip() else None,
        "prefix": prefix,
        "table": table.read_text() if table.exists() else None,
        "ip_netns_list": listed.stdout,
    }


def test_the_run_succeeds_and_leaves_no_namespace(bench: dict[str, Any]) -> None:
    assert bench["status"] == 0, bench["stderr"][-3000:]
    doc = bench["doc"]
    assert doc["benchmark"] == "all" and doc["quick"] is True
    assert doc["netns_prefix"] == bench["prefix"]
    assert doc["failed"] == {}
    assert bench["prefix"] not in bench["ip_netns_list"]
    assert netns.list_netns(bench["prefix"]) == []


@pytest.mark.parametrize("name", [bench.name for bench in BENCHES])
def test_each_benchmark_is_merged_under_its_key(bench: dict[str, Any], name: str) -> None:
    doc = bench["doc"]
    assert doc is not None, bench["stderr"][-3000:]
    part = doc[name]
    assert part["benchmark"] == name
    # Each script got its own namespace prefix under the run's.
    assert part["netns_prefix"].startswith(bench["prefix"])
    for key in KEYS[name]:
        assert key in part, f"{name}: no {key!r}"
    assert doc["seconds"][name] > 0


def test_the_table_has_a_row_per_figure_with_its_anchor(bench: dict[str, Any]) -> None:
    doc, table = bench["doc"], bench["table"]
    assert table is not None and table == markdown_table(doc)
    lines = table.splitlines()
    assert "| what | ecmpd | anchor (same run) | target |" in lines
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert all(line.count(" | ") == 3 for line in rows), rows
    expected = {
        "apply": ("`ip -batch`", "classic multipath `ip route replace`"),
        "failover": (
            "cron ping every 60 s",
            "cron monitor:",
            "IPv6 gray failure: out of the IPv6 group / back",
            "IPv4 gray failure, same lab:",
        ),
        "flows": ("classic multipath route:", "a single default route:"),
        "table": ("one unfiltered route dump:",),
    }
    for name, anchors in expected.items():
        for anchor in anchors:
            assert anchor in table, (name, anchor)
    # Targets are reported where a benchmark states them, met (✓) or not (✗).
    assert "✓" in table or "✗" in table

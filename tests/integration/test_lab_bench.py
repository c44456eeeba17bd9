"""`./dev bench` (python -m bench): every benchmark merged into one JSON document, a table.

Two parts. The run itself (a process per benchmark, each under its own namespace prefix
below the run's, the merged document, the table file, no namespace left) is tested on
`--only apply`, the cheapest. The merge and the table are tested on every benchmark's
real document: the one its smoke test (test_bench_<name>.py) produced in this session
(BenchRuns), merged by the same code as `python -m bench` merges it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bench.__main__ import merge, merged_document
from bench.report import markdown_table
from bench.suite import BENCHES
from ecmpd.lab import netns
from tests.integration.fixtures.bench import ROOT, BenchRuns
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

BENCH_TIMEOUT_S = 600
# What each benchmark's document must carry for the README's table.
KEYS = {
    "apply": ("results", "targets", "met"),
    "failover": ("default", "tuned", "anchor_cron", "ratios", "false_transitions", "ipv6", "met"),
    "flows": ("moved_lookups", "moved_tcp", "recovered_share", "goodput", "met"),
    "connections": ("idle", "interrupted", "cost", "targets", "met"),
    "demo": ("variants", "targets", "met"),
    "table": ("empty_table", "full_table", "ratio_observe_vs_unfiltered_dump"),
    "mptcp": ("goodput", "events", "summary", "targets", "met"),
    "tiers": ("takeover", "tier1", "anchor_cron", "standby_probes", "targets", "met"),
    "edges": ("ecmpd", "tuned", "bgp_only", "targets", "met"),
}
# Each benchmark's anchors as the table names them (measured in the same run).
ANCHORS = {
    "apply": ("`ip -batch`", "classic multipath `ip route replace`"),
    "failover": (
        "cron ping every 60 s",
        "cron monitor:",
        "IPv6 gray failure: out of the IPv6 group / back",
        "IPv4 gray failure, same lab:",
    ),
    "flows": ("classic multipath route:", "a single default route:"),
    "connections": ("resilient group alone", "classic multipath route switched after"),
    "demo": ("the same without `queue`",),
    "table": ("one unfiltered route dump:",),
    "mptcp": ("one TCP connection by one uplink:",),
    "tiers": ("cron with a backup list every", "cron ping of the gateway every minute:"),
    "edges": ("BGP alone at the core",),
}


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `python -m bench --quick --json --table FILE --only apply` run."""
    require_netns()
    prefix = next_lab_prefix()  # the session's safety net removes it, should a script not
    table = tmp_path_factory.mktemp("bench") / "performance.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", "--table", str(table),
         "--prefix", prefix, "--only", "apply"],
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


@pytest.fixture(scope="module")
def merged(bench_runs: BenchRuns) -> dict[str, Any]:
    """Every benchmark's real document of this session, merged as `python -m bench` does."""
    doc = merged_document(next_lab_prefix(), quick=True)
    for bench in BENCHES:
        run = bench_runs.get(bench.name)
        merge(doc, bench.name, 0, json.dumps(run.doc), 1.0)
    return doc


def test_the_run_succeeds_and_leaves_no_namespace(suite_run: dict[str, Any]) -> None:
    assert suite_run["status"] == 0, suite_run["stderr"][-3000:]
    doc = suite_run["doc"]
    assert doc["benchmark"] == "all" and doc["quick"] is True
    assert doc["netns_prefix"] == suite_run["prefix"]
    assert doc["failed"] == {}
    # Only what --only named ran, under its own prefix below the run's.
    assert [b.name for b in BENCHES if b.name in doc] == ["apply"]
    assert doc["apply"]["benchmark"] == "apply" and doc["apply"]["results"]
    assert doc["apply"]["netns_prefix"].startswith(suite_run["prefix"])
    assert doc["apply"]["netns_prefix"] != suite_run["prefix"]
    assert set(doc["seconds"]) == {"apply"} and doc["seconds"]["apply"] > 0
    assert suite_run["table"] == markdown_table(doc)
    assert suite_run["prefix"] not in suite_run["ip_netns_list"]
    assert netns.list_netns(suite_run["prefix"]) == []


def test_an_unknown_benchmark_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "apply,nosuch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown benchmark nosuch" in done.stderr, done.stderr


@pytest.mark.parametrize("name", [bench.name for bench in BENCHES])
def test_each_benchmark_is_merged_under_its_key(
    merged: dict[str, Any], bench_runs: BenchRuns, name: str
) -> None:
    part = merged[name]
    assert part["benchmark"] == name
    assert part["netns_prefix"] == bench_runs.get(name).prefix  # its own namespaces
    for key in KEYS[name]:
        assert key in part, f"{name}: no {key!r}"
    assert merged["seconds"][name] > 0 and name not in merged["failed"]


def test_the_table_has_a_row_per_figure_with_its_anchor(merged: dict[str, Any]) -> None:
    table = markdown_table(merged)
    lines = table.splitlines()
    assert "| what | ecmpd | anchor (same run) | target |" in lines
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert all(line.count(" | ") == 3 for line in rows), rows
    assert "failed:" not in table
    # Each benchmark's own rows, from its real document, in suite order.
    expected = [row for bench in BENCHES for row in bench.rows(merged[bench.name])]
    assert len(rows) == len(expected) and all(len(row) == 4 for row in expected)
    for bench in BENCHES:
        assert bench.rows(merged[bench.name]), bench.name
        for anchor in ANCHORS[bench.name]:
            assert anchor in table, (bench.name, anchor)
    # Targets are reported where a benchmark states them, met (✓) or not (✗).
    assert "✓" in table or "✗" in table


def test_a_failed_benchmark_is_recorded_and_the_table_says_so() -> None:
    doc = merged_document("ecmpd-unused-", quick=True)
    merge(doc, "apply", 3, "", 2.0)
    merge(doc, "table", 0, "not json", 1.0)
    assert doc["failed"] == {
        "apply": "exit status 3",
        "table": doc["failed"]["table"],
    } and doc["failed"]["table"].startswith("not one JSON document on stdout")
    assert "apply" not in doc and "table" not in doc
    table = markdown_table(doc)
    assert "| `apply` benchmark | failed: exit status 3 |  |  |" in table

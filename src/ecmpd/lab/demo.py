"""`ecmpd lab demo` (first version): build a lab, apply ecmpd, show flows split by weight.

Every figure it prints is measured in the run: kernel lookups over many flows and real
TCP connections whose source address, as the server saw it, names the uplink.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ecmpd.lab import netns
from ecmpd.lab.measure import connection_split, echo_server, kernel_split, random_flows, shares
from ecmpd.lab.topology import Lab, lab_session


@dataclass
class DemoResult:
    """What the demo measured, for --json and for tests."""

    namespaces: list[str] = field(default_factory=list)
    build_s: float = 0.0
    apply_changes: int = 0
    apply_s: float = 0.0
    flows: int = 0
    connections: int = 0
    uplinks: list[dict[str, Any]] = field(default_factory=list)
    max_error_pp: float = 0.0


def run_ecmpd(lab: Lab, run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `ecmpd` CLI inside the lab's router namespace."""
    argv = [
        sys.executable,
        "-m",
        "ecmpd",
        "-c",
        str(lab.config_path),
        "--run-dir",
        str(run_dir),
        *args,
    ]
    return netns.run_in(lab.router, argv, capture_output=True, text=True, timeout=120)


def run_demo(
    workdir: Path, *, flows: int = 10000, connections: int = 600, console: Console | None = None
) -> DemoResult:
    """Build the lab, apply ecmpd, measure the split; the lab is always removed."""
    out = console or Console(stderr=True)
    result = DemoResult(flows=flows, connections=connections)
    started = time.monotonic()
    out.print("building the lab: router, 3 ISPs (100/200/50 Mbit TBF), internet ...")
    with lab_session(workdir=workdir, isps=3) as lab:
        result.build_s = time.monotonic() - started
        result.namespaces = lab.namespaces()
        out.print(f"[green]lab up[/] in {result.build_s:.1f}s: {', '.join(lab.namespaces())}")
        with out.status("ecmpd apply (in the router namespace)"):
            t0 = time.monotonic()
            applied = run_ecmpd(lab, workdir / "run", "apply", "--json")
            result.apply_s = time.monotonic() - t0
        if applied.returncode != 0:
            raise RuntimeError(f"ecmpd apply failed: {applied.stderr}")
        result.apply_changes = json.loads(applied.stdout)["changes"]
        out.print(f"[green]applied[/] {result.apply_changes} kernel changes")
        with out.status(f"asking the router's kernel how {flows} new flows would leave"):
            by_lookup = kernel_split(lab, random_flows(lab, flows))
        with (
            out.status(f"opening {connections} real TCP connections to the internet"),
            echo_server(lab) as server,
        ):
            by_conn = connection_split(lab, connections, server)
        _record_split(result, lab, by_lookup, by_conn)
        out.print("removing the lab ...")
    return result


def _record_split(
    result: DemoResult, lab: Lab, by_lookup: Counter[str], by_conn: Counter[str]
) -> None:
    names = [isp.name for isp in lab.isps]
    total_weight = sum(isp.weight for isp in lab.isps)
    lookup_share, conn_share = shares(by_lookup, names), shares(by_conn, names)
    for isp in lab.isps:
        target = isp.weight / total_weight
        result.uplinks.append(
            {
                "name": isp.name,
                "interface": isp.uplink_if,
                "rate_mbit": isp.rate_mbit,
                "weight": isp.weight,
                "target_share": round(target, 4),
                "lookup_share": round(lookup_share[isp.name], 4),
                "connection_share": round(conn_share[isp.name], 4),
            }
        )
        result.max_error_pp = max(result.max_error_pp, abs(lookup_share[isp.name] - target) * 100)


def render(result: DemoResult, console: Console) -> None:
    """The split as a table with bars."""
    table = Table(title="how ecmpd spreads new flows over the uplinks")
    for col in ("uplink", "rate", "weight", "target", "kernel lookups", "real connections", ""):
        table.add_column(col)
    for u in result.uplinks:
        bar = "█" * round(u["lookup_share"] * 40)
        table.add_row(
            u["name"],
            f"{u['rate_mbit']} Mbit",
            str(u["weight"]),
            f"{u['target_share']:.1%}",
            f"{u['lookup_share']:.1%}",
            f"{u['connection_share']:.1%}",
            f"[cyan]{bar}[/]",
        )
    console.print(table)
    console.print(
        f"{result.flows} flows by kernel lookup, {result.connections} real TCP connections; "
        f"largest deviation from the weights: {result.max_error_pp:.2f} percentage points"
    )

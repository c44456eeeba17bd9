"""cost: unshaped forwarding throughput with ecmpd's connection marks and without them."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, progress
from bench.flows.labs import ecmpd_cli, nat_lab, router_config
from ecmpd.kernel import nftables
from ecmpd.lab import netns
from ecmpd.lab.layout import LAN_HOST, Lab
from ecmpd.marks import DEFAULT_MASK
from ecmpd.model import NftTable

IPERF_PORT = 5201
STREAMS = 8  # spread over both uplinks by the hash


def iperf(lab: Lab, seconds: float) -> float:
    """Mbit/s received by the server from STREAMS LAN streams (iperf3's own count)."""
    assert lab.lan is not None
    argv = ["iperf3", "-c", str(lab.servers[0]), "-p", str(IPERF_PORT), "-B", str(LAN_HOST.ip)]
    argv += ["-t", str(seconds), "-P", str(STREAMS), "-J"]
    done = netns.run_in(lab.lan, argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise BenchError(f"iperf3 failed: {done.stderr.strip() or done.stdout[-300:]}")
    return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6


def without_marks(lab: Lab) -> None:
    """NAT alone: ecmpd's table without its mark chains, and no mark rules."""
    table = NftTable(masquerade=tuple(isp.uplink_if for isp in lab.isps))
    netns.call_in(lab.router, lambda: nftables.apply_table(table))
    for family in ("-4", "-6"):
        listed = netns.run_in(lab.router, ["ip", "-j", family, "rule", "show"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        for rule in json.loads(listed or "[]"):
            if rule.get("fwmask") == f"{DEFAULT_MASK:#x}":
                argv = ["ip", family, "rule", "del", "priority", str(rule["priority"])]
                argv += ["fwmark", f"{rule['fwmark']}/{rule['fwmask']}"]
                netns.run_in(lab.router, argv, check=True)


def bench_cost(prefix: str, workdir: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """Alternating rounds: ecmpd as it is, then NAT alone; the median of each."""
    results: dict[str, list[float]] = {"ecmpd": [], "nat_only": []}
    with nat_lab(prefix, workdir / "lab", isps=2, shaping=False) as lab:
        config = router_config(lab, workdir / "ecmpd.yaml")
        server = netns.popen_in(lab.internet, ["iperf3", "-s", "-p", str(IPERF_PORT)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            for k in range(rounds):
                progress(f"cost: round {k + 1} of {rounds}")
                # Each round in the other order: a drift of the machine's load evens out.
                for variant in ("ecmpd", "nat_only") if k % 2 == 0 else ("nat_only", "ecmpd"):
                    if variant == "ecmpd":
                        ecmpd_cli(lab, config, workdir / "run", "apply")
                    else:
                        ecmpd_cli(lab, config, workdir / "run", "apply")
                        without_marks(lab)
                    results[variant].append(iperf(lab, seconds))
        finally:
            server.terminate()
            server.wait(timeout=5)
            ecmpd_cli(lab, config, workdir / "run", "down")
    ours, anchor = (statistics.median(v) for v in results.values())
    return {
        "streams": STREAMS,
        "seconds": seconds,
        "rounds": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
        "ecmpd_mbit": round(ours, 1),
        "nat_only_mbit": round(anchor, 1),
        "cost_fraction": round(1 - ours / anchor, 4),
    }

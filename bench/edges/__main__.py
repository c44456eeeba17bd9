"""`python -m bench.edges`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import edges
from bench.common import arguments, emit, install_sigterm, machine, namespaces_missing, progress
from ecmpd.lab import edgerun, netns
from ecmpd.lab.edges import EdgeRouters, edge_lab
from ecmpd.lab.peers.frr import frr_available

TUNED = {"interval": 0.04, "timeout": 0.07, "down_after": 3}
TARGETS = {
    "failover_default_s": 1.0,
    "failover_tuned_s": 0.4,
    "announce_to_fib_s": 0.2,
    "edge_dies_s": 0.4,
    "forwards_nothing_s": 1.0,
}


def _failovers(routers: EdgeRouters, runs: int) -> dict[str, Any]:
    results = []
    for i in range(runs):
        progress(f"  isps of edge1 fail, run {i + 1}/{runs}")
        results.append(edgerun.isps_fail(routers, "edge1"))
    outages = [r.outage_s for r in results]
    return {
        "outage_s": {"median": round(statistics.median(outages), 3), "max": round(max(outages), 3)},
        "withdrawn_s": round(statistics.median(r.withdrawn_s for r in results), 3),
        "disturbed": sum(r.disturbed for r in results),
        "moved": sum(r.moved for r in results),
        "streams": sum(r.streams for r in results),
        "runs": [dataclasses.asdict(r) for r in results],
    }


def _lab(prefix: str, tmp: Path, name: str, runs: int, **kwargs: Any) -> dict[str, Any]:
    progress(f"{name}: building the lab (core ecmpd: {kwargs.get('core_ecmpd', True)})")
    with (
        edge_lab(2, f"{prefix}{name[:4]}-", tmp / name) as lab,
        EdgeRouters(lab, **kwargs) as routers,
    ):
        edgerun.whole(routers)
        doc: dict[str, Any] = {"failover": _failovers(routers, runs)}
        if name == "ecmpd":
            fib = [edgerun.announce_to_fib(routers, "edge2") for _ in range(runs)]
            doc["announce_to_fib_s"] = {
                "withdrawn_median": round(statistics.median(w for w, _ in fib), 3),
                "withdrawn_max": round(max(w for w, _ in fib), 3),
                "restored_median": round(statistics.median(r for _, r in fib), 3),
            }
        if name in ("ecmpd", "bgp-only"):
            progress(f"{name}: edge1 forwards nothing")
            took = edgerun.forwards_nothing(routers, "edge1")
            # None: not noticed within the watch (BGP and BFD alone never notice).
            doc["forwards_nothing_s"] = round(took, 3) if took != float("inf") else None
        if name == "ecmpd":
            progress(f"{name}: edge2 dies (BFD 100 ms x 3)")
            doc["edge_dies_s"] = round(edgerun.edge_dies(routers, "edge2"), 3)
        return doc


def main() -> int:
    p = arguments(edges, "2 runs per failover instead of 5")
    p.add_argument("--runs", type=int, help="failover runs per configuration")
    args = p.parse_args()
    if namespaces_missing(edges):
        return 1
    reason = frr_available()
    if reason is not None:
        print(f"bench.edges: {reason}", file=sys.stderr)
        return 1
    install_sigterm()
    runs = args.runs or (2 if args.quick else 5)
    prefix = args.prefix or netns.new_prefix()
    with tempfile.TemporaryDirectory(prefix="ecmpd-bench-edges-") as tmp:
        ecmpd = _lab(prefix, Path(tmp), "ecmpd", runs)
        tuned = _lab(prefix, Path(tmp), "tuned", runs, edge_check=TUNED, core_check=TUNED)
        anchor = _lab(prefix, Path(tmp), "bgp-only", runs, core_ecmpd=False)
    failover = ecmpd["failover"]["outage_s"]["max"]
    doc = {
        "machine": machine(),
        "runs": runs,
        "ecmpd": ecmpd,
        "tuned": tuned,
        "bgp_only": anchor,
        "targets": TARGETS,
        "met": {
            "failover_default": failover <= TARGETS["failover_default_s"],
            "failover_tuned": tuned["failover"]["outage_s"]["max"] <= TARGETS["failover_tuned_s"],
            "announce_to_fib": ecmpd["announce_to_fib_s"]["withdrawn_max"]
            <= TARGETS["announce_to_fib_s"],
            "edge_dies": ecmpd["edge_dies_s"] <= TARGETS["edge_dies_s"],
            "forwards_nothing": (ecmpd["forwards_nothing_s"] or float("inf"))
            <= TARGETS["forwards_nothing_s"],
            "undisturbed": ecmpd["failover"]["disturbed"] == 0
            and tuned["failover"]["disturbed"] == 0,
        },
    }
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

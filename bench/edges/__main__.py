"""`python -m bench.edges`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import edges
from bench.common import arguments, emit, install_sigterm, machine, namespaces_missing, progress
from ecmpd.lab import edgefigures, edgerun, netns
from ecmpd.lab.edges import EdgeRouters, edge_lab
from ecmpd.lab.edgetraffic import EdgeTraffic
from ecmpd.lab.peers.frr import frr_available

TUNED = {"interval": 0.04, "timeout": 0.07, "down_after": 3}
FAMILIES = ("ipv4", "ipv6")
TARGETS = {
    "failover_default_s": 1.0,
    "failover_tuned_s": 0.4,
    "announce_to_fib_s": 0.2,
    "edge_dies_s": 0.4,
    "forwards_nothing_s": 1.0,
}


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _family(seen: list[edgefigures.Seen]) -> dict[str, Any]:
    """One family's figures over every run."""
    pings = [s.pings for s in seen]
    conns = [s.conns for s in seen]
    return {
        "outage_s": _spread([p.outage_s for p in pings if p.moved]),
        "streams_moved": sum(p.moved for p in pings),
        "streams": sum(p.streams for p in pings),
        "streams_disturbed": sum(p.disturbed for p in pings),
        "conns_back_s": _spread([b for c in conns for b in c.back_s]),
        "conns_on_failed": sum(c.on_failed for c in conns),
        "conns_not_back": sum(c.not_back for c in conns),
        "conns_on_other": sum(c.on_other for c in conns),
        "disturbed_by_failure": sum(c.disturbed_by_failure for c in conns),
        "conns_at_return": sum(c.at_return for c in conns),
        "disturbed_by_return": sum(c.disturbed_by_return for c in conns),
        "idle_other": sum(c.idle_other for c in conns),
        "idle_broken": sum(c.idle_broken for c in conns),
    }


def _failovers(routers: EdgeRouters, runs: int) -> dict[str, Any]:
    results, seen = [], []
    for i in range(runs):
        progress(f"  isps of edge1 fail, run {i + 1}/{runs}")
        with EdgeTraffic(routers.lab) as traffic:
            failed = edgerun.isps_fail(routers, "edge1")
        results.append(failed)
        seen.append(edgefigures.seen(traffic.stop(), failed.window))
    outs = [r.out_s for r in results if r.out_s is not None]
    return {
        **{f: _family([s[f] for s in seen]) for f in FAMILIES},
        "withdrawn_s": _spread([r.withdrawn_s for r in results]),
        "out_of_balancer_s": _spread(outs),
        "announced_again_s": _spread([r.announced_s for r in results]),
        "sessions_dropped": sum(r.sessions_dropped for r in results),
        "runs": [
            {**dataclasses.asdict(r), "seen": {f: dataclasses.asdict(s[f]) for f in FAMILIES}}
            for r, s in zip(results, seen, strict=True)
        ],
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
                "restored_max": round(max(r for _, r in fib), 3),
            }
        if name in ("ecmpd", "bgp-only"):
            progress(f"{name}: edge1 forwards nothing")
            caught = edgerun.forwards_nothing(routers, "edge1")
            # None: not noticed within the watch (BGP and BFD alone never notice).
            took = caught.caught_s
            doc["forwards_nothing_s"] = None if took is None else round(took, 3)
            doc["forwards_nothing_bgp_paths"] = caught.bgp_paths
        if name == "ecmpd":
            progress(f"{name}: edge2 dies (BFD 100 ms x 3)")
            doc["edge_dies_s"] = round(edgerun.edge_dies(routers, "edge2"), 3)
        return doc


def _undisturbed(*docs: dict[str, Any]) -> bool:
    keys = ("streams_disturbed", "disturbed_by_failure", "disturbed_by_return", "idle_broken")
    return all(d["failover"][f][k] == 0 for d in docs for f in FAMILIES for k in keys)


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
    worst = {
        name: max(doc["failover"][f]["outage_s"]["max"] or 0.0 for f in FAMILIES)
        for name, doc in (("ecmpd", ecmpd), ("tuned", tuned))
    }
    doc = {
        "benchmark": "edges",
        "quick": args.quick,
        "netns_prefix": prefix,
        "machine": machine(),
        "runs": runs,
        "ecmpd": ecmpd,
        "tuned": tuned,
        "bgp_only": anchor,
        "targets": TARGETS,
        "met": {
            "failover_default": worst["ecmpd"] <= TARGETS["failover_default_s"],
            "failover_tuned": worst["tuned"] <= TARGETS["failover_tuned_s"],
            "announce_to_fib": max(
                ecmpd["announce_to_fib_s"]["withdrawn_max"],
                ecmpd["announce_to_fib_s"]["restored_max"],
            )
            <= TARGETS["announce_to_fib_s"],
            "edge_dies": ecmpd["edge_dies_s"] <= TARGETS["edge_dies_s"],
            "forwards_nothing": (ecmpd["forwards_nothing_s"] or float("inf"))
            <= TARGETS["forwards_nothing_s"],
            "undisturbed": _undisturbed(ecmpd, tuned),
        },
    }
    emit(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The edges demo's figures from what a run recorded, and their terminal rendering. Pure.

summarize() turns an EdgeDemoRun (the scenarios' timings from lab.edgerun and what the
LAN's traffic saw, counted by lab.edgefigures) into the JSON document `ecmpd lab demo
--edges N --json` prints; render_edge_summary() writes its claims for a terminal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType

from ecmpd import __version__
from ecmpd.lab.edgefigures import Seen
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.edgerun import Blackholed, Failed
from ecmpd.lab.summarytext import count_text, ms_text, summary_table

PHASES = ("steady", "failure", "return", "blackhole")
FAMILIES = ("ipv4", "ipv6")


@dataclass(frozen=True)
class EdgeDemoRun:
    """What one edges demo recorded (seconds): the summary's only input."""

    lab: EdgeLab
    duration_s: float  # as asked
    failed: Failed  # the ISPs of failed.window.edge failed, then healed
    blackholed: Blackholed  # blackholed.window.edge forwarded nothing, then again
    failure: Mapping[str, Seen]  # per family, over the failure's window
    blackhole: Mapping[str, Seen]  # per family, over the blackhole's window
    busy: int  # busy connections per family
    idle: int  # idle ones per family
    events: Sequence[Mapping[str, Any]]
    elapsed_s: float
    build_s: float
    ready_s: float


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _seen(seen: Mapping[str, Seen]) -> dict[str, Any]:
    out = {}
    for family, s in seen.items():
        conns = dataclasses.asdict(s.conns)
        conns["back_ms"] = [_ms(b) for b in conns.pop("back_s")]
        pings = dataclasses.asdict(s.pings)
        pings["outage_ms"] = _ms(pings.pop("outage_s"))
        out[family] = {"pings": pings, "conns": conns}
    return out


def summarize(run: EdgeDemoRun) -> dict[str, Any]:
    """The run's figures as a JSON-ready document."""
    f, b = run.failed, run.blackholed
    return {
        "demo": f"ecmpd lab demo --edges {len(run.lab.edges)}",
        "version": __version__,
        "duration_s": run.duration_s,
        "elapsed_s": round(run.elapsed_s, 2),
        "build_s": round(run.build_s, 2),
        "ready_s": round(run.ready_s, 2),
        "lab": {
            "prefix": run.lab.prefix,
            "core": run.lab.core,
            "namespaces": run.lab.namespaces(),
            "edges": [
                {"name": e.name, "ns": e.ns, "asn": e.asn, "isps": [i.name for i in e.isps]}
                for e in run.lab.edges
            ],
        },
        "traffic": {
            "ping_streams": len(run.lab.servers) + len(run.lab.servers6),
            "busy_per_family": run.busy,
            "idle_per_family": run.idle,
            "direction": "LAN -> core -> edges (NAT; IPv6 by the lab's NAT66) -> internet",
        },
        "failure": {
            "edge": f.window.edge,
            "out_of_balancer_ms": _ms(f.out_s),
            "withdrawn_ms": _ms(f.withdrawn_s),
            "announced_again_ms": _ms(f.announced_s),
            "back_in_balancer_ms": _ms(f.back_s),
            "bgp_sessions_dropped": f.sessions_dropped,
            **_seen(run.failure),
        },
        "blackhole": {
            "edge": b.window.edge,
            "caught_ms": _ms(b.caught_s),
            "bgp_paths_meanwhile": list(b.bgp_paths),
            "back_in_balancer_ms": _ms(b.back_s),
            **_seen(run.blackhole),
        },
        "events": [dict(e) for e in run.events],
    }


def _moved(part: Mapping[str, Any], family: str, edge: str) -> str:
    """What the failed (or blackholed) edge's traffic of one family did."""
    pings, conns = part[family]["pings"], part[family]["conns"]
    back = [ms for ms in conns["back_ms"] if ms is not None]
    came = f"within {max(back):.0f} ms of the fault" if back else "-"
    late = f", {conns['not_back']} later" if conns["not_back"] else ""
    return (
        f"{family}: {pings['moved']} of {pings['streams']} ping streams went via {edge} and"
        f" paused {ms_text(pings['outage_ms'])} at most; {conns['on_failed']} busy connections"
        f" via {edge} reset and back via another edge {came}{late}"
    )


def _kept(part: Mapping[str, Any], edge: str) -> str:
    """What the other edges' traffic (both families) suffered: nothing, one hopes."""
    fams = [part[f] for f in FAMILIES]
    failure = sum(p["conns"]["disturbed_by_failure"] for p in fams)
    on_other = sum(p["conns"]["on_other"] for p in fams)
    back = sum(p["conns"]["disturbed_by_return"] for p in fams)
    at_return = sum(p["conns"]["at_return"] for p in fams)
    idle = sum(p["conns"]["idle_broken"] for p in fams)
    idle_all = sum(p["conns"]["idle_other"] for p in fams)
    paused = sum(p["pings"]["disturbed"] for p in fams)
    return (
        f"not via {edge}: {count_text(failure, f'of {on_other} busy connections broken')} by the"
        f" failure, {count_text(back, f'of {at_return}')} by {edge}'s return, "
        f"{count_text(idle, f'of {idle_all} idle ones')}, "
        f"{count_text(paused, 'ping streams paused twice')}"
    )


def render_edge_summary(result: dict[str, Any]) -> RenderableType:
    """The run's figures for a terminal: one line per claim, each measured in the run."""
    table = summary_table(result["demo"])
    f, b, lab = result["failure"], result["blackhole"], result["lab"]
    edges = " · ".join(f"{e['name']} ({', '.join(e['isps'])})" for e in lab["edges"])
    table.add_row(
        "lab",
        f"LAN -> core -> {edges} -> internet; ecmpd and FRR on every router; built in"
        f" {result['build_s']:.1f} s, balanced after {result['ready_s']:.1f} s, removed",
    )
    name = f["edge"]
    table.add_row(
        "failure",
        f"every ISP of {name} gray-failed: out of the core's balancer after"
        f" [bold]{ms_text(f['out_of_balancer_ms'])}[/] (ecmpd's probes through it), withdrawn by"
        f" BGP at the core after {ms_text(f['withdrawn_ms'])}",
    )
    for family in FAMILIES:
        table.add_row("", _moved(f, family, name))
    table.add_row("undisturbed", _kept(f, name))
    table.add_row(
        "return",
        f"{name} announced again after {ms_text(f['announced_again_ms'])}, back in the core's"
        f" balancer after {ms_text(f['back_in_balancer_ms'])}; "
        + count_text(f["bgp_sessions_dropped"], "BGP sessions dropped"),
    )
    paths = "/".join(str(p) for p in b["bgp_paths_meanwhile"])
    table.add_row(
        "forwards nothing",
        f"{b['edge']} dropped what it forwarded, BGP and BFD up (the core's BGP default kept"
        f" {paths} paths): out of the core's balancer after [bold]{ms_text(b['caught_ms'])}[/]"
        f", back {ms_text(b['back_in_balancer_ms'])} after the repair",
    )
    for family in FAMILIES:
        table.add_row("", _moved(b, family, b["edge"]))
    table.add_row("undisturbed", _kept(b, b["edge"]))
    t = result["traffic"]
    table.add_row(
        "traffic",
        f"{t['ping_streams']} ping streams at 100 Hz, {t['busy_per_family']} busy and"
        f" {t['idle_per_family']} idle TCP connections per family; {t['direction']};"
        f" {result['elapsed_s']:.0f} s",
    )
    return table

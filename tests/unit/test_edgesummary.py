"""The edges demo's summary: the JSON document and its terminal lines, from a made-up run."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from ecmpd.lab.edgefigures import Conns, Pings, Seen, Window
from ecmpd.lab.edgelayout import plan_edge_lab
from ecmpd.lab.edgerun import Blackholed, Failed
from ecmpd.lab.edgesummary import EdgeDemoRun, render_edge_summary, summarize

LAB = plan_edge_lab(2, "ecmpd-test-", Path("/nonexistent"))


def seen(moved: int, outage: float, broken: int = 0) -> dict[str, Seen]:
    conns = Conns(
        busy=32,
        on_failed=14,
        back_s=(0.9, 0.95),
        not_back=0,
        on_other=18,
        disturbed_by_failure=broken,
        at_return=32,
        disturbed_by_return=0,
        idle_other=30,
        idle_broken=0,
    )
    return {f: Seen(Pings(8, moved, outage, 0), conns) for f in ("ipv4", "ipv6")}


RUN = EdgeDemoRun(
    lab=LAB,
    duration_s=40.0,
    failed=Failed(Window("edge1", 10.0, 13.0, 15.0), 0.95, 0.8, 0.6, 1.05, 0),
    blackholed=Blackholed(Window("edge2", 20.0, 23.0, 25.0), 0.83, (2, 2), 0.5),
    failure=seen(4, 0.85),
    blackhole=seen(4, 0.9, broken=1),
    busy=32,
    idle=64,
    events=({"t": 10.0, "kind": "fault", "text": "gray failure"},),
    elapsed_s=30.0,
    build_s=0.2,
    ready_s=8.0,
)


def test_the_document_holds_every_figure_in_ms() -> None:
    doc = summarize(RUN)
    f, b = doc["failure"], doc["blackhole"]
    assert doc["demo"] == "ecmpd lab demo --edges 2"
    assert [e["name"] for e in doc["lab"]["edges"]] == ["edge1", "edge2"]
    assert doc["lab"]["edges"][1]["isps"] == ["isp-c", "isp-d"]
    assert (f["edge"], f["out_of_balancer_ms"], f["withdrawn_ms"]) == ("edge1", 800.0, 950.0)
    assert (f["announced_again_ms"], f["back_in_balancer_ms"], f["bgp_sessions_dropped"]) == (
        600.0,
        1050.0,
        0,
    )
    assert f["ipv6"]["pings"]["outage_ms"] == 850.0
    assert f["ipv4"]["conns"]["back_ms"] == [900.0, 950.0]
    assert (b["edge"], b["caught_ms"], b["bgp_paths_meanwhile"]) == ("edge2", 830.0, [2, 2])
    assert doc["traffic"]["ping_streams"] == 16 and doc["events"][0]["kind"] == "fault"


def test_the_terminal_lines_say_what_moved_and_what_did_not() -> None:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(render_edge_summary(summarize(RUN)))
    text = out.getvalue()
    assert "out of the core's balancer after 800 ms" in text
    assert "ipv6: 4 of 8 ping streams went via edge1 and paused 850 ms at most" in text
    assert "14 busy connections via edge1 reset and back via another edge within 950 ms" in text
    assert "0 of 36 busy connections broken by the failure, 0 of 64 by edge1's return" in text
    assert "2 of 36 busy connections broken" in text  # the blackhole's made-up breakage
    assert "kept 2/2 paths" in text and "0 BGP sessions dropped" in text

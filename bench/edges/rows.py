"""The edges benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met


def _outage(doc: dict[str, Any], key: str) -> str:
    median, worst = (
        get(doc, key, "failover", "outage_s", "median"),
        get(doc, key, "failover", "outage_s", "max"),
    )
    return f"{fmt(median, ' s')} median, {fmt(worst, ' s')} worst"


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    anchor = f"BGP alone at the core: {_outage(doc, 'bgp_only')}"
    return [
        (
            "an edge's ISPs all fail (gray, default checks) -> LAN traffic via the other edge"
            " (`bench.edges`)",
            _outage(doc, "ecmpd"),
            anchor,
            f"<= 1.0 s{met(doc, 'failover_default')}",
        ),
        (
            "the same, tuned checks (0.04 s / 0.07 s x 3, edges and core)",
            _outage(doc, "tuned"),
            anchor,
            f"<= 0.4 s{met(doc, 'failover_tuned')}",
        ),
        (
            "announce -> the core's FIB (an edge's uplinks drained, both families)",
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'withdrawn_median'), ' s')} median, "
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'withdrawn_max'), ' s')} worst",
            "-",
            f"<= 0.2 s{met(doc, 'announce_to_fib')}",
        ),
        (
            "an edge dies behind a switch (link and FRR killed), BFD 100 ms x 3",
            fmt(get(doc, "ecmpd", "edge_dies_s"), " s"),
            "-",
            f"<= 0.4 s{met(doc, 'edge_dies')}",
        ),
        (
            "an edge forwards nothing but stays up -> out of the core's balancer",
            fmt(get(doc, "ecmpd", "forwards_nothing_s"), " s"),
            "BGP/BFD alone: "
            + ("never" if get(doc, "bgp_only", "forwards_nothing_s") is None else "noticed"),
            f"<= 1.0 s{met(doc, 'forwards_nothing')}",
        ),
        (
            "LAN streams through the other edge paused by the failure or the return",
            f"{fmt(get(doc, 'ecmpd', 'failover', 'disturbed'))}",
            f"BGP alone: {fmt(get(doc, 'bgp_only', 'failover', 'disturbed'))}",
            f"0{met(doc, 'undisturbed')}",
        ),
    ]

"""The edges benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met

FAMILIES = ("ipv4", "ipv6")


def _spread(doc: dict[str, Any], *path: str) -> str:
    median, worst = get(doc, *path, "median"), get(doc, *path, "max")
    return f"{fmt(median, ' s')} median, {fmt(worst, ' s')} worst"


def _total(doc: dict[str, Any], variant: str, key: str) -> int | None:
    values = [get(doc, variant, "failover", f, key) for f in FAMILIES]
    return None if None in values else sum(values)


def _broken(doc: dict[str, Any], variant: str) -> str:
    """Connections through the surviving edge broken or stalled: by the failure, the return."""
    return (
        f"{fmt(_total(doc, variant, 'disturbed_by_failure'))} of "
        f"{fmt(_total(doc, variant, 'conns_on_other'))} / "
        f"{fmt(_total(doc, variant, 'disturbed_by_return'))} of "
        f"{fmt(_total(doc, variant, 'conns_at_return'))} busy; idle: "
        f"{fmt(_total(doc, variant, 'idle_broken'))} of {fmt(_total(doc, variant, 'idle_other'))}"
    )


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    bgp = "BGP alone at the core: "
    v4, v6 = ("failover", "ipv4"), ("failover", "ipv6")
    return [
        (
            "an edge's ISPs all fail (gray, default checks) -> LAN ping streams resume via the"
            " other edge (IPv4; `bench.edges`)",
            _spread(doc, "ecmpd", *v4, "outage_s"),
            bgp + _spread(doc, "bgp_only", *v4, "outage_s"),
            f"<= 1.0 s{met(doc, 'failover_default')}",
        ),
        (
            "the same, IPv6 (::/0 announced by the edges, NAT66 in the lab)",
            _spread(doc, "ecmpd", *v6, "outage_s"),
            bgp + _spread(doc, "bgp_only", *v6, "outage_s"),
            f"<= 1.0 s{met(doc, 'failover_default')}",
        ),
        (
            "the same, tuned checks (0.04 s / 0.07 s x 3, edges and core; IPv4 / IPv6 worst)",
            f"{fmt(get(doc, 'tuned', *v4, 'outage_s', 'max'), ' s')} / "
            f"{fmt(get(doc, 'tuned', *v6, 'outage_s', 'max'), ' s')}",
            "BGP alone at the core (default checks on the edges): "
            + _spread(doc, "bgp_only", *v4, "outage_s"),
            f"<= 0.4 s{met(doc, 'failover_tuned')}",
        ),
        (
            "the failed edge's TCP connections (NATed, busy) back via the other edge, after the"
            " fault (IPv4 / IPv6)",
            f"{_spread(doc, 'ecmpd', *v4, 'conns_back_s')} / "
            f"{_spread(doc, 'ecmpd', *v6, 'conns_back_s')}",
            bgp
            + f"{_spread(doc, 'bgp_only', *v4, 'conns_back_s')} / "
            + _spread(doc, "bgp_only", *v6, "conns_back_s"),
            "-",
        ),
        (
            "TCP connections through the surviving edge broken or stalled > 1 s by the failure /"
            " by the return (both families)",
            _broken(doc, "ecmpd"),
            bgp + _broken(doc, "bgp_only"),
            f"0{met(doc, 'undisturbed')}",
        ),
        (
            "announce -> the core's FIB (an edge's uplinks drained / undrained, both families)",
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'withdrawn_median'), ' s')} / "
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'restored_median'), ' s')} median, "
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'withdrawn_max'), ' s')} / "
            f"{fmt(get(doc, 'ecmpd', 'announce_to_fib_s', 'restored_max'), ' s')} worst",
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
    ]

"""The connections benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met, pct


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    rows: list[Row] = []
    idle = doc.get("idle") or {}
    ours = get(idle, "variants", "ecmpd") or {}
    group = get(idle, "variants", "anchor_resilient_group") or {}
    route = get(idle, "variants", "anchor_multipath_route") or {}
    if ours:
        rows.append(
            (
                f"idle NATed connections on healthy uplinks broken by another's failure and "
                f"recovery ({ours.get('connections')} connections, "
                f"{idle.get('buckets')} buckets, silent {fmt(idle.get('silent_s'), ' s', 0)}; "
                "`bench.connections`)",
                f"{fmt(ours.get('healthy_broken'))} of {fmt(ours.get('on_healthy_uplinks'))}",
                f"resilient group alone ({idle.get('anchor_idle_timer_s')} s idle timer): "
                f"{fmt(group.get('healthy_broken'))} ({pct(group.get('healthy_broken_fraction'))});"
                f" classic multipath route: {fmt(route.get('healthy_broken'))} "
                f"({pct(route.get('healthy_broken_fraction'))})",
                "0" + met(doc, "idle_broken_by_recovery"),
            )
        )
    inter = get(doc, "interrupted", "variants") or {}
    ours_i, anchor_i = inter.get("ecmpd") or {}, inter.get("anchor_multipath_route") or {}
    if ours_i:
        rows.append(
            (
                "the failed uplink's connections back by another uplink, after it left "
                f"(median / worst; {ours_i.get('on_failed_uplink')} of "
                f"{ours_i.get('connections')} chat connections)",
                f"{fmt(get(ours_i, 'back_after_left_s', 'median'), ' s')} / "
                f"{fmt(get(ours_i, 'back_after_left_s', 'max'), ' s')} (reset at once)",
                "classic multipath route switched after the same detection time (TCP's own "
                f"backoff): {fmt(get(anchor_i, 'back_after_left_s', 'median'), ' s')} / "
                f"{fmt(get(anchor_i, 'back_after_left_s', 'max'), ' s')}",
                "≤ 0.5 s" + met(doc, "interrupted_back_s"),
            )
        )
    cost = doc.get("cost") or {}
    rounds = len(get(cost, "rounds", "ecmpd") or [])
    if cost:
        rows.append(
            (
                f"unshaped forwarding through NAT with connection marks (iperf3, "
                f"{cost.get('streams')} streams, median of {rounds})",
                f"{fmt(cost.get('ecmpd_mbit'), ' Mbit/s', 0)} "
                f"({pct(cost.get('cost_fraction'))} less; rounds {spread(cost, 'ecmpd')})",
                f"NAT alone, no marks: {fmt(cost.get('nat_only_mbit'), ' Mbit/s', 0)} "
                f"(rounds {spread(cost, 'nat_only')})",
                "",
            )
        )
    return rows


def spread(cost: dict[str, Any], variant: str) -> str:
    """`lowest-highest` of a variant's rounds, in Mbit/s."""
    rounds = get(cost, "rounds", variant) or []
    return f"{min(rounds):.0f}-{max(rounds):.0f}" if rounds else "-"

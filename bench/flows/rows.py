"""The flows benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met, pct, times


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    rows: list[Row] = []
    lookups = doc.get("moved_lookups") or {}
    ours = get(lookups, "variants", "ecmpd_resilient") or {}
    anchor = get(lookups, "variants", "anchor_multipath_route") or {}
    if ours:
        rows.append(
            (
                f"healthy flows moved when an uplink fails ({lookups.get('flows')} flows by "
                "kernel lookup, `bench.flows`)",
                f"{fmt(get(ours, 'failure', 'healthy_moved'))} "
                f"({pct(get(ours, 'failure', 'healthy_moved_fraction'))})",
                f"classic multipath route: {fmt(get(anchor, 'failure', 'healthy_moved'))} "
                f"({pct(get(anchor, 'failure', 'healthy_moved_fraction'))})",
                "0" + met(doc, "healthy_moved_on_failure"),
            )
        )
        rows.append(
            (
                "new flows (lookups) moved when it comes back; connections keep their "
                "uplink by their marks",
                f"{fmt(get(ours, 'recovery', 'moved'))} "
                f"({pct(get(ours, 'recovery', 'moved_fraction'))}), "
                f"{fmt(get(ours, 'recovery', 'moved_not_to_recovered'))} elsewhere",
                f"classic multipath route: {fmt(get(anchor, 'recovery', 'moved'))} "
                f"({pct(get(anchor, 'recovery', 'moved_fraction'))}), "
                f"{fmt(get(anchor, 'recovery', 'moved_not_to_recovered'))} elsewhere",
                "its share, 0 elsewhere" + met(doc, "moved_on_recovery"),
            )
        )
    tcp = doc.get("moved_tcp") or {}
    ours_t = get(tcp, "variants", "ecmpd_resilient") or {}
    anchor_t = get(tcp, "variants", "anchor_multipath_route") or {}
    if ours_t:
        rows.append(
            (
                f"healthy NATed TCP connections broken by a failure / a recovery "
                f"({tcp.get('connections')} connections)",
                f"{fmt(get(ours_t, 'failure', 'healthy_broken'))} / "
                f"{fmt(get(ours_t, 'recovery', 'broken'))}",
                f"classic multipath route: {fmt(get(anchor_t, 'failure', 'healthy_broken'))} / "
                f"{fmt(get(anchor_t, 'recovery', 'broken'))}",
                "0 / 0",
            )
        )
    share = doc.get("recovered_share") or {}
    runs = share.get("runs") or []
    ours_s = [r for r in runs if r.get("idle_timer_s") == 0]
    anchors = [r for r in runs if r.get("idle_timer_s")]
    if runs:
        timers = "; ".join(
            f"{fmt(r.get('t_share_s'), ' s', 1)} with a {r.get('idle_timer_s')} s idle timer "
            f"(load {r.get('load')})"
            for r in anchors
        )
        default = share.get("extrapolated_default") or {}
        ecmpd = "; ".join(
            f"{fmt(r.get('t_share_s'), ' s', 2)} (load {r.get('load')})" for r in ours_s
        )
        rows.append(
            (
                "a recovered uplink back to its weighted share of new flows (ecmpd: "
                "idle_timer 0, established connections kept by their marks)",
                ecmpd or "-",
                f"the resilient group alone: {timers}; at the former default "
                f"{share.get('default_idle_timer_s')} s "
                f"≈{fmt(default.get('load_stops_t_share_s'), ' s', 0)} (load stops), "
                f"≈{fmt(default.get('load_sustained_t_share_s'), ' s', 0)} (sustained; "
                "extrapolated)",
                "≤ 1 s" + met(doc, "recovered_share_s"),
            )
        )
    for key, good in (doc.get("goodput") or {}).items():
        if not isinstance(good, dict):  # e.g. the unshaped ceiling figure of a full run
            continue
        ours_g, single = good.get("ecmpd") or {}, good.get("anchor_single_route") or {}
        rows.append(
            (
                f"bulk TCP goodput through NAT, {key.replace('_', ' ')} "
                f"({'+'.join(str(r) for r in good.get('rates_mbit', []))} Mbit/s)",
                f"{fmt(ours_g.get('mbit'), ' Mbit/s', 0)} "
                f"({pct(ours_g.get('fraction'))} of the sum)",
                f"a single default route: {fmt(single.get('mbit'), ' Mbit/s', 0)} "
                f"(ecmpd carries {times(good.get('ratio_vs_anchor'))})",
                f"≥ {pct(get(doc, 'targets', 'goodput_fraction'))} of the sum"
                + met(doc, "goodput_fraction"),
            )
        )
    return rows

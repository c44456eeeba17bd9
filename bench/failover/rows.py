"""The failover benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import TIMES, Row, fmt, get, met, times


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    rows: list[Row] = []
    cron = get(doc, "anchor_cron", "modelled_restore_s") or {}
    period = get(doc, "anchor_cron", "period_s")
    for name, target_key in (("default", "restore_default_s"), ("tuned", "restore_tuned_s")):
        udp = get(doc, name, "restore_udp_s") or {}
        check = get(doc, name, "check") or {}
        how = (
            f"{fmt(check.get('interval_s'), ' s', 3)} / {fmt(check.get('timeout_s'), ' s', 3)}"
            f" {TIMES} {check.get('down_after')}"
            if check
            else name
        )
        ratio = get(doc, "ratios", f"{name}_vs_cron_median")
        rows.append(
            (
                f"traffic restored after a gray failure, {name} check ({how}; "
                f"{get(doc, 'runs')} runs, `bench.failover`)",
                f"{fmt(udp.get('median'), ' s')} median, {fmt(udp.get('max'), ' s')} worst",
                f"cron ping every {fmt(period, ' s', 0)}: {fmt(cron.get('median'), ' s', 1)} "
                f"median, {fmt(cron.get('max'), ' s', 1)} worst"
                + (
                    f" (≈{1 / ratio:.0f}{TIMES} slower)"
                    if isinstance(ratio, float) and ratio
                    else ""
                ),
                f"≤ {fmt(get(doc, 'targets', target_key), ' s')}" + met(doc, target_key),
            )
        )
    rows += ipv6_rows(doc)
    carrier = get(doc, "default", "carrier_removal_ms") or {}
    rows.append(
        (
            "carrier loss → uplink out of the group",
            f"{fmt(carrier.get('median'), ' ms', 1)} median, "
            f"{fmt(carrier.get('max'), ' ms', 1)} worst",
            "-",
            "",
        )
    )
    loss = doc.get("false_transitions") or {}
    anchor = loss.get("anchor_cron") or {}
    rows.append(
        (
            f"false failovers, {fmt(loss.get('duration_s'), ' s', 0)} of "
            f"{fmt(100 * (loss.get('loss') or 0), '%', 0)} random loss on every ISP",
            fmt(loss.get("count")),
            f"cron monitor: {fmt(anchor.get('false_removals'))} wrong removal(s) in "
            f"{fmt(anchor.get('ticks'))} ticks",
            f"{fmt(get(doc, 'targets', 'false_transitions'))}" + met(doc, "false_transitions"),
        )
    )
    cost = doc.get("daemon_cost") or {}
    rows.append(
        (
            f"daemon cost, {cost.get('uplinks')} uplinks {TIMES} {cost.get('targets')} targets at "
            f"{fmt(cost.get('rate_hz'), ' Hz', 0)}",
            f"{fmt(cost.get('cpu_percent'), '% of a core')}, {fmt(cost.get('rss_mb'), ' MB', 0)}"
            " RSS",
            "-",
            f"≤ {fmt(get(doc, 'targets', 'cpu_percent'), '%', 0)}, "
            f"≤ {fmt(get(doc, 'targets', 'rss_mb'), ' MB', 0)}" + met(doc, "cpu_percent", "rss_mb"),
        )
    )
    return rows


def ipv6_rows(doc: dict[str, Any]) -> list[Row]:
    """The dual-stack lab's row: IPv6 out of / back in its group, beside IPv4 in the same lab."""
    dual = doc.get("ipv6")
    if not isinstance(dual, dict):
        return []  # a document from before the IPv6 phase

    def pair(family: str, stat: str) -> str:
        removal = get(dual, f"{family}_removal_s", stat)
        return f"{fmt(removal, ' s')} / {fmt(get(dual, f'{family}_recovery_s', stat), ' s')}"

    # During the IPv6 faults, the IPv4 group must keep every uplink.
    changed = get(dual, "other_family_changes", "ipv6")
    untouched = ""
    if changed == 0:
        untouched = "; IPv4 group untouched"
    elif changed is not None:
        untouched = f"; IPv4 group changed in {changed} run(s)"
    ratios = [get(doc, "ratios", f"ipv6_vs_ipv4_{k}_median") for k in ("removal", "recovery")]
    return [
        (
            "IPv6 gray failure: out of the IPv6 group / back (default check, worst case "
            f"{fmt(dual.get('detection_bound_s'), ' s')} / "
            f"{fmt(dual.get('recovery_bound_s'), ' s')}; "
            f"{fmt(get(dual, 'ipv6_removal_s', 'n'))} runs)",
            f"{pair('ipv6', 'median')} median, {pair('ipv6', 'max')} worst{untouched}",
            f"IPv4 gray failure, same lab: {pair('ipv4', 'median')} median, "
            f"{pair('ipv4', 'max')} worst (IPv6 takes {' / '.join(times(r) for r in ratios)})",
            f"≤ {fmt(get(doc, 'targets', 'ipv6_detection_s'), ' s')} / "
            f"≤ {fmt(get(doc, 'targets', 'ipv6_recovery_s'), ' s')}"
            + met(doc, "ipv6_detection_s", "ipv6_recovery_s"),
        )
    ]

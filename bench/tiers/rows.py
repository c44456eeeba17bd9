"""The tiers benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met


def rows(doc: dict[str, Any]) -> list[Row]:
    """A backup tier's takeover beside a tier-1 failover in the same lab, and cron."""
    out: list[Row] = []
    for key, what, anchor in (
        ("takeover", "backup tier takes over: both tier-1 uplinks gray-fail", "takeover"),
        ("tier1", "tier-1 failover, same lab (the other tier-1 uplink takes over)", "tier1"),
    ):
        udp = get(doc, key, "restore_udp_s") or {}
        cron = get(doc, "anchor_cron", f"modelled_{anchor}_restore_s") or {}
        target = ""
        if key == "takeover":
            target = f"≤ {fmt(get(doc, 'targets', 'takeover_restore_s'), ' s')}" + met(
                doc, "takeover_restore_s"
            )
        out.append(
            (
                f"traffic restored, {what} (default check; {get(doc, 'runs')} runs, `bench.tiers`)",
                f"{fmt(udp.get('median'), ' s')} median, {fmt(udp.get('max'), ' s')} worst",
                f"cron with a backup list every {fmt(get(doc, 'anchor_cron', 'period_s'), ' s', 0)}"
                f" (modelled): {fmt(cron.get('median'), ' s', 1)} median, "
                f"{fmt(cron.get('max'), ' s', 1)} worst",
                target,
            )
        )
    probes = doc.get("standby_probes") or {}
    cron = get(doc, "anchor_cron", "ping_bytes_per_min")
    window = fmt(probes.get("seconds"), " s", 0)
    every = fmt(probes.get("interval_s"), " s", 1)
    out.append(
        (
            f"probe traffic of a standing-by metered uplink ({window} counted at its ISP;"
            f" 2 targets, a round every {every})",
            f"{fmt(probes.get('bytes_per_min'), ' B/min', 0)}",
            f"cron ping of the gateway every minute: {fmt(cron, ' B/min')} (no check beyond it)",
            f"≤ {fmt(get(doc, 'targets', 'standby_probe_bytes_per_min'), ' B/min', 0)}"
            + met(doc, "standby_probe_bytes_per_min"),
        )
    )
    return out

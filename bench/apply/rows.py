"""The apply benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met, times


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    rows: list[Row] = []
    results = doc.get("results") or []
    for r in results:
        n = r.get("uplinks")
        rows.append(
            (
                f"`apply` of {n} uplinks from scratch (median; `bench.apply`)",
                f"{fmt(get(r, 'apply_ms', 'median'), ' ms')} ({r.get('apply_ops')} ops)",
                "`ip -batch` + `nft -f` of the same state: "
                f"{fmt(r.get('anchor_ip_batch_ms'), ' ms')} "
                f"(ecmpd takes {times(r.get('ratio_apply_vs_ip_batch'))})",
                f"≤ {get(doc, 'targets', 'apply_64_ms')} ms at 64" + met(doc, "apply_64_ms")
                if n == 64
                else "",
            )
        )
    if results:
        last = results[-1]
        rows.append(
            (
                f"re-apply, {last.get('uplinks')} uplinks",
                f"{fmt(get(last, 'reapply_ms', 'median'), ' ms')}, {last.get('reapply_ops')} ops",
                "-",
                "0 changes",
            )
        )
        worst = max(results, key=lambda r: get(r, "failover_ms", "median") or 0)
        rows.append(
            (
                f"failover operation (one group replace), {worst.get('uplinks')} uplinks",
                f"{fmt(get(worst, 'failover_ms', 'median'), ' ms', 3)} median, "
                f"{fmt(get(worst, 'failover_ms', 'max'), ' ms', 3)} max",
                "classic multipath `ip route replace`: "
                f"{fmt(worst.get('anchor_multipath_replace_ms'), ' ms', 3)} "
                f"(ecmpd takes {times(worst.get('ratio_failover_vs_multipath_replace'))})",
                f"≤ {get(doc, 'targets', 'failover_ms')} ms" + met(doc, "failover_ms"),
            )
        )
    return rows

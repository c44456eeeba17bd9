"""The table benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, times


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    routes = doc.get("routes")
    full, empty = doc.get("full_table") or {}, doc.get("empty_table") or {}
    return [
        (
            f"kernel read (observe) with {routes} BGP routes in main (`bench.table`)",
            f"{fmt(get(full, 'observe_ms', 'median'), ' ms')} "
            f"(empty table: {fmt(get(empty, 'observe_ms', 'median'), ' ms')})",
            "one unfiltered route dump: "
            f"{fmt(get(full, 'anchor_unfiltered_dump_ms', 'median'), ' ms')} "
            f"(ecmpd takes {times(doc.get('ratio_observe_vs_unfiltered_dump'))})",
            "-",
        ),
        (
            f"carrier loss to uplink out of the group, {routes} routes in main",
            f"{fmt(get(full, 'carrier_path_ms', 'median'), ' ms')} "
            f"(empty table: {fmt(get(empty, 'carrier_path_ms', 'median'), ' ms')})",
            "-",
            "-",
        ),
    ]

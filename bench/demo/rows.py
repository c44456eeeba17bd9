"""The demo benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, fmt, get, met


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    ours, anchor = get(doc, "variants", "ecmpd"), get(doc, "variants", "no_queue")
    if not ours or not anchor:
        return []
    n = len(ours["runs"])
    return [
        (
            "every interrupted flow delivering again after the failed uplink left, "
            f"`ecmpd lab demo` ({n} runs each, `bench.demo`): the last flow of a run, "
            "median / worst (the median flow)",
            f"{fmt(ours['last_median_s'], ' s')} / {fmt(ours['last_worst_s'], ' s')} "
            f"({fmt(ours['median_median_s'], ' s')}); within 0.5 s in "
            f"{ours['within_target']} of {n} (uplinks' `queue`)",
            f"the same without `queue` (drop-tail modems): {fmt(anchor['last_median_s'], ' s')}"
            f" / {fmt(anchor['last_worst_s'], ' s')} ({fmt(anchor['median_median_s'], ' s')});"
            f" within 0.5 s in {anchor['within_target']} of {n}",
            "≤ 0.5 s" + met(doc, "every_flow_back_s"),
        )
    ]

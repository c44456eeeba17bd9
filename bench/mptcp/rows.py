"""The MPTCP benchmark's rows in the README's performance table."""

from __future__ import annotations

from typing import Any

from bench.cells import TIMES, Row, fmt, get, met, pct, times

MBIT = " Mbit/s"
UNEQUAL = (
    ("rtt_10ms_60ms", "10 ms (100 Mbit/s) vs 60 ms (200 Mbit/s)"),
    ("rtt_60ms_10ms", "60 ms (100 Mbit/s) vs 10 ms (200 Mbit/s)"),
)


def _goodput(doc: dict[str, Any], key: str, what: str, target: str) -> Row:
    g = get(doc, "goodput", key) or {}
    singles = ", ".join(
        f"{n} {fmt(v, MBIT, 1)}" for n, v in g.get("tcp_by_uplink_mbit", {}).items()
    )
    return (
        f"one download over 100 + 200 Mbit/s uplinks, {what} (`bench.mptcp`)",
        f"one MPTCP connection: {fmt(g.get('mptcp_mbit'), MBIT, 1)}"
        f" ({pct(g.get('mptcp_vs_shaped_sum'))} of the shaped sum,"
        f" {fmt(g.get('mptcp_vs_best_single'), TIMES)} the best single uplink)",
        f"one TCP connection by one uplink: {singles};"
        f" by ecmpd's balancer: {fmt(g.get('tcp_balanced_mbit'), MBIT, 1)}",
        target,
    )


def _ceiling(doc: dict[str, Any]) -> str:
    """The most one connection can gain over the best single uplink: line rate / best."""
    g = get(doc, "goodput", UNEQUAL[1][0]) or {}
    singles = (g.get("tcp_by_uplink_mbit") or {}).values()
    if not singles:
        return "-"
    share = max(singles) / max(doc.get("rates_mbit") or [1])  # TCP goodput share of a rate
    return f"at most {fmt(sum(doc.get('rates_mbit') or []) * share / max(singles), TIMES)}"


def _within(value: Any, poll: Any) -> str:
    """A polled time: 'within one poll' when it was seen in the same poll."""
    if value == 0 and poll:
        return f"< {fmt(poll, ' s')} (one poll)"
    return fmt(value, " s")


def rows(doc: dict[str, Any]) -> list[Row]:
    """This benchmark's rows, from its own document."""
    share = get(doc, "targets", "equal_rtt_share_of_shaped_sum")
    gain = get(doc, "targets", "unequal_rtt_times_best_single")
    out = [
        _goodput(doc, "equal_rtt", "equal RTT",
                 f"≥ {pct(share)} of the sum" + met(doc, "equal_rtt_share_of_shaped_sum")),
        _goodput(doc, UNEQUAL[0][0], UNEQUAL[0][1],
                 f"≥ {times(gain)} the best" + met(doc, "unequal_rtt_times_best_single")),
        _goodput(doc, UNEQUAL[1][0], UNEQUAL[1][1], f"- (the line rate allows {_ceiling(doc)})"),
    ]  # fmt: skip
    s = doc.get("summary") or {}
    runs = len(get(doc, "events", "ecmpd") or [])
    alone_back = s.get("kernel_alone_return_s")
    out.append(
        (
            f"gap in a running MPTCP download when its first subflow's uplink fails ({runs} runs)",
            f"{fmt(s.get('gap_s_max'), ' s')} worst",
            f"kernel alone (endpoints never removed): {fmt(s.get('kernel_alone_gap_s'), ' s')}",
            f"≤ {fmt(get(doc, 'targets', 'gap_s'), ' s', 1)}" + met(doc, "gap_s"),
        )
    )
    out.append(
        (
            "a returning uplink carries the same connection again",
            f"{_within(s.get('return_s_max'), s.get('poll_s'))} after its return to service"
            f" ({fmt(s.get('carrying_after_heal_s_max'), ' s')} after the repair), worst",
            "kernel alone, after the repair: "
            + ("not within 10 s" if alone_back is None else fmt(alone_back, " s")),
            f"≤ {fmt(get(doc, 'targets', 'return_s'), ' s', 1)}" + met(doc, "return_s"),
        )
    )
    return out

"""The demo summaries for a terminal: the table and text helpers `ecmpd lab demo` and
its edges variant share, and render_summary(), the demo's claims one line each. Pure."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table

from ecmpd.lab.summary import PHASES


def summary_table(demo: str) -> Table:
    """A demo's summary table: a bold claim and its figures per row, no header."""
    table = Table(
        title=f"{demo}: summary (every figure measured in this run)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_header=False,
        padding=(0, 1),
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    return table


def ms_text(value: float | None) -> str:
    """`123 ms`, or `-` when unknown."""
    return "-" if value is None else f"{value:.0f} ms"


def count_text(n: int, what: str) -> str:
    """`n what`, green when none, red otherwise (errors, drops: zero is good)."""
    return f"[{'green' if n == 0 else 'red'}]{n} {what}[/]"


def render_summary(result: dict[str, Any]) -> RenderableType:
    """The run's figures for a terminal: one line per claim, each measured in the run."""
    table = summary_table("ecmpd lab demo")
    steady, failure, recovery = (result["phases"][p] for p in PHASES[:3])
    fo, rec = result["failover"], result["recovery"]
    name = fo["uplink"]
    table.add_row(
        "aggregate",
        f"[cyan]{steady['aggregate_mbit']:.0f} Mbit/s[/] of {steady['capacity_mbit']} summed "
        f"capacity ([bold]{steady['aggregate_fraction']:.0%}[/]), "
        f"{result['vs_best_single_uplink']:.2f}x the fastest uplink alone",
    )
    table.add_row("split by weight", _split(steady))
    table.add_row(
        "failover",
        f"gray failure on {name} ({fo['flows_on_it']} flows on it): out of the group after "
        f"[bold]{fo['removal_ms']:.0f} ms[/]; its connections reset within "
        f"[bold]{ms_text(fo['reset_after_removal_ms'])}[/] of that, interrupted flows back "
        f"(reconnected by the others) within [bold]{ms_text(fo['reconnected_after_removal_ms'])}"
        f"[/] (median; the last {ms_text(fo['reconnected_last_after_removal_ms'])}), "
        "delivering again within "
        f"[bold]{ms_text(fo['restore_median_after_removal_ms'])}[/] (median) and "
        f"[bold]{fo['restore_after_removal_ms']:.0f} ms[/] (all) of it leaving, "
        f"{fo['restore_median_ms']:.0f} ms (median) and {fo['restore_ms']:.0f} ms (all) after "
        "the fault",
    )
    table.add_row(
        "during the failure",
        f"{failure['aggregate_mbit']:.0f} Mbit/s of the {failure['capacity_mbit']} left "
        f"({failure['aggregate_fraction']:.0%}); {_split(failure)}",
    )
    moved = result["flows_moved"]
    table.add_row(
        "flows moved",
        f"{moved['off_failed_uplink']} connections had to leave {name} "
        f"({moved['rerouted_seen']} of them caught by a kernel lookup being re-routed before "
        "their reset); " + count_text(moved["healthy"], "healthy flows moved"),
    )
    rebalanced = (
        f", its share back {rec['rebalanced_ms'] / 1000:.1f} s later"
        if rec["rebalanced_ms"] is not None
        else ", its share not back within the phase"
    )
    table.add_row(
        "recovery",
        f"{name} back in the group {rec['back_in_group_ms'] / 1000:.1f} s after the heal"
        f"{rebalanced}; then {_split(recovery)}",
    )
    table.add_row("IPv6", _ipv6(result["ipv6"], name))
    table.add_row("backup tier", _backup_row(result.get("backup")))
    errors = result["errors"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(errors["kinds"].items()))
    table.add_row(
        "errors",
        f"{errors['on_failed_uplink']} connections on {name} ended by the failure"
        + (f" ({kinds})" if kinds else "")
        + "; "
        + count_text(errors["healthy"], "errors on healthy flows"),
    )
    table.add_row(
        "traffic",
        f"{result['traffic']['flows']} concurrent TCP flows, {result['traffic']['connections']} "
        f"connections in {result['elapsed_s']:.0f} s; lab built in {result['build_s']:.1f} s, "
        "removed",
    )
    return table


def _backup_row(backup: dict[str, Any] | None) -> str:
    if backup is None:
        return "-"
    return (
        f"every tier-1 ISP fails: {backup['uplink']} (tier 2, metered) carries everything "
        f"[bold]{backup['takeover_ms']:.0f} ms[/] after the faults; they heal: tier 1 back "
        f"{backup['failback_ms'] / 1000:.1f} s later, {backup['uplink']}'s connections reset, "
        f"{backup['flows_on_it_after_failback']} flows left on it"
    )


def _ipv6(v6: dict[str, Any], name: str) -> str:
    """The summary's IPv6 line: the failed uplink's IPv6 nexthop, the light flows' split."""
    flows = v6["steady_flows"]
    targets = flows["target_share"]
    by_isp = " · ".join(f"{n} {k}" for n, k in flows["by_isp"].items())
    shares = " · ".join(
        f"{n} {share:.0%} [magenta]({targets[n]:.0%})[/]" for n, share in flows["out_share"].items()
    )
    style = "green" if flows["delivered"] == flows["flows"] else "red"
    delivered = f"[{style}]{flows['delivered']} delivered[/]"
    return (
        f"{name} out of the IPv6 group after [bold]{v6['removal_ms']:.0f} ms[/], back "
        f"{v6['back_in_group_ms'] / 1000:.1f} s after the heal; steady phase: "
        f"{flows['flows']} light flows from {flows['client']} (no NAT), {delivered}, "
        f"forwarded by {by_isp}; IPv6 bytes out {shares}"
    )


def _split(phase: dict[str, Any]) -> str:
    parts = [
        f"{n} {u['share']:.1%} [magenta]({u['target_share']:.1%})[/]"
        for n, u in phase["uplinks"].items()
        if u["target_share"] > 0
    ]
    return " · ".join(parts) + f", off by at most {phase['max_error_pp']:.1f} pp"

"""`ecmpd status`: the daemon's status when it runs, else the kernel's view (ecmpd.status)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ecmpd.cli.common import EXIT_OK, Session, print_json, session
from ecmpd.control import DaemonNotRunning, request_status
from ecmpd.kernel.mptcpdiag import dump_subflows
from ecmpd.kernel.netdev import read_interface_counters
from ecmpd.livecells import mptcp_text
from ecmpd.status import (
    DisplayState,
    Status,
    UplinkStatus,
    kernel_order_view,
    kernel_status,
    with_mptcp,
    with_order,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="uplinks, their state and the rules in order")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def kernel_view(s: Session) -> Status:
    """The status built from the kernel alone (no daemon running)."""
    names = s.desired().rule_names
    status = kernel_status(s.config, s.observed, s.facts, names)
    by_if = read_interface_counters({u.interface for u in s.config.uplinks})
    counters = {
        u.name: (c["rx_bytes"], c["tx_bytes"])
        for u in s.config.uplinks
        if (c := by_if.get(u.interface)) is not None
    }
    status = with_order(status, s.config, kernel_order_view(s.config, s.observed, names, counters))
    if s.config.mptcp_uplinks():
        # The daemon serves these itself (ecmpd.subflows); without one, read them here.
        subflows = dump_subflows(s.writer.nl)
        status = with_mptcp(status, s.config, s.observed, s.facts, subflows)
    return status


def run(args: argparse.Namespace) -> int:
    status: Status | None
    try:
        status = request_status(args.run_dir)
    except DaemonNotRunning:
        status = None
    if status is None:
        with session(args, check=False) as s:
            status = kernel_view(s)
    if args.json:
        print_json(status.to_json())
        return EXIT_OK
    render(status, Console())
    return EXIT_OK


def render(status: Status, console: Console) -> None:
    """Uplinks (with health figures when a daemon answers) and, from the kernel, rules."""
    daemon = status.source == "daemon"
    dual = any("ipv6" in u.families for u in status.uplinks)
    table = Table(title="uplinks" + ("" if daemon else " (kernel view: no daemon running)"))
    cols = ["name", "interface", "state", "weight", "in balancer", "table"]
    cols += ["families"] if dual else []
    cols += ["since", "reason", "targets (rtt, loss)", "detects in"] if daemon else ["gateway"]
    mptcp = any(u.mptcp is not None for u in status.uplinks)
    cols += ["mptcp"] if mptcp else []
    # The failover order, once the config has one (tiers, metering).
    order = any(u.tier != 1 or u.metered for u in status.uplinks)
    cols += ["tier", "role", "in / out"] if order else []
    for col in cols:
        table.add_column(col)
    for u in status.uplinks:
        row = [
            u.name,
            u.interface,
            _state(u.state),
            str(u.weight),
            "yes" if u.in_balancer else "no",
            str(u.table),
        ]
        if dual:
            # Health is per family: an uplink can be up in IPv4 and down in IPv6.
            row.append(
                " ".join(
                    f"{label.replace('ip', '')} {_state(f.state)}"
                    for label, f in u.families.items()
                )
            )
        if daemon:
            targets = ", ".join(
                f"{t.target} {t.rtt_ms if t.rtt_ms is not None else '-'} ms {t.loss:.0%}"
                for t in u.targets
            )
            primary = u.primary
            row += [
                f"{primary.for_s or 0:.0f}s ago",
                u.reason or "",
                targets or "-",
                f"{primary.detection_time_s or 0:.2f}s",
            ]
        else:
            gateways = [g for g in (u.gateway, u.gateway6) if g]
            row.append(", ".join(gateways) or "-")
        if mptcp:
            row.append(mptcp_text(u.mptcp))
        if order:
            row += [str(u.tier), _role(u), _volume(u)]
        table.add_row(*row)
    console.print(table)
    if status.rules is not None:
        rules = Table(title="rules (in order)")
        for col in ("priority", "name", "ip rule"):
            rules.add_column(col)
        for r in status.rules:
            ip = "ip -6 rule" if r.family == "ipv6" else "ip rule"
            rules.add_row(str(r.priority), r.name or "-", f"{ip} {r.rule}")
        console.print(rules)
    if status.refused:
        refused = Table(title="kernel operations not applied (the daemon retries them)")
        for col in ("kind", "uplink", "operation", "kernel said", "tries", "next try"):
            refused.add_column(col)
        for op in status.refused:
            refused.add_row(
                op.kind.value,
                op.uplink or "-",
                op.op,
                op.error,
                str(op.attempts),
                f"in {op.retry_in_s:.0f}s",
            )
        console.print(refused)


def _role(u: UplinkStatus) -> str:
    """The role, and how soon a standing-by uplink takes over at worst."""
    role = u.role.value if u.role is not None else "-"
    if u.takeover_time_s is not None:
        role += f" (takes over ≤ {u.takeover_time_s:.2f}s)"
    return role


def _volume(u: UplinkStatus) -> str:
    """Bytes in and out; the data cap's use."""
    text = "-"
    if u.bytes_in is not None and u.bytes_out is not None:
        text = f"{_bytes(u.bytes_in)} / {_bytes(u.bytes_out)}"
    if u.data_cap is not None:
        used = _bytes(u.data_used) if u.data_used is not None else "?"
        text += f", cap {used} of {_bytes(u.data_cap)}" + (" (reached)" if u.last_resort else "")
    return text


def _bytes(n: int) -> str:
    """A byte count with a decimal unit, as caps are written."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _state(state: DisplayState) -> str:
    """A state in its colour."""
    colors = {"up": "green", "down": "red", "unknown": "yellow", "drained": "blue"}
    return f"[{colors[state]}]{state}[/]"

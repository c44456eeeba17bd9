"""`ecmpd status`: uplinks and rules as the kernel holds them (daemon figures later)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from ecmpd.cli.common import EXIT_OK, Session, print_json, session
from ecmpd.control import DaemonNotRunning, request
from ecmpd.desired import nexthop_id
from ecmpd.export.iptext import rule_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="uplinks, their state and the rules in order")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def kernel_status(s: Session) -> dict[str, Any]:
    """The status document built from the kernel alone."""
    group = next(
        (g for g in s.observed.groups if g.id == nexthop_id(s.config.balancer.table)), None
    )
    members = dict(group.members) if group else {}
    nexthops = {n.id for n in s.observed.nexthops}
    uplinks = []
    for u in s.config.uplinks:
        nhid = nexthop_id(u.table)
        iface = s.facts.interfaces.get(u.interface)
        in_balancer = nhid in members
        applied = nhid in nexthops
        uplinks.append(
            {
                "name": u.name,
                "interface": u.interface,
                "state": "up" if in_balancer else ("down" if applied else "unknown"),
                "weight": members.get(nhid, u.weight),
                "in_balancer": in_balancer,
                "table": u.table,
                "gateway": str(u.gateway) if u.gateway is not None else None,
                "carrier": iface.carrier if iface else None,
            }
        )
    names = dict(s.desired().rule_names)
    rules = [
        {"priority": r.priority, "name": names.get(r.priority), "rule": rule_args(r)}
        for r in sorted(s.observed.rules, key=lambda r: (r.priority, r.family))
    ]
    balancer = {
        "table": s.config.balancer.table,
        "group": group.id if group else None,
        "type": group.type.value if group else None,
    }
    return {"source": "kernel", "uplinks": uplinks, "rules": rules, "balancer": balancer}


def run(args: argparse.Namespace) -> int:
    try:
        doc = request(args.run_dir, {"cmd": "status"})["status"]
    except DaemonNotRunning:
        with session(args, check=False) as s:
            doc = kernel_status(s)
    if args.json:
        print_json(doc)
        return EXIT_OK
    render(doc, Console())
    return EXIT_OK


def render(doc: dict[str, Any], console: Console) -> None:
    """Uplinks (with health figures when a daemon answers) and, from the kernel, rules."""
    daemon = doc["source"] == "daemon"
    table = Table(title="uplinks" + ("" if daemon else " (kernel view: no daemon running)"))
    cols = ["name", "interface", "state", "weight", "in balancer", "table"]
    cols += ["since", "reason", "targets (rtt, loss)", "detects in"] if daemon else ["gateway"]
    for col in cols:
        table.add_column(col)
    colors = {"up": "green", "down": "red", "unknown": "yellow", "drained": "blue"}
    for u in doc["uplinks"]:
        row = [
            u["name"],
            u["interface"],
            f"[{colors[u['state']]}]{u['state']}[/]",
            str(u["weight"]),
            "yes" if u["in_balancer"] else "no",
            str(u["table"]),
        ]
        if daemon:
            targets = ", ".join(
                f"{t['target']} {t['rtt_ms'] if t['rtt_ms'] is not None else '-'} ms "
                f"{t['loss']:.0%}"
                for t in u["targets"]
            )
            row += [
                f"{u['for_s']:.0f}s ago",
                u["reason"],
                targets or "-",
                f"{u['detection_time_s']:.2f}s",
            ]
        else:
            row.append(u["gateway"] or "-")
        table.add_row(*row)
    console.print(table)
    if "rules" in doc:
        rules = Table(title="rules (in order)")
        for col in ("priority", "name", "ip rule"):
            rules.add_column(col)
        for r in doc["rules"]:
            rules.add_row(str(r["priority"]), r["name"] or "-", r["rule"])
        console.print(rules)

"""`ecmpd status`: uplinks and rules as the kernel holds them (daemon figures later)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from ecmpd.cli.common import EXIT_OK, Session, print_json, session
from ecmpd.control import DaemonNotRunning, request
from ecmpd.desired import carries, nexthop_id
from ecmpd.export.iptext import rule_args
from ecmpd.model import Family

FAMILY_NAMES = {Family.INET: "ipv4", Family.INET6: "ipv6"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="uplinks, their state and the rules in order")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _gateway(configured: object, learned: object) -> str | None:
    """The configured gateway; `dhcp`/`ra` with what the kernel learnt, e.g. `ra (fe80::1)`."""
    if configured is None:
        return None
    if configured in ("dhcp", "ra"):
        return f"{configured} ({learned or 'none yet'})"
    return str(configured)


def kernel_status(s: Session) -> dict[str, Any]:
    """The status document built from the kernel alone.

    Top-level figures are the uplink's primary family's (IPv4 when it carries IPv4);
    `families` has each family it carries, keyed `ipv4` / `ipv6`.
    """
    groups = {
        family: next(
            (g for g in s.observed.groups if g.id == nexthop_id(s.config.balancer.table, family)),
            None,
        )
        for family in FAMILY_NAMES
    }
    nexthops = {n.id for n in s.observed.nexthops}
    uplinks = []
    for u in s.config.uplinks:
        iface = s.facts.interfaces.get(u.interface)
        families: dict[str, dict[str, Any]] = {}
        for family, label in FAMILY_NAMES.items():
            if not carries(u, family):
                continue
            group = groups[family]
            members = dict(group.members) if group else {}
            nhid = nexthop_id(u.table, family)
            in_balancer = nhid in members
            applied = nhid in nexthops
            families[label] = {
                "state": "up" if in_balancer else ("down" if applied else "unknown"),
                "weight": members.get(nhid, u.weight),
                "in_balancer": in_balancer,
            }
        primary = next(iter(families.values()))
        uplinks.append(
            {
                "name": u.name,
                "interface": u.interface,
                **primary,
                "table": u.table,
                "gateway": _gateway(u.gateway, iface.dhcp_gateway if iface else None),
                "gateway6": _gateway(u.gateway6, iface.dhcp_gateway6 if iface else None),
                "carrier": iface.carrier if iface else None,
                "families": families,
            }
        )
    names = dict(s.desired().rule_names)
    rules = [
        {
            "priority": r.priority,
            "name": names.get(r.priority),
            "family": FAMILY_NAMES[r.family],
            "rule": rule_args(r),
        }
        for r in sorted(s.observed.rules, key=lambda r: (r.priority, r.family))
    ]
    v4 = groups[Family.INET]
    balancer = {
        "table": s.config.balancer.table,
        "group": v4.id if v4 else None,
        "type": v4.type.value if v4 else None,
        "groups": {
            FAMILY_NAMES[family]: {"group": g.id, "type": g.type.value}
            for family, g in groups.items()
            if g is not None
        },
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
    dual = any("ipv6" in u.get("families", {}) for u in doc["uplinks"])
    table = Table(title="uplinks" + ("" if daemon else " (kernel view: no daemon running)"))
    cols = ["name", "interface", "state", "weight", "in balancer", "table"]
    cols += ["families"] if dual else []
    cols += ["since", "reason", "targets (rtt, loss)", "detects in"] if daemon else ["gateway"]
    for col in cols:
        table.add_column(col)
    for u in doc["uplinks"]:
        row = [
            u["name"],
            u["interface"],
            _state(u["state"]),
            str(u["weight"]),
            "yes" if u["in_balancer"] else "no",
            str(u["table"]),
        ]
        if dual:
            # Health is per family: an uplink can be up in IPv4 and down in IPv6.
            row.append(
                " ".join(
                    f"{label.replace('ip', '')} {_state(f['state'])}"
                    for label, f in u.get("families", {}).items()
                )
            )
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
            gateways = [g for g in (u["gateway"], u.get("gateway6")) if g]
            row.append(", ".join(gateways) or "-")
        table.add_row(*row)
    console.print(table)
    if "rules" in doc:
        rules = Table(title="rules (in order)")
        for col in ("priority", "name", "ip rule"):
            rules.add_column(col)
        for r in doc["rules"]:
            ip = "ip -6 rule" if r.get("family") == "ipv6" else "ip rule"
            rules.add_row(str(r["priority"]), r["name"] or "-", f"{ip} {r['rule']}")
        console.print(rules)


def _state(state: str) -> str:
    """A state in its colour."""
    colors = {"up": "green", "down": "red", "unknown": "yellow", "drained": "blue"}
    return f"[{colors[state]}]{state}[/]"

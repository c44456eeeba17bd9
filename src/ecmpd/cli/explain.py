"""`ecmpd explain DST`: which rule and uplink a flow leaves by, as the kernel decides."""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace
from ipaddress import ip_address
from typing import Any

from ecmpd.cli.common import EXIT_CONFIG, EXIT_OK, CommandError, print_json, session
from ecmpd.config import Config, RuleActionName
from ecmpd.connections import rule_name as rule_name_of
from ecmpd.desired import desired_state
from ecmpd.explain import Flow, deciding_rule
from ecmpd.facts import KernelFacts
from ecmpd.kernel import conntrack as ct
from ecmpd.kernel import ctmessages as ctm
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.sysctl import read_sysctl
from ecmpd.model import MAIN_TABLE, DesiredState, Family, IPAddress, nexthop_id

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="which rule and uplink a flow leaves by")
    p.add_argument("dst", type=ip_address)
    p.add_argument("--from", dest="src", type=ip_address, help="source address")
    p.add_argument("--iif", help="incoming interface (forwarded traffic)")
    p.add_argument("--proto", choices=sorted(PROTOS))
    p.add_argument("--sport", type=int)
    p.add_argument("--dport", type=int)
    p.add_argument("--fwmark", type=lambda v: int(v, 0), default=0)
    p.add_argument(
        "--established",
        action="store_true",
        help="explain the existing connection with these addresses and ports (error if none)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.src is not None and args.src.version != args.dst.version:
        raise CommandError(
            f"--from {args.src} and {args.dst} are not of one address family", EXIT_CONFIG
        )
    ip_proto = PROTOS[args.proto] if args.proto else None
    if ip_proto == socket.IPPROTO_ICMP and args.dst.version == 6:
        ip_proto = socket.IPPROTO_ICMPV6  # what `icmp` means to an IPv6 flow
    flow = Flow(
        dst=args.dst,
        src=args.src,
        iif=args.iif,
        fwmark=args.fwmark,
        ip_proto=ip_proto,
        sport=args.sport,
        dport=args.dport,
    )
    with session(args, check=False) as s:
        connection = _connection(flow, args.established)
        mark = connection.mark & s.config.connections.mark if connection else 0
        if mark:  # ask the kernel as the connection's packets are routed: with its mark
            flow = replace(flow, fwmark=flow.fwmark & ~s.config.connections.mark | mark)
        result = explain_flow(s.writer.ipr, s.config, s.observed, s.facts, flow)
    result["established"] = connection is not None
    result["connection_mark"] = f"{mark:#010x}" if mark else None
    if args.json:
        print_json(result)
    else:
        print(describe(flow, result))
    return EXIT_OK


def _connection(flow: Flow, required: bool) -> ctm.Flow | None:
    """The conntrack entry of a fully given TCP/UDP flow, None when there is none."""
    if (
        flow.src is None
        or flow.sport is None
        or flow.dport is None
        or flow.ip_proto
        not in (
            socket.IPPROTO_TCP,
            socket.IPPROTO_UDP,
        )
    ):
        if required:
            needs = "--established needs --from, --proto tcp|udp, --sport and --dport"
            raise CommandError(needs, EXIT_CONFIG)
        return None
    found = ct.find_flow(flow.ip_proto, flow.src, flow.dst, flow.sport, flow.dport)
    if found is None and required:
        given = f"{_endpoint(flow.src, flow.sport)} -> {_endpoint(flow.dst, flow.dport)}"
        raise CommandError(f"no such connection in conntrack: {given}", EXIT_CONFIG)
    return found


def explain_flow(
    ipr: Any, config: Config, observed: DesiredState, facts: KernelFacts, flow: Flow
) -> dict[str, Any]:
    """Ask the kernel (RTM_GETROUTE with the L4 keys), then name the rule and uplink."""
    names = dict(desired_state(config, {}, facts).rule_names)
    index = {f.name: f.index for f in facts.interfaces.values()}
    byindex = {f.index: f.name for f in facts.interfaces.values()}
    error = None
    try:
        answer = nl.route_get(
            ipr,
            flow.dst,
            src=flow.src,
            iif=index[flow.iif] if flow.iif else None,
            ip_proto=flow.ip_proto,
            sport=flow.sport,
            dport=flow.dport,
            mark=flow.fwmark or None,
        )
    except nl.RouteLookupError as err:
        answer, error = None, str(err)
    table = answer.table if answer else None
    matched = _main_prefixlen(ipr, flow) if table == MAIN_TABLE else None
    rule = deciding_rule(observed.rules, flow, table, matched)
    ifname = byindex.get(answer.ifindex) if answer and answer.ifindex else None
    uplink = next((u.name for u in config.uplinks if u.interface == ifname), None)
    candidates = _unaskable_group(config, observed, flow, table)
    rule_name = (rule_name_of(config, rule) or names.get(rule.priority)) if rule else None
    return {
        **failover_order(config, rule_name, table, uplink),
        # None when the kernel cannot be asked (then `candidates` holds the choice).
        "uplink": None if candidates else uplink,
        "candidates": candidates,
        "kernel_lookup_uplink": uplink,
        "rule": rule_name,
        "priority": rule.priority if rule else None,
        "table": table,
        "interface": ifname,
        "gateway": str(answer.gateway) if answer and answer.gateway else None,
        "source": str(answer.prefsrc) if answer and answer.prefsrc else None,
        "nhid": answer.nhid if answer else None,
        "error": error,
    }


def failover_order(
    config: Config, rule_name: str | None, table: int | None, uplink: str | None
) -> dict[str, Any]:
    """The failover order behind the answer: the uplink's tier, a pin list's position."""
    user = next((r for r in config.rules if r.name == rule_name), None)
    listed = list(user.uplink) if user is not None and user.uplink else []
    by_table = {u.table: u.name for u in config.uplinks}
    chosen = by_table.get(table) if table is not None else None
    tier = config.uplink(uplink).tier if uplink is not None else None
    balanced = user is not None and user.action is RuleActionName.BALANCE
    return {
        "tier": tier,
        # The balancer's tier when above the lowest: every lower one is out of service.
        "backup_tier": tier if balanced and tier != min(u.tier for u in config.uplinks) else None,
        "fallback": listed if len(listed) > 1 else None,
        "fallback_position": listed.index(chosen) + 1 if chosen in listed else None,
    }


def _unaskable_group(
    config: Config, observed: DesiredState, flow: Flow, table: int | None
) -> list[str]:
    """The uplinks of the group a forwarded IPv6 flow is balanced over, when Linux's
    lookup cannot say which one forwarding picks; [] when it can.

    With a custom hash policy (router mode's), IPv6 forwarding hashes the packet and then
    mixes in the (here empty) inner-header hash (rt6_multipath_custom_hash_skb); a route
    lookup has no packet and skips that step, so `ip -6 route get ... iif` names another
    member for about half the flows (measured in the lab; IPv4 builds a packet and agrees).
    """
    if flow.dst.version != 6 or flow.iif is None:
        return []
    # An IPv6 lookup's answer names no nexthop id: the route it used in `table` does.
    routes = [
        r
        for r in observed.routes
        if r.family is Family.INET6 and r.table == table and r.nhid and flow.dst in r.dst
    ]
    route = max(routes, key=lambda r: r.dst.prefixlen, default=None)
    group = next((g for g in observed.groups if route and g.id == route.nhid), None)
    if group is None or len(group.members) < 2:
        return []
    if read_sysctl("net.ipv6.fib_multipath_hash_policy") != "3":
        return []
    by_nexthop = {nexthop_id(u.table, Family.INET6): u.name for u in config.uplinks}
    return sorted(by_nexthop[m] for m, _ in group.members if m in by_nexthop)


def _main_prefixlen(ipr: Any, flow: Flow) -> int | None:
    """The prefix length of the main table's longest match (to judge suppress_prefixlength)."""
    family = socket.AF_INET if flow.dst.version == 4 else socket.AF_INET6
    routes = nl.dump_routes(ipr, family, MAIN_TABLE)
    lengths = [r.dst.prefixlen for r in routes if flow.dst in r.dst]
    return max(lengths, default=None)


def describe(flow: Flow, r: dict[str, Any]) -> str:
    """One human line: the flow, then where it goes and why."""
    proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(flow.ip_proto or 0, "")
    src = _endpoint(flow.src, flow.sport) if flow.src else f"*{_port(flow.sport)}"
    dst = _endpoint(flow.dst, flow.dport)
    head = f"{proto} {src} -> {dst}".strip()
    if r["error"]:
        where = f"no route ({r['error']})"
    elif r["candidates"]:
        where = (
            f"leaves by one of {', '.join(r['candidates'])} (balanced; Linux cannot say which "
            "for a forwarded IPv6 flow under a custom hash: its lookup, naming "
            f"{r['kernel_lookup_uplink']}, skips a step of forwarding's hash)"
        )
    elif r["uplink"]:
        where = f"leaves by {r['uplink']} ({r['interface']} via {r['gateway'] or 'direct'})"
    else:
        where = f"does not leave by an uplink (dev {r['interface']})"
    why = (
        f"rule {r['rule']} (priority {r['priority']}, table {r['table']})"
        if r["rule"]
        else f"no ecmpd rule decided it (table {r['table']})"
    )
    if r.get("connection_mark"):
        why = f"an established connection, bound by its mark {r['connection_mark']}: {why}"
    elif r.get("established"):
        why = f"an established connection without ecmpd's mark: {why}"
    return f"{head}: {where}; {why}{_order_note(r)}"


def _order_note(r: dict[str, Any]) -> str:
    """`, fallback 2 of fiber, cable`, or `; backup tier 2 (...)` for the balancer's."""
    if r["fallback"] and r["fallback_position"]:
        return f", fallback {r['fallback_position']} of {', '.join(r['fallback'])}"
    if r["fallback"]:
        return f", fallback list {', '.join(r['fallback'])}: none in service"
    if r["backup_tier"] is not None:
        return f"; backup tier {r['backup_tier']} (no lower tier has an uplink in service)"
    return ""


def _endpoint(address: IPAddress, port: int | None) -> str:
    """address:port, an IPv6 address in brackets when a port follows."""
    if port and address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}{_port(port)}"


def _port(port: int | None) -> str:
    return f":{port}" if port else ""

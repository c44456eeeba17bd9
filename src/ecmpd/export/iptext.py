"""Render kernel objects and operations as the `ip` (and `sysctl`) commands they equal.

`ecmpd plan` prints these; `ecmpd export --format ip` builds on them. Pure text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ecmpd.kernel.nftdoc import render_table
from ecmpd.model import (
    QUEUE_HANDLE,
    RTPROT_ECMPD,
    TABLE_NAMES,
    DesiredState,
    Family,
    GroupType,
    IPNetwork,
    MptcpEndpoint,
    MptcpLimits,
    Nexthop,
    NexthopGroup,
    NftTable,
    Queue,
    Route,
    RouteType,
    Rule,
    RuleAction,
    Sysctl,
)
from ecmpd.plan import KernelObject, Op, OpKind, diff
from ecmpd.queues import DEFAULT_CLASS, queue_classes, queue_leaves, show_handle

PROTO = f"proto {RTPROT_ECMPD}"


def _ip(family: Family) -> str:
    return "ip -6" if family is Family.INET6 else "ip"


def _table(table: int) -> str:
    return TABLE_NAMES.get(table, str(table))


def _prefix(net: IPNetwork) -> str:
    """A host prefix as its bare address (as `ip rule` prints it), else CIDR."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def rule_args(rule: Rule) -> str:
    """The selector and action of an ip rule, as `ip rule` takes them."""
    parts = [f"priority {rule.priority}"]
    if rule.src is not None:
        parts.append(f"from {_prefix(rule.src)}")
    if rule.dst is not None:
        parts.append(f"to {_prefix(rule.dst)}")
    if rule.iif is not None:
        parts.append(f"iif {rule.iif}")
    if rule.fwmark is not None:
        mark = f"fwmark {rule.fwmark:#x}"
        if rule.fwmask is not None:
            mark += f"/{rule.fwmask:#x}"
        parts.append(mark)
    if rule.ip_proto is not None:
        parts.append(f"ipproto {rule.ip_proto}")
    if rule.sport is not None:
        parts.append(f"sport {rule.sport}")
    if rule.dport is not None:
        parts.append(f"dport {rule.dport}")
    if rule.action is RuleAction.UNREACHABLE:
        parts.append("unreachable")
    else:
        parts.append(f"lookup {_table(rule.table or 0)}")
    if rule.suppress_prefixlength is not None:
        parts.append(f"suppress_prefixlength {rule.suppress_prefixlength}")
    parts.append(PROTO)
    return " ".join(parts)


def nexthop_args(nh: Nexthop) -> str:
    """`id N via GW dev IF` for a plain nexthop object."""
    via = f" via {nh.gateway}" if nh.gateway is not None else ""
    onlink = " onlink" if nh.onlink else ""
    return f"id {nh.id}{via} dev {nh.ifname}{onlink} {PROTO}"


def group_args(group: NexthopGroup) -> str:
    """`id N group A,W/B,W [type resilient ...]` for a nexthop group."""
    members = "/".join(f"{nhid},{weight}" for nhid, weight in group.members)
    text = f"id {group.id} group {members}"
    if group.type is GroupType.RESILIENT:
        text += (
            f" type resilient buckets {group.buckets} idle_timer {group.idle_timer}"
            f" unbalanced_timer {group.unbalanced_timer}"
        )
    return f"{text} {PROTO}"


def route_args(route: Route) -> str:
    """A route as `ip route` takes it (type, destination, nexthop, table)."""
    dst = "default" if route.dst.prefixlen == 0 else str(route.dst)
    parts = [f"unreachable {dst}" if route.type is RouteType.UNREACHABLE else dst]
    if route.nhid is not None:
        parts.append(f"nhid {route.nhid}")
    if route.gateway is not None:
        parts.append(f"via {route.gateway}")
    if route.ifname is not None:
        parts.append(f"dev {route.ifname}")
    if route.onlink:
        parts.append("onlink")
    if route.scope == 253:
        parts.append("scope link")
    if route.prefsrc is not None:
        parts.append(f"src {route.prefsrc}")
    if route.metric:
        parts.append(f"metric {route.metric}")
    parts.append(f"table {_table(route.table)}")
    parts.append(PROTO)
    return " ".join(parts)


def command(verb: str, obj: KernelObject) -> str:
    """One full command line for `verb` (add/replace/del) applied to `obj`."""
    if isinstance(obj, Sysctl):
        return f"sysctl -w {obj.name}={obj.value}"
    if isinstance(obj, NftTable):
        if verb == "del":
            return "nft delete table inet ecmpd"
        # The JSON document ecmpd feeds nft: one transaction that replaces the table.
        return f"nft -j -f - <<< '{json.dumps(render_table(obj), separators=(',', ':'))}'"
    if isinstance(obj, Rule):
        return f"{_ip(obj.family)} rule {'add' if verb == 'replace' else verb} {rule_args(obj)}"
    if isinstance(obj, Nexthop):
        if verb == "del":
            return f"ip nexthop del id {obj.id}"
        return f"{_ip(obj.family)} nexthop {verb} {nexthop_args(obj)}"
    if isinstance(obj, NexthopGroup):
        if verb == "del":
            return f"ip nexthop del id {obj.id}"
        return f"ip nexthop {verb} {group_args(obj)}"
    if isinstance(obj, MptcpEndpoint):
        if verb == "del":
            return f"ip mptcp endpoint delete id {obj.id} {obj.address}"
        if verb == "replace":
            change = "backup" if obj.backup else "nobackup"
            return f"ip mptcp endpoint change {obj.address} {change}"
        flags = "subflow backup" if obj.backup else "subflow"
        return f"ip mptcp endpoint add {obj.address} dev {obj.ifname} {flags}"
    if isinstance(obj, MptcpLimits):
        return f"ip mptcp limits set subflows {obj.subflows}"
    if isinstance(obj, Queue):
        if verb == "del":
            return f"tc qdisc del dev {obj.ifname} root handle {show_handle(QUEUE_HANDLE)}"
        return " && ".join(queue_commands(obj))
    return f"{_ip(obj.family)} route {verb} {route_args(obj)}"


def queue_commands(queue: Queue) -> list[str]:
    """The `tc` commands that build (or change) ecmpd's queue on an interface."""
    dev = f"tc {{}} replace dev {queue.ifname}"
    h = show_handle
    lines = [f"{dev.format('qdisc')} root handle {h(QUEUE_HANDLE)} htb default {DEFAULT_CLASS:x}"]
    for c in queue_classes(queue):
        lines.append(
            f"{dev.format('class')} parent {h(c.parent)} classid {h(c.classid)} htb"
            f" rate {c.rate}bps ceil {c.ceil}bps prio {c.prio}"
        )
    for leaf in queue_leaves(queue):
        lines.append(
            f"{dev.format('qdisc')} parent {h(leaf.parent)} handle {h(leaf.handle)}"
            f" {leaf.kind} limit {leaf.limit}"
        )
    return lines


def op_command(op: Op, restored: Mapping[str, str] | None = None) -> str:
    """The command an operation amounts to (sysctl deletes restore the recorded value).

    `restored`: the values recorded before ecmpd's first write, to show them.
    """
    if op.kind is OpKind.DELETE and isinstance(op.obj, Sysctl):
        value = (restored or {}).get(op.obj.name, "<value before ecmpd>")
        return f"sysctl -w {op.obj.name}={value}"
    if op.kind is OpKind.DELETE and isinstance(op.obj, MptcpLimits):
        # Restoring the recorded limit (sysctl-like: kept in `restored` under this key).
        value = (restored or {}).get(op.obj.key, "<value before ecmpd>")
        return f"ip mptcp limits set subflows {value}"
    verb = {OpKind.ADD: "add", OpKind.REPLACE: "replace", OpKind.DELETE: "del"}[op.kind]
    return command(verb, op.obj)


def state_commands(state: DesiredState) -> list[str]:
    """The commands that build `state` from nothing, in a safe order."""
    return [op_command(op) for op in diff(state, DesiredState())]

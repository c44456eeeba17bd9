"""`export --format routeros`: the same policy as a MikroTik RouterOS v7 script.

Routing tables for the balancer and each uplink, their routes with check-gateway (or
the classic recursive-route recipe when checks reach beyond the gateway), and
`/routing rule` entries in ecmpd's order. RouterOS ECMP has no weights: a gateway is
repeated in `gateway=` as often as its weight; see WEIGHTS_NOTE for why.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from ipaddress import IPv4Address

from ecmpd.config import Config, RuleActionName, WhenAllDown
from ecmpd.config.hashspec import FIELD_BITS
from ecmpd.desired import MAIN_TABLE, UplinkPlan, desired_state, has_ipv6, resolve_uplink
from ecmpd.facts import KernelFacts
from ecmpd.model import DesiredState, Family, IPAddress, Route, RouteType, Rule, RuleAction

FILENAME = "ecmpd.rsc"
BALANCER_TABLE = "ecmp"
# The most gateways one route gets, counting repeats. An assumption, not a documented
# RouterOS limit (none could be checked here): 16 is where many ECMP implementations
# stop, and it keeps the gateway list readable.
MAX_GATEWAYS = 16
# The recursive-route recipe: host routes to check targets have scope 10, so a route
# with target-scope 11 resolves its gateway through them (and connected routes).
TARGET_HOST_SCOPE = 10
RECURSIVE_TARGET_SCOPE = 11
HASH_POLICIES = {0: "l3", 1: "l4", 2: "l3-inner"}
WIDTH = 80
CONTINUATION = "    "
# A word of a command: key="quoted value with spaces", or anything up to a space.
TOKEN = re.compile(r'\S+="[^"]*"|\S+')
PORT_FIELDS = frozenset(f for f in FIELD_BITS if f.endswith("port"))
WEIGHTS_NOTE = [
    "# Weights: RouterOS ECMP routes have no weights. Each gateway is repeated in",
    "# gateway= as often as its weight (divided by their gcd; at most 16 in all), and",
    "# RouterOS spreads flows evenly over the list. Chosen over PCC mangle rules: it",
    "# stays one route in one table, like ecmpd's nexthop group; it needs no connection",
    "# marks (so fasttrack and the router's own traffic work); and check-gateway drops",
    "# a failed uplink from the list by itself.",
]


def files(config: Config, facts: KernelFacts) -> dict[str, str]:
    """The script, under a name RouterOS's /import takes."""
    return {FILENAME: render(config, facts)}


def render(config: Config, facts: KernelFacts) -> str:
    """The RouterOS v7 script for this config."""
    state = _ipv4_only(desired_state(config, {}, facts))
    plans = [resolve_uplink(u, facts, True) for u in config.uplinks]
    targets, target_notes = check_targets(config, plans)
    lines = _header(config)
    if has_ipv6(config):
        lines += [
            "# IPv6 (gateway6/source6) is not part of this export yet: the script below",
            "# holds the IPv4 policy only; configure /ipv6 route and /routing rule by hand.",
        ]
    lines += _hash(config)
    lines += _tables(config)
    lines += _routes(config, state, plans, targets, target_notes)
    lines += _rules(config, state)
    lines += _nat(config)
    return "\n".join(wrap(line) for line in lines) + "\n"


def _ipv4_only(state: DesiredState) -> DesiredState:
    """The IPv4 part of a desired state (groups whose members are IPv4 nexthops)."""
    v4 = {n.id for n in state.nexthops if n.family is Family.INET}
    return replace(
        state,
        rules=frozenset(r for r in state.rules if r.family is Family.INET),
        routes=frozenset(r for r in state.routes if r.family is Family.INET),
        nexthops=frozenset(n for n in state.nexthops if n.family is Family.INET),
        groups=frozenset(g for g in state.groups if all(m in v4 for m, _ in g.members)),
    )


def wrap(line: str, width: int = WIDTH) -> str:
    """A long command over several lines, as RouterOS's own /export writes it."""
    if line.startswith("#") or len(line) <= width:
        return line
    out, current = [], ""
    for token in TOKEN.findall(line):
        if current and len(current) + 1 + len(token) + 2 > width:
            out.append(current + " \\")
            current = CONTINUATION + token
        else:
            current = f"{current} {token}" if current else token
    return "\n".join([*out, current])


def gateway_counts(weights: list[int], limit: int = MAX_GATEWAYS) -> tuple[list[int], bool]:
    """How often to repeat each gateway, and whether that keeps the weights' ratios exactly."""
    divisor = math.gcd(*weights)
    counts = [w // divisor for w in weights]
    if sum(counts) > limit:
        total = sum(counts)
        counts = [max(1, round(c * limit / total)) for c in counts]
        # Rounding up the small ones may overshoot; take it back from the biggest.
        while sum(counts) > max(limit, len(counts)):
            biggest = max(range(len(counts)), key=lambda i: counts[i])
            counts[biggest] -= 1
    exact = all(c * weights[0] == w * counts[0] for c, w in zip(counts, weights, strict=True))
    return counts, exact


def check_targets(
    config: Config, plans: list[UplinkPlan]
) -> tuple[dict[str, IPv4Address], dict[str, list[str]]]:
    """The check target beyond the gateway each uplink's recursive route goes through.

    A host route to a target leads out of one uplink only, so a target that two uplinks
    share serves neither; those fall back to pinging their gateway. Also returns, per
    uplink, comments on how its checks were translated.
    """
    candidates = {
        u.name: [
            t
            for t in u.check.targets
            if isinstance(t, IPv4Address) and t != plan.gateway and plan.admin_up
        ]
        for u, plan in zip(config.uplinks, plans, strict=True)
    }
    uses = Counter(t for ts in candidates.values() for t in set(ts))
    chosen: dict[str, IPv4Address] = {}
    notes: dict[str, list[str]] = {name: [] for name in candidates}
    for name, ts in candidates.items():
        unique = [t for t in ts if uses[t] == 1]
        if unique:
            chosen[name] = unique[0]
            notes[name] += [
                f"# {name}: checked through {unique[0]} by a recursive route; the host route",
                "# to it, in main, also sends the router's own traffic to it that way.",
            ]
            if len(ts) > 1:
                notes[name].append(f"# {name}: RouterOS follows one target of {_join(ts)}")
        elif ts:
            notes[name] += [
                f"# {name}: check targets {_join(ts)} shared with another uplink, and a host",
                "# route leads out of one only: check-gateway pings the gateway instead",
            ]
    for uplink in config.uplinks:
        if uplink.check.tcp_port is not None:
            notes[uplink.name].append(
                f"# {uplink.name}: check method {uplink.check.method}: check-gateway only pings"
            )
    return chosen, notes


def _join(addresses: list[IPv4Address]) -> str:
    return ", ".join(str(a) for a in addresses)


def _header(config: Config) -> list[str]:
    return [
        f"# ecmpd export --format routeros: the policy of {config.filename} as a RouterOS v7",
        f"# script (/import {FILENAME}). Interface names are this host's: replace them with",
        "# the router's (ether1, pppoe-out1, ...). Everything added carries a comment",
        '# starting "ecmpd", to find it again ([find comment~"^ecmpd"]).',
        "# check-gateway=ping probes every 10 s and fails after two losses (RouterOS's fixed",
        "# timing); ecmpd's interval, timeout, down_after/up_after, min_up, max_loss and",
        "# max_rtt have no equivalent.",
        *WEIGHTS_NOTE,
    ]


def _hash(config: Config) -> list[str]:
    """The multipath hash policy; a custom field set becomes the nearest named one."""
    spec = config.hash
    lines = ["", "/ip settings"]
    policy = HASH_POLICIES.get(spec.policy)
    if policy is None:
        policy = "l4" if PORT_FIELDS.intersection(spec.fields) else "l3"
        fields = ", ".join(spec.fields)
        lines.append(f"# custom hash fields [{fields}]: RouterOS has none; nearest: {policy}")
    lines.append(f"set ipv4-multipath-hash-policy={policy}")
    return lines


def table_name(config: Config, table: int) -> str:
    """The RouterOS name of a Linux table id ecmpd uses."""
    if table == MAIN_TABLE:
        return "main"
    if table == config.balancer.table:
        return BALANCER_TABLE
    for uplink in config.uplinks:
        if uplink.table == table:
            # An uplink called like a built-in or the balancer table keeps apart.
            taken = uplink.name in ("main", BALANCER_TABLE)
            return f"{uplink.name}-table" if taken else uplink.name
    return str(table)


def _tables(config: Config) -> list[str]:
    lines = ["", "/routing table"]
    bal = config.balancer.table
    lines.append(f'add name={BALANCER_TABLE} fib comment="ecmpd balancer (table {bal})"')
    for u in config.uplinks:
        name = table_name(config, u.table)
        lines.append(f'add name={name} fib comment="ecmpd uplink {u.name} (table {u.table})"')
    return lines


def _routes(
    config: Config,
    state: DesiredState,
    plans: list[UplinkPlan],
    targets: dict[str, IPv4Address],
    notes: dict[str, list[str]],
) -> list[str]:
    """Each uplink's check-target host route and table, then the balanced route."""
    lines = ["", "/ip route"]
    routes = sorted(state.routes, key=lambda r: (r.table, r.dst.prefixlen, str(r.dst)))
    for plan in plans:
        lines += notes.get(plan.name, [])
        if not plan.admin_up:
            lines.append(f"# {plan.name}: no gateway known at export time (no DHCP lease?)")
        elif plan.gateway is not None and _is_dhcp(config, plan.name):
            lines.append(f"# {plan.name}: gateway from the DHCP lease at export time")
        target = targets.get(plan.name)
        if target is not None:
            via = plan.gateway if plan.gateway is not None else plan.ifname
            lines.append(
                f"add dst-address={target}/32 gateway={via} scope={TARGET_HOST_SCOPE}"
                f' comment="ecmpd {plan.name} check target"'
            )
        for route in routes:
            if route.table == plan.table:
                lines.append(_uplink_route(config, route, plan, target))
    for route in routes:
        if route.table != config.balancer.table:
            continue
        if route.nhid is not None:
            lines += _balanced_route(config, state, route, plans, targets)
        elif route.type is RouteType.UNREACHABLE:
            lines.append("# no uplink usable at export time: RouterOS's nearest is a blackhole")
            lines.append(
                f"add dst-address={route.dst} blackhole routing-table={BALANCER_TABLE}"
                ' comment="ecmpd balancer"'
            )
    return lines


def _is_dhcp(config: Config, name: str) -> bool:
    return config.uplink(name).gateway == "dhcp"


def _check(gateway: IPAddress | None, target: IPv4Address | None) -> str:
    """The gateway= value and its checking: the target (recursive), the gateway, or none."""
    if target is not None:
        return f"gateway={target} target-scope={RECURSIVE_TARGET_SCOPE} check-gateway=ping"
    if gateway is not None:
        return f"gateway={gateway} check-gateway=ping"
    return ""


def _uplink_route(
    config: Config, route: Route, plan: UplinkPlan, target: IPv4Address | None
) -> str:
    """A route in an uplink's table: its default route (checked) or its connected prefix."""
    table = table_name(config, route.table)
    src = f" pref-src={route.prefsrc}" if route.prefsrc is not None else ""
    if route.dst.prefixlen == 0:
        via = _check(route.gateway, target) or f"gateway={route.ifname}"
        what = "default"
    else:
        via, what = f"gateway={route.ifname}", "connected"
    return (
        f"add dst-address={route.dst} {via}{src} routing-table={table}"
        f' comment="ecmpd {plan.name} {what}"'
    )


def _balanced_route(
    config: Config,
    state: DesiredState,
    route: Route,
    plans: list[UplinkPlan],
    targets: dict[str, IPv4Address],
) -> list[str]:
    """The balanced default route: each member's gateway repeated by weight."""
    group = next(g for g in state.groups if g.id == route.nhid)
    by_nexthop = {p.nexthop_id: p for p in plans}
    members = [(by_nexthop[nhid], weight) for nhid, weight in group.members]
    counts, exact = gateway_counts([w for _, w in members])
    ratio = ":".join(str(w) for _, w in members)
    names = ":".join(p.name for p, _ in members)
    lines = [f"# {names} weights {ratio} -> gateways repeated {':'.join(map(str, counts))}"]
    if not exact:
        lines.append(f"# WARNING: ratios approximated: at most {MAX_GATEWAYS} gateways per route")
    if sum(counts) > MAX_GATEWAYS:
        lines.append(f"# WARNING: more than {MAX_GATEWAYS} gateways: RouterOS may refuse this")
    gateways: list[str] = []
    recursive = False
    for (plan, _), count in zip(members, counts, strict=True):
        target = targets.get(plan.name)
        recursive = recursive or target is not None
        hop = target or plan.gateway or plan.ifname
        gateways += [str(hop)] * count
    scope = f" target-scope={RECURSIVE_TARGET_SCOPE}" if recursive else ""
    lines.append(
        f"add dst-address={route.dst} gateway={','.join(gateways)}{scope} check-gateway=ping"
        f' routing-table={BALANCER_TABLE} comment="ecmpd balancer"'
    )
    return lines


def _rules(config: Config, state: DesiredState) -> list[str]:
    """The routing rules in ecmpd's order (RouterOS evaluates them top to bottom)."""
    lines = [
        "",
        "/routing rule",
        "# Appended after any rules already there: move them up (place-before=) if needed.",
    ]
    names = dict(state.rule_names)
    for rule in sorted(state.rules, key=lambda r: r.priority):
        lines += _rule(config, rule, names.get(rule.priority, str(rule.priority)))
    return lines


def _rule(config: Config, rule: Rule, name: str) -> list[str]:
    """One rule; one RouterOS cannot match on is kept as a commented-out line."""
    parts = ["add"]
    if rule.src is not None:
        parts.append(f"src-address={rule.src}")
    if rule.dst is not None:
        parts.append(f"dst-address={rule.dst}")
    if rule.iif is not None:
        parts.append(f"interface={rule.iif}")
    if rule.suppress_prefixlength is not None:
        parts.append(f"min-prefix={rule.suppress_prefixlength}")
    action, note = _action(config, rule, name)
    parts.append(action)
    parts.append(f'comment="ecmpd {name}"')
    text = " ".join(parts)
    unmatched = _unmatched(rule)
    if unmatched:
        return [
            f"# {name}: RouterOS routing rules cannot match {unmatched}; mark these packets",
            "# in /ip firewall mangle (action=mark-routing new-routing-mark=<table>) instead:",
            f"# {text}",
        ]
    return [f"# {note}", text] if note else [text]


def _action(config: Config, rule: Rule, name: str) -> tuple[str, str]:
    """The action= and table= of a rule, and a note when the semantics differ."""
    if rule.action is RuleAction.UNREACHABLE:
        return "action=unreachable", ""
    table = table_name(config, rule.table or MAIN_TABLE)
    only = f"action=lookup-only-in-table table={table}"
    fallback = f"action=lookup table={table}"
    user = next((r for r in config.rules if r.name == name), None)
    if user is None or user.action in (RuleActionName.BYPASS, RuleActionName.MAIN):
        return only, ""  # reply rules, bypass and main: that table and no other
    if user.action is RuleActionName.PIN:
        if user.strict:
            return only, ""
        return fallback, f"{name}: non-strict pin: falls back to main while {table} is down"
    when = config.balancer.when_all_down
    if when is WhenAllDown.UNREACHABLE:
        return only, ""
    note = f"{name}: when_all_down {when}: falls back to main when every gateway fails"
    return fallback, note


def _unmatched(rule: Rule) -> str:
    """The selectors of a rule that RouterOS routing rules have no match for."""
    missing = []
    if rule.fwmark is not None:
        missing.append(f"fwmark {rule.fwmark:#x}")
    if rule.ip_proto is not None:
        missing.append(f"ipproto {rule.ip_proto}")
    if rule.sport is not None:
        missing.append(f"sport {rule.sport}")
    if rule.dport is not None:
        missing.append(f"dport {rule.dport}")
    return ", ".join(missing)


def _nat(config: Config) -> list[str]:
    """Masquerade what leaves by each uplink with NAT (nat: true; the default in router mode)."""
    natted = [u for u in config.uplinks if u.nat_enabled(config.mode)]
    if not natted:
        return []
    lines = ["", "/ip firewall nat"]
    for u in natted:
        lines.append(
            f"add chain=srcnat out-interface={u.interface} action=masquerade"
            f' comment="ecmpd {u.name}"'
        )
    return lines

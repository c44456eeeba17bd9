"""The `/ip route` and `/ipv6 route` sections of the RouterOS export.

Per uplink, its table's default route (check-gateway=ping on the gateway, or the
classic recursive-route recipe when a check target lies beyond it) and connected
prefix; then the balanced default route, each gateway repeated as often as its weight.
Both families alike, in the same tables: a RouterOS routing table holds IPv4 and IPv6
routes. A link-local IPv6 gateway names its interface (`fe80::1%ether1`).
"""

from __future__ import annotations

import math
from collections import Counter

from ecmpd.config import Config, RuleActionName, UplinkConfig
from ecmpd.config.semantic import carries_ipv4
from ecmpd.desired import IPV6_METRIC, UplinkPlan, carries, resolve_uplink
from ecmpd.facts import KernelFacts
from ecmpd.model import MAIN_TABLE, DesiredState, Family, IPAddress, Route, RouteType

BALANCER_TABLE = "ecmp"
# The most gateways one route gets, counting repeats. An assumption, not a documented
# RouterOS limit (none could be checked here): 16 is where many ECMP implementations
# stop, and it keeps the gateway list readable.
MAX_GATEWAYS = 16
# The recursive-route recipe: host routes to check targets have scope 10, so a route
# with target-scope 11 resolves its gateway through them (and connected routes).
TARGET_HOST_SCOPE = 10
RECURSIVE_TARGET_SCOPE = 11
SECTIONS = {Family.INET: "/ip route", Family.INET6: "/ipv6 route"}


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


def hop(gateway: IPAddress, ifname: str) -> str:
    """A gateway as RouterOS takes it: a link-local one with its interface."""
    return f"{gateway}%{ifname}" if gateway.version == 6 and gateway.is_link_local else str(gateway)


def route_section(
    config: Config, state: DesiredState, facts: KernelFacts, family: Family
) -> list[str]:
    """One family's routes: each uplink's table (and check target), then the balanced route."""
    uplinks = [u for u in config.uplinks if carries(u, family)]
    if not uplinks:
        return []
    plans = [resolve_uplink(u, facts, True, family) for u in uplinks]
    targets, notes = check_targets(uplinks, plans, family)
    routes = sorted(
        (r for r in state.routes if r.family is family),
        key=lambda r: (r.table, r.dst.prefixlen, str(r.dst), r.metric),
    )
    lines = ["", SECTIONS[family]]
    for uplink, plan in zip(uplinks, plans, strict=True):
        lines += notes[plan.name]
        lines += _gateway_origin(uplink, plan)
        target = targets.get(plan.name)
        if target is not None:
            via = hop(plan.gateway, plan.ifname) if plan.gateway is not None else plan.ifname
            lines.append(
                f"add dst-address={target}/{target.max_prefixlen} gateway={via}"
                f' scope={TARGET_HOST_SCOPE} comment="ecmpd {plan.name} check target"'
            )
        for route in routes:
            if route.table == plan.table:
                lines.append(_uplink_route(config, route, plan, target))
    for route in routes:
        if route.table != config.balancer.table:
            continue
        if route.nhid is not None:
            lines += _balanced_route(state, route, plans, targets, _distance(route))
        elif route.type is RouteType.UNREACHABLE:
            lines.append("# no uplink usable at export time: RouterOS's nearest is a blackhole")
            lines.append(
                f"add dst-address={route.dst} blackhole routing-table={BALANCER_TABLE}"
                ' comment="ecmpd balancer"'
            )
    return lines + pin_routes(config, facts, family, targets)


def _gateway_origin(uplink: UplinkConfig, plan: UplinkPlan) -> list[str]:
    """Where a learned gateway came from, or that none was known at export time."""
    v6 = plan.family is Family.INET6
    what = "IPv6 gateway" if v6 else "gateway"
    if not plan.admin_up:
        why = "no router advertisement?" if v6 else "no DHCP lease?"
        return [f"# {plan.name}: no {what} known at export time ({why})"]
    learned = uplink.gateway6 == "ra" if v6 else uplink.gateway == "dhcp"
    if learned and plan.gateway is not None:
        source = "router advertisements" if v6 else "the DHCP lease"
        return [f"# {plan.name}: {what} from {source} at export time"]
    return []


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
    uplinks: list[UplinkConfig], plans: list[UplinkPlan], family: Family
) -> tuple[dict[str, IPAddress], dict[str, list[str]]]:
    """The check target beyond the gateway each uplink's recursive route goes through.

    A host route to a target leads out of one uplink only, so a target that two uplinks
    share serves neither; those fall back to pinging their gateway. Also returns, per
    uplink, comments on how its checks were translated (for this family).
    """
    candidates = {
        u.name: [t for t in u.check.targets if _beyond_gateway(t, plan)]
        for u, plan in zip(uplinks, plans, strict=True)
    }
    uses = Counter(t for ts in candidates.values() for t in set(ts))
    chosen: dict[str, IPAddress] = {}
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
    for uplink in uplinks:
        # Said once per uplink: in its IPv4 section, or its IPv6 one if it has no IPv4.
        first = Family.INET if carries_ipv4(uplink) else Family.INET6
        if uplink.check.tcp_port is not None and family is first:
            notes[uplink.name].append(
                f"# {uplink.name}: check method {uplink.check.method}: check-gateway only pings"
            )
    return chosen, notes


def _beyond_gateway(target: IPAddress, plan: UplinkPlan) -> bool:
    """A target of the plan's family other than its gateway, reached through it."""
    family = Family.INET6 if target.version == 6 else Family.INET
    # A link-local target sits on the link itself: no route can lead there via anyone.
    on_link = target.version == 6 and target.is_link_local
    return family is plan.family and plan.admin_up and target != plan.gateway and not on_link


def _join(addresses: list[IPAddress]) -> str:
    return ", ".join(str(a) for a in addresses)


def _check(gateway: str | None, target: IPAddress | None) -> str:
    """The gateway= value and its checking: the target (recursive), the gateway, or none."""
    if target is not None:
        return f"gateway={target} target-scope={RECURSIVE_TARGET_SCOPE} check-gateway=ping"
    if gateway is not None:
        return f"gateway={gateway} check-gateway=ping"
    return ""


def _uplink_route(config: Config, route: Route, plan: UplinkPlan, target: IPAddress | None) -> str:
    """A route in an uplink's table: its default route (checked) or its connected prefix."""
    table = table_name(config, route.table)
    src = f" pref-src={route.prefsrc}" if route.prefsrc is not None else ""
    if route.dst.prefixlen == 0:
        gateway = hop(route.gateway, plan.ifname) if route.gateway is not None else None
        via = _check(gateway, target) or f"gateway={plan.ifname}"
        what = "default"
    else:
        via, what = f"gateway={plan.ifname}", "connected"
    return (
        f"add dst-address={route.dst} {via}{src} routing-table={table}"
        f' comment="ecmpd {plan.name} {what}"'
    )


def _distance(route: Route) -> int:
    """RouterOS distance of a balancer route: 1, or 1 + a standby tier's rank (its metric)."""
    base = IPV6_METRIC if route.family is Family.INET6 else 0
    return 1 + route.metric - base


def pin_table(name: str) -> str:
    """The RouterOS table of a pin with a fallback list."""
    return f"pin-{name}"


def pin_routes(
    config: Config, facts: KernelFacts, family: Family, targets: dict[str, IPAddress]
) -> list[str]:
    """Per pin list, a table holding each uplink's default route at distance 1, 2, ...

    RouterOS uses the lowest distance whose check-gateway passes: one uplink at a
    time, in the list's order (the recipe ecmpd's pins are modelled on).
    """
    lines = []
    for rule in config.rules:
        if rule.uplink is None or len(rule.uplink) < 2 or rule.action is not RuleActionName.PIN:
            continue
        listed = [config.uplink(n) for n in rule.uplink if carries(config.uplink(n), family)]
        for distance, uplink in enumerate(listed, start=1):
            plan = resolve_uplink(uplink, facts, True, family)
            if not plan.admin_up:
                continue
            gateway = hop(plan.gateway, plan.ifname) if plan.gateway is not None else None
            via = _check(gateway, targets.get(plan.name)) or f"gateway={plan.ifname}"
            lines.append(
                f"add dst-address={_default(family)} {via}"
                f" distance={distance} routing-table={pin_table(rule.name)}"
                f' comment="ecmpd pin {rule.name} {distance}: {uplink.name}"'
            )
    return lines


def _default(family: Family) -> str:
    return "::/0" if family is Family.INET6 else "0.0.0.0/0"


def _gateway(plan: UplinkPlan, targets: dict[str, IPAddress]) -> str:
    """How a route names the uplink: its check target (recursive), gateway, or interface."""
    target = targets.get(plan.name)
    if target is not None:
        return str(target)
    if plan.gateway is not None:
        return hop(plan.gateway, plan.ifname)
    return plan.ifname  # point-to-point: the interface itself


def _balanced_route(
    state: DesiredState,
    route: Route,
    plans: list[UplinkPlan],
    targets: dict[str, IPAddress],
    distance: int = 1,
) -> list[str]:
    """The balanced default route of a tier: each member's gateway repeated by weight."""
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
    for (plan, _), count in zip(members, counts, strict=True):
        gateways += [_gateway(plan, targets)] * count
    recursive = any(p.name in targets for p, _ in members)
    scope = f" target-scope={RECURSIVE_TARGET_SCOPE}" if recursive else ""
    tier = f" tier {members[0][0].tier}" if distance > 1 else ""
    if distance > 1:
        lines.append(f"# standby: RouterOS uses distance {distance} while no lower one is active")
    lines.append(
        f"add dst-address={route.dst} gateway={','.join(gateways)}{scope} check-gateway=ping"
        + (f" distance={distance}" if distance > 1 else "")
        + f' routing-table={BALANCER_TABLE} comment="ecmpd balancer{tier}"'
    )
    return lines

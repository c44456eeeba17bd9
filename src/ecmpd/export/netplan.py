"""`export --format netplan`: per-uplink tables and policy rules as netplan YAML.

netplan (0.106, Debian bookworm) has routes with `table:` and `routing-policy:` with
from/to/table/priority/mark, and nothing else ecmpd needs: no nexthop objects, groups
or multipath routes, no suppress_prefixlength, iif, ipproto or port matches, no mark
masks, no sysctls. What it cannot hold is listed in a comment as the exact commands
`ecmpd apply` would run, to be run once netplan has brought the links up.
"""

from __future__ import annotations

from ecmpd.config import Config
from ecmpd.connections import without_connections
from ecmpd.desired import DEFAULT4, DEFAULT6, SCOPE_LINK, desired_state
from ecmpd.export.iptext import state_commands
from ecmpd.export.networkd import (
    FULL_MASK,
    follows_ra,
    home_interfaces,
    is_ra_default,
    prefix,
    route_home,
    rule_home,
)
from ecmpd.export.standby import all_standby_tiers, static_notes, with_standby
from ecmpd.facts import KernelFacts
from ecmpd.model import DesiredState, Family, Route, RouteType, Rule, RuleAction

FILENAME = "90-ecmpd.yaml"
Entry = list[tuple[str, str]]


def files(config: Config, facts: KernelFacts) -> dict[str, str]:
    """The YAML, under the name netplan would read it by (after the base config)."""
    return {FILENAME: render(config, facts)}


def render(config: Config, facts: KernelFacts) -> str:
    """netplan YAML for what netplan can express; the rest as commands in a comment."""
    state = without_connections(
        with_standby(config, facts, desired_state(config, {}, facts), multipath=False)
    )
    names = dict(state.rule_names)
    rules = sorted(state.rules, key=lambda r: (r.priority, r.family))
    kept_rules = [r for r in rules if not rule_limits(r)]
    kept_routes = [r for r in state.routes if r.nhid is None]
    lines = _header(config, {r.family for r in kept_rules if r.src is None and r.dst is None})
    lines += [f"# {line}" for line in static_notes(config)]
    lines += _leftovers(config, state, kept_rules, kept_routes, names)
    for tier in all_standby_tiers(config, facts):
        if len(tier.members) > 1:
            names_ = ", ".join(m.name for m in tier.members)
            lines.append(f"# standby tier {tier.tier} ({names_}) is multipath: netplan cannot")
            lines.append("# hold it; give that tier one uplink, or use networkd or ecmpd run.")
    lines += ["network:", "  version: 2", "  ethernets:"]
    for ifname in home_interfaces(config):
        uplinks = ", ".join(u.name for u in config.uplinks if u.interface == ifname)
        lines.append(f"    {ifname}:  # uplink {uplinks}")
        home_routes = [r for r in _sorted_routes(kept_routes) if route_home(r, config) == ifname]
        lines += _accept_ra(config, ifname, home_routes)
        lines += _sequence("routes", [_route(r, is_ra_default(r, config)) for r in home_routes])
        policy = [
            _rule(r, names.get(r.priority, ""))
            for r in kept_rules
            if rule_home(r, config) == ifname
        ]
        lines += _sequence("routing-policy", policy)
    return "\n".join(lines) + "\n"


def rule_limits(rule: Rule) -> list[str]:
    """What netplan cannot express about a rule (empty: it can express all of it)."""
    limits = []
    if rule.action is not RuleAction.LOOKUP:
        limits.append(rule.action.name.lower())
    if rule.suppress_prefixlength is not None:
        limits.append(f"suppress_prefixlength {rule.suppress_prefixlength}")
    if rule.iif is not None:
        limits.append("iif")
    if rule.ip_proto is not None:
        limits.append("ipproto")
    if rule.sport is not None or rule.dport is not None:
        limits.append("port matches")
    if rule.fwmark is not None and (rule.fwmark == 0 or rule.fwmask not in (None, FULL_MASK)):
        limits.append("a mark mask or mark 0")
    return limits


def _header(config: Config, catch_all: set[Family]) -> list[str]:
    """What the file is; `catch_all`: the families with a rule matching every address."""
    last = config.rule_priority + 999
    lines = [
        f"# ecmpd export --format netplan: the policy of {config.filename} for netplan",
        f"# (checked against netplan 0.106, Debian bookworm). Save as /etc/netplan/{FILENAME}:",
        "# netplan merges it with the files that already configure these interfaces (move",
        "# an interface under vlans:/bonds:/bridges: if it is one). Static: no health checks",
        "# and no failover; for those run `ecmpd run` instead (it owns rule priorities",
        f"# {config.rule_priority}-{last}: do not use both).",
    ]
    if catch_all:
        alls = " and ".join(f"`from: {_everything(f)}`" for f in sorted(catch_all))
        verb = "are" if len(catch_all) > 1 else "is"
        lines.append(f"# netplan wants from or to in a rule: {alls} {verb} `from all`.")
    return lines


def _leftovers(
    config: Config,
    state: DesiredState,
    kept_rules: list[Rule],
    kept_routes: list[Route],
    names: dict[int, str],
) -> list[str]:
    """The comment block: what netplan cannot hold, and the commands that add it."""
    rest = DesiredState(
        rules=state.rules - frozenset(kept_rules),
        routes=state.routes - frozenset(kept_routes),
        nexthops=state.nexthops,
        groups=state.groups,
        sysctls=state.sysctls,
    )
    reasons = []
    if rest.groups or rest.routes:
        reasons.append(
            f"the balanced route of table {config.balancer.table} (netplan has no nexthop"
            " groups or multipath routes)"
        )
    if rest.sysctls:
        reasons.append("sysctls (or put them in /etc/sysctl.d/90-ecmpd.conf)")
    for rule in sorted(rest.rules, key=lambda r: (r.priority, r.family)):
        name = names.get(rule.priority, str(rule.priority))
        reasons.append(f"rule {name} ({rule.priority}): {', '.join(rule_limits(rule))}")
    if not reasons:
        return []
    lines = ["#", "# netplan cannot express:"]
    # A rule ecmpd gives both families is one reason (its two commands are below).
    lines += [f"#   - {reason}" for reason in dict.fromkeys(reasons)]
    lines += [
        "# Run these once netplan has brought the links up, e.g. from a networkd-dispatcher",
        "# hook (/etc/networkd-dispatcher/routable.d/50-ecmpd) or a oneshot unit ordered",
        "# After=systemd-networkd-wait-online.service:",
    ]
    lines += [f"#   {command}" for command in state_commands(rest)]
    return lines


def _sorted_routes(routes: list[Route]) -> list[Route]:
    """Table by table, the default route first."""
    return sorted(routes, key=lambda r: (r.table, r.dst.prefixlen, str(r.dst), r.metric))


def _accept_ra(config: Config, ifname: str, routes: list[Route]) -> list[str]:
    """`accept-ra: true` on a `gateway6: ra` link, and how its table's route is made."""
    if not follows_ra(config, ifname):
        return []
    lines = ["      # gateway6: ra: addresses and the default route in main come from router"]
    if any(is_ra_default(r, config) for r in routes):
        lines.append("      # advertisements; the uplink table's default route keeps the router of")
        lines.append("      # export time (a netplan route cannot follow one).")
    else:
        lines.append("      # advertisements; no router was known at export time, so the uplink")
        lines.append("      # table has no IPv6 default route: add one when there is.")
    # networkd, netplan's backend, ignores advertisements on a router (forwarding on)
    # unless told to accept them.
    return [*lines, "      accept-ra: true"]


def _route(route: Route, advertised: bool = False) -> Entry:
    """One `routes:` entry (`advertised`: its gateway is the router of export time)."""
    entry: Entry = []
    if route.type is RouteType.UNREACHABLE:
        entry.append(("type", "unreachable"))
    to = "default" if route.dst in (DEFAULT4, DEFAULT6) else str(route.dst)
    entry.append(("to", f"{to}  # the advertised router at export time" if advertised else to))
    if route.gateway is not None:
        entry.append(("via", str(route.gateway)))
    if route.onlink:
        entry.append(("on-link", "true"))
    if route.prefsrc is not None:
        entry.append(("from", str(route.prefsrc)))
    if route.scope == SCOPE_LINK:
        entry.append(("scope", "link"))
    if route.metric:
        entry.append(("metric", str(route.metric)))
    entry.append(("table", str(route.table)))
    return entry


def _rule(rule: Rule, name: str) -> Entry:
    """One `routing-policy:` entry (the rule is one netplan can express)."""
    entry: Entry = []
    if rule.src is not None:
        entry.append(("from", prefix(rule.src)))
    if rule.dst is not None:
        entry.append(("to", prefix(rule.dst)))
    if rule.src is None and rule.dst is None:
        entry.append(("from", _everything(rule.family)))
    if rule.fwmark is not None:
        entry.append(("mark", str(rule.fwmark)))
    entry.append(("table", str(rule.table)))
    entry.append(("priority", str(rule.priority)))
    if name:
        key, value = entry[0]
        entry[0] = (key, f"{value}  # {name}")
    return entry


def _everything(family: Family) -> str:
    """The prefix of every address of a family: netplan's way to say `from all`."""
    return str(DEFAULT6 if family is Family.INET6 else DEFAULT4)


def _sequence(key: str, entries: list[Entry]) -> list[str]:
    """A YAML sequence of flat mappings, six spaces in (under an interface)."""
    if not entries:
        return []
    lines = [f"      {key}:"]
    for entry in entries:
        for index, (k, v) in enumerate(entry):
            lines.append(f"        {'- ' if index == 0 else '  '}{k}: {v}")
    return lines

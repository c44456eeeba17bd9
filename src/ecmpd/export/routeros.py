"""`export --format routeros`: the same policy as a MikroTik RouterOS v7 script.

Routing tables for the balancer and each uplink, their IPv4 and IPv6 routes with
check-gateway (or the classic recursive-route recipe when checks reach beyond the
gateway; see routeros_routes), and `/routing rule` entries in ecmpd's order. RouterOS
ECMP has no weights: a gateway is repeated in `gateway=` as often as its weight; see
WEIGHTS_NOTE for why.
"""

from __future__ import annotations

import re

from ecmpd.config import Config, RuleActionName, WhenAllDown
from ecmpd.config.hashspec import FIELD_BITS
from ecmpd.config.semantic import carries_ipv4
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state, has_ipv6
from ecmpd.export.routeros_routes import (
    BALANCER_TABLE,
    MAX_GATEWAYS,
    pin_table,
    route_section,
    table_name,
)
from ecmpd.export.standby import add_tiers, all_standby_tiers
from ecmpd.facts import KernelFacts
from ecmpd.model import MAIN_TABLE, DesiredState, Family, Rule, RuleAction

FILENAME = "ecmpd.rsc"
HASH_POLICIES = {0: "l3", 1: "l4", 2: "l3-inner"}
WIDTH = 80
CONTINUATION = "    "
# A word of a command: key="quoted value with spaces", or anything up to a space.
TOKEN = re.compile(r'\S+="[^"]*"|\S+')
PORT_FIELDS = frozenset(f for f in FIELD_BITS if f.endswith("port"))
WEIGHTS_NOTE = [
    "# Weights: RouterOS ECMP routes have no weights. Each gateway is repeated in",
    f"# gateway= as often as its weight (divided by their gcd; at most {MAX_GATEWAYS} in all), and",
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
    state = without_connections(
        add_tiers(desired_state(config, {}, facts), all_standby_tiers(config, facts))
    )
    lines = _header(config)
    lines += _hash(config)
    lines += _ipv6_settings(config)
    lines += _tables(config)
    lines += route_section(config, state, facts, Family.INET)
    lines += route_section(config, state, facts, Family.INET6)
    lines += _rules(config, state)
    lines += _nat(config)
    return "\n".join(wrap(line) for line in lines) + "\n"


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
    lines = ["", "/ip settings"]
    policy, note = _hash_policy(config)
    lines += note
    lines.append(f"set ipv4-multipath-hash-policy={policy}")
    return lines


def _hash_policy(config: Config) -> tuple[str, list[str]]:
    """RouterOS's name for the hash policy, and a note when it is only the nearest."""
    spec = config.hash
    policy = HASH_POLICIES.get(spec.policy)
    if policy is not None:
        return policy, []
    nearest = "l4" if PORT_FIELDS.intersection(spec.fields) else "l3"
    fields = ", ".join(spec.fields)
    return nearest, [f"# custom hash fields [{fields}]: RouterOS has none; nearest: {nearest}"]


def _ipv6_settings(config: Config) -> list[str]:
    """The IPv6 hash policy, and router advertisements for `gateway6: ra` uplinks."""
    if not has_ipv6(config):
        return []
    policy, _ = _hash_policy(config)  # the note is in /ip settings already
    lines = ["", "/ipv6 settings", f"set multipath-hash-policy={policy}"]
    learning = [u.name for u in config.uplinks if u.gateway6 == "ra"]
    if learning:
        lines += [
            f"# {', '.join(learning)}: gateway6: ra: RouterOS learns the router from its",
            "# advertisements (into main); the uplink tables below keep the one known at",
            "# export time. This accepts advertisements on every interface: where RouterOS",
            "# has accept-router-advertisements-on=, narrow that to the uplinks.",
            "set accept-router-advertisements=yes",
        ]
    return lines


def _tables(config: Config) -> list[str]:
    lines = ["", "/routing table"]
    bal = config.balancer.table
    lines.append(f'add name={BALANCER_TABLE} fib comment="ecmpd balancer (table {bal})"')
    for u in config.uplinks:
        name = table_name(config, u.table)
        lines.append(f'add name={name} fib comment="ecmpd uplink {u.name} (table {u.table})"')
    for rule in config.rules:
        if rule.action is RuleActionName.PIN and rule.uplink and len(rule.uplink) > 1:
            order = " then ".join(rule.uplink)
            lines.append(
                f'add name={pin_table(rule.name)} fib comment="ecmpd pin {rule.name}: {order}"'
            )
    return lines


def _rules(config: Config, state: DesiredState) -> list[str]:
    """The routing rules in ecmpd's order (RouterOS evaluates them top to bottom)."""
    lines = [
        "",
        "/routing rule",
        "# Appended after any rules already there: move them up (place-before=) if needed.",
    ]
    if has_ipv6(config):
        lines.append("# A rule without addresses serves IPv4 and IPv6 alike, as its tables do.")
    names = dict(state.rule_names)
    for rule in routeros_rules(state.rules):
        lines += _rule(config, rule, names.get(rule.priority, str(rule.priority)))
    return lines


def routeros_rules(rules: frozenset[Rule]) -> list[Rule]:
    """The rules in order, with one rule where ecmpd has an address-less one per family.

    A RouterOS routing rule without addresses matches both families, and the tables
    it looks up hold both. Where ecmpd's two rules differ (a strict pin to an uplink
    lacking a family: unreachable in that family), the lookup serves for both: the
    table then has no route of that family, so lookup-only-in-table finds none and the
    packet is refused all the same.
    """
    out: list[Rule] = []
    seen: set[int] = set()
    for rule in sorted(
        rules, key=lambda r: (r.priority, r.action is not RuleAction.LOOKUP, r.family)
    ):
        if rule.src is None and rule.dst is None:
            if rule.priority in seen:
                continue
            seen.add(rule.priority)
        out.append(rule)
    return out


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
        if user.uplink is not None and len(user.uplink) > 1:
            table = pin_table(user.name)
            only = f"action=lookup-only-in-table table={table}"
            fallback = f"action=lookup table={table}"
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
    # IPv4 only, as ecmpd's own nftables table: there is no NAT66.
    natted = [u for u in config.uplinks if u.nat_enabled(config.mode) and carries_ipv4(u)]
    if not natted:
        return []
    lines = ["", "/ip firewall nat"]
    for u in natted:
        lines.append(
            f"add chain=srcnat out-interface={u.interface} action=masquerade"
            f' comment="ecmpd {u.name}"'
        )
    return lines

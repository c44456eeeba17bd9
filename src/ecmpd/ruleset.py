"""Pure: the ip rules ecmpd wants — reply rules, then the user's rules in file order."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_network

from ecmpd.config import Config, RuleActionName, RuleConfig
from ecmpd.model import MAIN_TABLE, Family, IPNetwork, Rule, RuleAction
from ecmpd.order import pin_choice
from ecmpd.uplinkplan import FAMILIES, UplinkPlan, carries, has_ipv6

# Rule priorities inside the owned block: reply rules first (one per uplink), then the
# user's rules spaced by 10 so inserting a rule later does not renumber its neighbours.
REPLY_RULE_SLOTS = 100
USER_RULE_OFFSET = 100
USER_RULE_STEP = 10


def policy_rules(
    config: Config, by_family: Mapping[Family, list[UplinkPlan]]
) -> tuple[list[Rule], dict[int, str]]:
    """Reply rules, then the user's rules in file order, in the owned priority block.

    One priority may hold an IPv4 and an IPv6 rule (`ip rule` and `ip -6 rule` are
    separate lists): an uplink's two reply rules, and a user rule without addresses,
    which applies to both families once any uplink carries IPv6.
    """
    base = config.rule_priority
    rules: list[Rule] = []
    names: dict[int, str] = {}
    for family, uplinks in by_family.items():
        for index, u in enumerate(uplinks):
            if u.source is None:
                continue
            prio = base + index
            rules.append(
                Rule(
                    family=family,
                    priority=prio,
                    action=RuleAction.LOOKUP,
                    table=u.table,
                    src=ip_network(u.source.ip),
                )
            )
            names[prio] = f"reply:{u.name}"
    both = has_ipv6(config)
    for index, rule in enumerate(config.rules):
        prio = base + USER_RULE_OFFSET + USER_RULE_STEP * index
        for family in _rule_families(rule, both):
            by_name = {u.name: u for u in by_family[family]}
            kernel_rule = _user_rule(rule, prio, config, by_name, family)
            if kernel_rule is not None:
                rules.append(kernel_rule)
                names[prio] = rule.name
    return rules, names


def _user_rule(
    rule: RuleConfig,
    prio: int,
    config: Config,
    uplinks: Mapping[str, UplinkPlan],
    family: Family = Family.INET,
) -> Rule | None:
    """One configured rule as an ip rule, or None while a non-strict pin is withdrawn."""
    action = RuleAction.LOOKUP
    table: int | None
    suppress: int | None = None
    if rule.action is RuleActionName.BYPASS:
        table, suppress = MAIN_TABLE, 0
    elif rule.action is RuleActionName.MAIN:
        table = MAIN_TABLE
    elif rule.action is RuleActionName.BALANCE:
        table = config.balancer.table
    else:
        assert rule.uplink is not None  # the schema requires it for pin
        listed = [n for n in rule.uplink if carries(config.uplink(n), family)]
        chosen = pin_choice(listed, uplinks)
        if not listed:
            # No listed uplink has a route of this family: the first's table misses and
            # traffic falls through, as from a withdrawn pin. Strict refuses instead.
            table = uplinks[rule.uplink[0]].table
            if rule.strict:
                action, table = RuleAction.UNREACHABLE, None
        elif chosen is not None:
            # The first of the list in service, alone: one public address at a time.
            table = chosen.table
        elif not rule.strict:
            # Never silently another public IP: withdraw (fall through) or refuse.
            return None
        else:
            action, table = RuleAction.UNREACHABLE, None
    return Rule(
        family=family,
        priority=prio,
        action=action,
        table=table,
        src=rule.from_,
        dst=rule.to,
        iif=rule.iif,
        fwmark=rule.fwmark,
        # The kernel reports a bare fwmark with an all-ones mask; say so up front.
        fwmask=rule.fwmask if rule.fwmask is not None or rule.fwmark is None else 0xFFFFFFFF,
        ip_proto=rule.proto,
        sport=rule.sport,
        dport=rule.dport,
        suppress_prefixlength=suppress,
    )


def _rule_families(rule: RuleConfig, both: bool) -> tuple[Family, ...]:
    """The families a rule applies to: its addresses', else IPv4 (and IPv6 when in use)."""
    nets: list[IPNetwork] = [n for n in (rule.from_, rule.to) if n is not None]
    if nets:
        return (Family.INET6,) if nets[0].version == 6 else (Family.INET,)
    return FAMILIES if both else (Family.INET,)

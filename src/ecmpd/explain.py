"""Pure: which of ecmpd's rules decided a flow, given the table the kernel answered from.

The kernel's RTM_GETROUTE says which table and nexthop a flow uses but not which rule
sent it there; this walks ecmpd's rules in priority order with the same selector
semantics and stops at the first one that matches and explains that answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecmpd.model import Family, IPAddress, Rule, RuleAction


@dataclass(frozen=True)
class Flow:
    """The keys a policy rule can select on."""

    dst: IPAddress
    src: IPAddress | None = None
    iif: str | None = None
    fwmark: int = 0
    ip_proto: int | None = None
    sport: int | None = None
    dport: int | None = None


def selects(rule: Rule, flow: Flow) -> bool:
    """Whether the rule's selector matches the flow (as fib_rule_match does)."""
    if rule.src is not None and (flow.src is None or flow.src not in rule.src):
        return False
    if rule.dst is not None and flow.dst not in rule.dst:
        return False
    if rule.iif is not None and rule.iif != flow.iif:
        return False
    if rule.fwmark is not None and (flow.fwmark ^ rule.fwmark) & (rule.fwmask or 0xFFFFFFFF):
        return False
    if rule.ip_proto is not None and rule.ip_proto != flow.ip_proto:
        return False
    if rule.sport is not None and not (
        flow.sport is not None and rule.sport.start <= flow.sport <= rule.sport.end
    ):
        return False
    return rule.dport is None or (
        flow.dport is not None and rule.dport.start <= flow.dport <= rule.dport.end
    )


def deciding_rule(
    rules: Iterable[Rule], flow: Flow, table: int | None, matched_prefixlen: int | None = None
) -> Rule | None:
    """The first rule that matches and whose action explains the kernel's answer.

    `table` is the table the kernel answered from (None when the lookup failed, e.g.
    on an unreachable rule), `matched_prefixlen` the prefix length of the route it
    found there. A matching rule for another table, or one whose suppress_prefixlength
    rejects that route, missed and the kernel went on, so the walk goes on too.
    """
    for rule in sorted(rules, key=lambda r: r.priority):
        if (rule.family is Family.INET) != (flow.dst.version == 4):
            continue
        if not selects(rule, flow):
            continue
        if rule.action is RuleAction.UNREACHABLE:
            return rule if table is None else None
        suppressed = (
            rule.suppress_prefixlength is not None
            and matched_prefixlen is not None
            and matched_prefixlen <= rule.suppress_prefixlength
        )
        if rule.table == table and not suppressed:
            return rule
    return None

"""ip rules as netlink messages: build RTM_NEWRULE/DELRULE and parse RTM_GETRULE dumps.

Built by hand on pyroute2's `fibmsg` (not `IPRoute.rule()`) so every attribute that
reaches the kernel is the one we mean: `suppress_prefixlength 0` in particular must
be sent explicitly, and reading back must map "unset" (all ones) to None.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg

from ecmpd.model import RTPROT_ECMPD, Family, PortRange, Rule, RuleAction

UNSET = 0xFFFFFFFF
RT_TABLE_COMPAT = 252  # rtm_table when the real id lives in FRA_TABLE


def rule_message(rule: Rule, *, protocol: int = RTPROT_ECMPD) -> Any:
    """An RTM_NEWRULE/DELRULE body for `rule` (the kernel matches deletes on all of it)."""
    msg = fibmsg()
    msg["family"] = int(rule.family)
    msg["action"] = rule.action.value
    attrs: list[tuple[str, Any]] = [("FRA_PRIORITY", rule.priority), ("FRA_PROTOCOL", protocol)]
    if rule.table is not None:
        msg["table"] = rule.table if rule.table < 256 else RT_TABLE_COMPAT
        attrs.append(("FRA_TABLE", rule.table))
    if rule.src is not None:
        msg["src_len"] = rule.src.prefixlen
        attrs.append(("FRA_SRC", str(rule.src.network_address)))
    if rule.dst is not None:
        msg["dst_len"] = rule.dst.prefixlen
        attrs.append(("FRA_DST", str(rule.dst.network_address)))
    if rule.iif is not None:
        attrs.append(("FRA_IIFNAME", rule.iif))
    if rule.fwmark is not None:
        attrs.append(("FRA_FWMARK", rule.fwmark))
    if rule.fwmask is not None:
        attrs.append(("FRA_FWMASK", rule.fwmask))
    if rule.ip_proto is not None:
        attrs.append(("FRA_IP_PROTO", rule.ip_proto))
    if rule.sport is not None:
        attrs.append(("FRA_SPORT_RANGE", f"{rule.sport.start}:{rule.sport.end}"))
    if rule.dport is not None:
        attrs.append(("FRA_DPORT_RANGE", f"{rule.dport.start}:{rule.dport.end}"))
    if rule.suppress_prefixlength is not None:
        attrs.append(("FRA_SUPPRESS_PREFIXLEN", rule.suppress_prefixlength))
    msg["attrs"] = attrs
    return msg


def dump_message() -> Any:
    """An RTM_GETRULE dump request for every family."""
    msg = fibmsg()
    msg["family"] = 0
    return msg


def parse_rule(msg: Any) -> tuple[Rule, int] | None:
    """(rule, protocol) from a dump entry; None for families ecmpd does not manage."""
    if msg["family"] not in (Family.INET, Family.INET6):
        return None
    family = Family(msg["family"])
    try:
        action = RuleAction(msg["action"])
    except ValueError:  # goto, nop, blackhole, prohibit: never ecmpd's
        action = None
    src, dst = msg.get_attr("FRA_SRC"), msg.get_attr("FRA_DST")
    mask = msg.get_attr("FRA_FWMASK")
    mark = msg.get_attr("FRA_FWMARK")
    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
    rule = Rule(
        family=family,
        priority=msg.get_attr("FRA_PRIORITY") or 0,
        action=action or RuleAction.LOOKUP,
        table=(msg.get_attr("FRA_TABLE") or msg["table"]) if action is RuleAction.LOOKUP else None,
        src=ip_network(f"{src}/{msg['src_len']}") if src else None,
        dst=ip_network(f"{dst}/{msg['dst_len']}") if dst else None,
        iif=msg.get_attr("FRA_IIFNAME"),
        fwmark=mark if mark or mask else None,
        fwmask=mask if mark or mask else None,
        ip_proto=msg.get_attr("FRA_IP_PROTO"),
        sport=_ports(msg.get_attr("FRA_SPORT_RANGE")),
        dport=_ports(msg.get_attr("FRA_DPORT_RANGE")),
        suppress_prefixlength=None if suppress in (None, UNSET) else suppress,
    )
    protocol = msg.get_attr("FRA_PROTOCOL") or 0
    return rule, (protocol if action is not None else 0)


def _ports(value: str | None) -> PortRange | None:
    if not value:
        return None
    start, end = (int(x) for x in value.split(":"))
    return PortRange(start, end)

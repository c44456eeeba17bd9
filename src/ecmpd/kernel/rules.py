"""ip rules as netlink messages: pack RTM_NEWRULE/DELRULE bodies, parse RTM_GETRULE dumps.

Packed by hand (struct fib_rule_hdr + FRA_* attributes), not `IPRoute.rule()`, so every
attribute that reaches the kernel is the one we mean: `suppress_prefixlength 0` in
particular must be sent explicitly, and reading back must map "unset" (all ones) to None.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from ecmpd.kernel.transport import (
    attr,
    attr_str,
    attr_u8,
    attr_u32,
    get_str,
    get_u32,
    netlink_for,
    parse_attrs,
)
from ecmpd.model import RTPROT_ECMPD, Family, IPNetwork, PortRange, Rule, RuleAction

RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
UNSET = 0xFFFFFFFF
RT_TABLE_COMPAT = 252  # rtm_table when the real id lives in FRA_TABLE
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK = 1, 2, 3, 6, 10
FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_FWMASK, FRA_PROTOCOL = 14, 15, 16, 21
FRA_IP_PROTO, FRA_SPORT_RANGE, FRA_DPORT_RANGE = 22, 23, 24
# family dst_len src_len tos table res1 res2 action flags
_HDR = struct.Struct("=BBBBBBBBI")
_RANGE = struct.Struct("=HH")  # struct fib_rule_port_range


def rule_message(rule: Rule, *, protocol: int = RTPROT_ECMPD) -> bytes:
    """An RTM_NEWRULE/DELRULE body for `rule` (the kernel matches deletes on all of it)."""
    table = 0
    src_len = 0 if rule.src is None else rule.src.prefixlen
    dst_len = 0 if rule.dst is None else rule.dst.prefixlen
    parts = [b"", attr_u32(FRA_PRIORITY, rule.priority), attr_u8(FRA_PROTOCOL, protocol)]
    if rule.table is not None:
        table = rule.table if rule.table < 256 else RT_TABLE_COMPAT
        parts.append(attr_u32(FRA_TABLE, rule.table))
    if rule.src is not None:
        parts.append(attr(FRA_SRC, rule.src.network_address.packed))
    if rule.dst is not None:
        parts.append(attr(FRA_DST, rule.dst.network_address.packed))
    if rule.iif is not None:
        parts.append(attr_str(FRA_IIFNAME, rule.iif))
    if rule.fwmark is not None:
        parts.append(attr_u32(FRA_FWMARK, rule.fwmark))
    if rule.fwmask is not None:
        parts.append(attr_u32(FRA_FWMASK, rule.fwmask))
    if rule.ip_proto is not None:
        parts.append(attr_u8(FRA_IP_PROTO, rule.ip_proto))
    if rule.sport is not None:
        parts.append(attr(FRA_SPORT_RANGE, _RANGE.pack(rule.sport.start, rule.sport.end)))
    if rule.dport is not None:
        parts.append(attr(FRA_DPORT_RANGE, _RANGE.pack(rule.dport.start, rule.dport.end)))
    if rule.suppress_prefixlength is not None:
        parts.append(attr_u32(FRA_SUPPRESS_PREFIXLEN, rule.suppress_prefixlength))
    parts[0] = _HDR.pack(int(rule.family), dst_len, src_len, 0, table, 0, 0, rule.action.value, 0)
    return b"".join(parts)


def dump_rules(handle: Any) -> list[tuple[Rule, int]]:
    """Every IPv4/IPv6 rule with its protocol."""
    body = _HDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
    answers = netlink_for(handle).dump(RTM_GETRULE, body)
    parsed = (parse_rule(p) for kind, p in answers if kind == RTM_NEWRULE)
    return [p for p in parsed if p is not None]


def parse_rule(payload: bytes) -> tuple[Rule, int] | None:
    """(rule, protocol) from a dump entry; None for families ecmpd does not manage."""
    family_id, dst_len, src_len, _, table, _, _, action_id, _ = _HDR.unpack_from(payload)
    if family_id not in (Family.INET, Family.INET6):
        return None
    family = Family(family_id)
    try:
        action = RuleAction(action_id)
    except ValueError:  # goto, nop, blackhole, prohibit: never ecmpd's
        action = None
    attrs = parse_attrs(payload, _HDR.size)
    mask = get_u32(attrs, FRA_FWMASK)
    mark = get_u32(attrs, FRA_FWMARK)
    suppress = get_u32(attrs, FRA_SUPPRESS_PREFIXLEN)
    rule = Rule(
        family=family,
        priority=get_u32(attrs, FRA_PRIORITY) or 0,
        action=action or RuleAction.LOOKUP,
        table=(get_u32(attrs, FRA_TABLE) or table) if action is RuleAction.LOOKUP else None,
        src=_network(family, attrs.get(FRA_SRC), src_len),
        dst=_network(family, attrs.get(FRA_DST), dst_len),
        iif=get_str(attrs, FRA_IIFNAME),
        fwmark=mark if mark or mask else None,
        fwmask=mask if mark or mask else None,
        ip_proto=_u8(attrs.get(FRA_IP_PROTO)),
        sport=_ports(attrs.get(FRA_SPORT_RANGE)),
        dport=_ports(attrs.get(FRA_DPORT_RANGE)),
        suppress_prefixlength=None if suppress in (None, UNSET) else suppress,
    )
    protocol = _u8(attrs.get(FRA_PROTOCOL)) or 0
    return rule, (protocol if action is not None else 0)


def _network(family: Family, raw: bytes | None, prefixlen: int) -> IPNetwork | None:
    if not raw:
        return None
    if family is Family.INET:
        return IPv4Network((raw, prefixlen), strict=False)
    return IPv6Network((raw, prefixlen), strict=False)


def _u8(raw: bytes | None) -> int | None:
    return None if not raw else raw[0]


def _ports(raw: bytes | None) -> PortRange | None:
    if not raw:
        return None
    start, end = _RANGE.unpack_from(raw)
    return PortRange(start, end)

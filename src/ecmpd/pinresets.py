"""Pure: which of a pin's connections get resets once its first choice carries again.

A pin with a fallback list (`uplink: [fiber, cable, lte]`) sends its traffic by the first
of the list in service; while that one was down, its clients' connections were opened on
a fallback. When it returns, those follow the fallback uplink's `failback` as a backup
tier's connections do: with `reset`, each one gets a reset towards its client (the table
answers its next LAN packet; idle ones are probed, ecmpd.ending), so the client
reconnects by the pin's first choice. Only the pin's own connections: the table keys its
set by the pin's match and the uplink's mark (kernel/nftpins.py), so the balanced
traffic the fallback still carries is left alone.

For each pin and family whose choice is an uplink in service, a PinReset per uplink in
service with `failback: reset` that the pin's traffic may have used meanwhile: those
listed after the choice, and, for a pin that is not strict (its traffic fell through to
the next rules while none of its list was in service), every uplink not listed. One
listed before the choice is down: `on_failure` decides about its connections. A pin
that also matches by `iif`, `fwmark` or a protocol other than TCP gets none: the key
cannot say it, and a reset must never reach another rule's connections.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network

from ecmpd.config import Config, RuleActionName, RuleConfig
from ecmpd.config.enums import Failback
from ecmpd.model import ALL_PORTS, Family, IPNetwork, PinReset
from ecmpd.order import pin_choice
from ecmpd.uplinkplan import UplinkPlan, carries

ANY: dict[Family, IPNetwork] = {
    Family.INET: IPv4Network("0.0.0.0/0"),
    Family.INET6: IPv6Network("::/0"),
}


def keyed(rule: RuleConfig) -> bool:
    """Whether the reset set's key can say the pin's match (addresses and TCP ports)."""
    return (
        rule.action is RuleActionName.PIN
        and rule.uplink is not None
        and rule.iif is None
        and rule.fwmark is None
        and rule.proto in (None, socket.IPPROTO_TCP)
    )


def pin_resets(
    config: Config,
    by_family: Mapping[Family, Sequence[UplinkPlan]],
    values: Mapping[str, int],
) -> dict[Family, tuple[PinReset, ...]]:
    """Per family, the pin resets the table holds now (see the module docstring)."""
    out: dict[Family, set[PinReset]] = {family: set() for family in by_family}
    for rule in config.rules:
        if not keyed(rule):
            continue
        assert rule.uplink is not None
        for family, plans in by_family.items():
            if any(n is not None and n.version != (6 if family is Family.INET6 else 4)
                   for n in (rule.from_, rule.to)):  # fmt: skip
                continue
            by_name = {u.name: u for u in plans}
            listed = [n for n in rule.uplink if carries(config.uplink(n), family)]
            chosen = pin_choice(listed, by_name)
            if chosen is None:
                continue
            after = listed[listed.index(chosen.name) + 1 :]
            others = [] if rule.strict else [u.name for u in plans if u.name not in listed]
            for name in after + others:
                uplink = config.uplink(name)
                if uplink.failback_mode() is Failback.RESET and by_name[name].in_service:
                    out[family].add(
                        PinReset(
                            src=rule.from_ or ANY[family],
                            dst=rule.to or ANY[family],
                            sport=rule.sport or ALL_PORTS,
                            dport=rule.dport or ALL_PORTS,
                            mark=values[name],
                        )
                    )
    return {family: tuple(sorted(pins)) for family, pins in out.items()}

"""Pure: what keeps established connections on their uplink, and what ends them.

Each uplink gets a connection-mark value (ecmpd.marks); the nftables table stamps it on
a connection when the connection first leaves or arrives by the uplink and copies it
to the packet mark of the connection's later packets, and one ip rule per uplink and
family (`fwmark V/M lookup <uplink table>`) routes those packets to the uplink. So the
balancer's hash decides only for new connections, and a reload, a weight change or
another uplink's failure and return moves no established connection.

The mark rules share the reply rules' priorities (both look up the uplink's table) and
stay while the uplink is out of service: with `on_failure: wait` its connections ride
out the outage on it. With `reset` (the default) the table's reset chain answers the
LAN side of its TCP connections with resets the clients accept (kernel/resets.py elicits
a packet from idle ones).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from ecmpd.config import Config, Mode, OnFailure
from ecmpd.config.semantic import carries_ipv4, carries_ipv6
from ecmpd.marks import MarkSpace, assign_slots
from ecmpd.model import MAIN_TABLE, DesiredState, Family, NftTable, PinReset, Rule, RuleAction
from ecmpd.queues import first_bytes


def mark_space(config: Config) -> MarkSpace:
    """The connection-mark bits of this config."""
    return MarkSpace(config.connections.mark)


def mark_slots(config: Config, recorded: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Each uplink's slot, keeping the recorded ones (the run dir's) where they still fit."""
    uplinks = [(u.name, u.table) for u in config.uplinks]
    return assign_slots(uplinks, dict(recorded), mark_space(config))


def mark_values(config: Config, slots: Mapping[str, int]) -> dict[str, int]:
    """Each uplink's mark value, by uplink name."""
    space = mark_space(config)
    return {u.name: space.value(slots[u.name]) for u in config.uplinks}


def _carries(config: Config, name: str, family: Family) -> bool:
    uplink = config.uplink(name)
    return carries_ipv6(uplink) if family is Family.INET6 else carries_ipv4(uplink)


def mark_rules(
    config: Config, values: Mapping[str, int], families: Collection[Family]
) -> list[Rule]:
    """Per uplink and family it carries, `fwmark V/M lookup <table>` at its reply rule's
    priority; per family, `fwmark <probe>/M lookup main` for ecmpd's probes."""
    mask = config.connections.mark
    base = config.rule_priority
    rules: list[Rule] = []
    for family in families:
        rules.append(
            Rule(
                family=family,
                priority=base,
                action=RuleAction.LOOKUP,
                table=MAIN_TABLE,
                fwmark=mark_space(config).probe,
                fwmask=mask,
            )
        )
        for index, uplink in enumerate(config.uplinks):
            if not _carries(config, uplink.name, family):
                continue
            rules.append(
                Rule(
                    family=family,
                    priority=base + index,
                    action=RuleAction.LOOKUP,
                    table=uplink.table,
                    fwmark=values[uplink.name],
                    fwmask=mask,
                )
            )
    return rules


def rule_name(config: Config, rule: Rule) -> str | None:
    """`conn:<uplink>` for an uplink's mark rule, `conn:probe` for the probes', else None."""
    if rule.fwmask != config.connections.mark or rule.fwmark is None:
        return None
    if rule.fwmark == mark_space(config).probe:
        return "conn:probe"
    return next((f"conn:{u.name}" for u in config.uplinks if u.table == rule.table), None)


def ending_uplinks(config: Config, left: Collection[str]) -> set[str]:
    """Of the uplinks that left service (not drained: a drain is graceful), those whose
    connections end (`on_failure: reset`)."""
    return {u.name for u in config.uplinks if u.name in left and u.on_failure is OnFailure.RESET}


def connection_table(
    config: Config,
    values: Mapping[str, int],
    ending: Mapping[Family, Collection[str]],
    pins: Mapping[Family, Sequence[PinReset]] | None = None,
) -> NftTable:
    """Table inet ecmpd: the uplinks' marks, the reset sets (whole uplinks, and a pin's
    connections on an uplink: ecmpd.pinresets), masquerade in router mode, the first
    packets of connections on uplinks with a `queue` (ecmpd.queues)."""
    pins = pins or {}
    masquerade: tuple[str, ...] = ()
    if config.mode is Mode.ROUTER:
        # IPv4 only (the rules match nfproto ipv4): an IPv6-only uplink has nothing to NAT.
        masquerade = tuple(
            sorted(
                u.interface
                for u in config.uplinks
                if u.nat_enabled(config.mode) and carries_ipv4(u)
            )
        )

    def reset(family: Family) -> tuple[int, ...]:
        names = ending.get(family, ())
        return tuple(sorted(values[n] for n in names if _carries(config, n, family)))

    return NftTable(
        mask=config.connections.mark,
        marks=tuple(sorted((u.interface, values[u.name]) for u in config.uplinks)),
        reset4=reset(Family.INET),
        reset6=reset(Family.INET6),
        masquerade=masquerade,
        queues=first_bytes(config),
        pins4=tuple(sorted(pins.get(Family.INET, ()))),
        pins6=tuple(sorted(pins.get(Family.INET6, ()))),
    )


def renamed(old: Config, new: Config) -> dict[str, str]:
    """New name -> old name of each uplink a reload renamed: on its interface, the one
    uplink whose old name is gone became the one new name. It keeps its mark slot (and
    so its connections), as an uplink whose table changed keeps it by its name."""
    old_names, new_names = {u.name for u in old.uplinks}, {u.name for u in new.uplinks}
    gone: dict[str, list[str]] = {}
    came: dict[str, list[str]] = {}
    for u in old.uplinks:
        if u.name not in new_names:
            gone.setdefault(u.interface, []).append(u.name)
    for u in new.uplinks:
        if u.name not in old_names:
            came.setdefault(u.interface, []).append(u.name)
    return {
        came[iface][0]: names[0]
        for iface, names in gone.items()
        if len(names) == 1 and len(came.get(iface, ())) == 1
    }


def removed(old: Config, new: Config) -> list[str]:
    """The uplinks a reload removed (gone, not renamed), in the old config's order."""
    names = {u.name for u in new.uplinks} | set(renamed(old, new).values())
    return [u.name for u in old.uplinks if u.name not in names]


def with_resets(state: DesiredState, values: Mapping[Family, Collection[int]]) -> DesiredState:
    """The state with more mark values in its table's reset sets (a removed uplink's)."""
    if not any(values.values()):
        return state

    def more(table: NftTable) -> NftTable:
        four = {*table.reset4, *values.get(Family.INET, ())}
        six = {*table.reset6, *values.get(Family.INET6, ())}
        return replace(table, reset4=tuple(sorted(four)), reset6=tuple(sorted(six)))

    return replace(state, nft=frozenset(more(t) for t in state.nft))


def resetting(state: DesiredState) -> dict[Family, frozenset[int]]:
    """Per family, the mark values the state's connection table resets."""
    return {
        Family.INET: frozenset(v for t in state.nft for v in t.reset4),
        Family.INET6: frozenset(v for t in state.nft for v in t.reset6),
    }


def resetting_pins(state: DesiredState) -> dict[Family, frozenset[PinReset]]:
    """Per family, the pins' connections the state's connection table resets."""
    return {
        Family.INET: frozenset(p for t in state.nft for p in t.pins4),
        Family.INET6: frozenset(p for t in state.nft for p in t.pins6),
    }


def without_connections(state: DesiredState) -> DesiredState:
    """The state without the connection marks' table and rules, and without the uplinks'
    queues (what exports render: other systems have no such table, the rules alone would
    do nothing, and a queue without the table's priorities would only shape)."""
    masks = {t.mask for t in state.nft if t.mask}
    rules = frozenset(r for r in state.rules if r.fwmask is None or r.fwmask not in masks)
    return replace(state, rules=rules, nft=frozenset(), queues=frozenset())

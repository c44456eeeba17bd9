"""Pure: the failover order — which tier the balancer carries, where a pin list points.

The balancer carries the lowest tier with an uplink in service (weights apply within
it); a tier that spills over adds the next tier's uplinks in service, each by its
weight; an uplink over its data cap counts as the last tier of all. A pin with an
ordered fallback list points at the first of its uplinks in service: one uplink, one
public address, at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

# Where an uplink over its data cap goes: behind every tier a config can name.
LAST_RESORT_TIER = 1_000


class Member(Protocol):
    """What the order needs of an uplink in one family (desired.UplinkPlan has it)."""

    @property
    def name(self) -> str: ...
    @property
    def tier(self) -> int: ...
    @property
    def usable(self) -> bool: ...
    @property
    def in_service(self) -> bool: ...


M = TypeVar("M", bound=Member)


@dataclass(frozen=True)
class OrderState:
    """What the daemon measured that changes the order: caps reached, tiers spilling over."""

    last_resort: frozenset[str] = field(default_factory=frozenset)  # uplinks over their cap
    spilling: frozenset[int] = field(default_factory=frozenset)  # tiers loaded past `above`


class Role(enum.StrEnum):
    """An uplink's part in the failover order (status `role`)."""

    CARRYING = "carrying"  # in the balancer, or the uplink a pin points at
    STANDBY = "standby"  # in service, waiting for a lower tier or a pin's first choice to fail
    DOWN = "down"  # not in service: unhealthy, no carrier, no lease
    DRAINED = "drained"  # taken out of service by hand


def effective_tier(name: str, tier: int, order: OrderState) -> int:
    """The uplink's tier, or the last resort once it is over its data cap."""
    return LAST_RESORT_TIER if name in order.last_resort else tier


def carrying_tier(members: Iterable[Member]) -> int | None:
    """The lowest tier with an uplink in service, None when no tier has one."""
    return min((m.tier for m in members if m.in_service), default=None)


def balanced(members: Sequence[M], order: OrderState) -> list[M]:
    """The members of the balancer: the carrying tier's, and the next tier's while it spills."""
    tier = carrying_tier(members)
    if tier is None:
        return []
    tiers = {tier}
    if tier in order.spilling:
        following = carrying_tier(m for m in members if m.tier > tier)
        if following is not None:
            tiers.add(following)
    return [m for m in members if m.in_service and m.tier in tiers]


def kept(members: Sequence[M]) -> list[M]:
    """when_all_down keep: the lowest tier's usable uplinks (the checks may be what failed)."""
    tier = min((m.tier for m in members if m.usable), default=None)
    return [m for m in members if m.usable and m.tier == tier]


def pin_choice(names: Sequence[str], members: Mapping[str, M]) -> M | None:
    """The first uplink of a pin's list that is in service, None when none is."""
    return next((members[n] for n in names if n in members and members[n].in_service), None)


def roles(
    names: Sequence[str],
    carrying: Collection[str],
    in_service: Collection[str],
    drained: Collection[str],
) -> dict[str, Role]:
    """Each uplink's role from what carries traffic (in any family) and what is in service."""
    out: dict[str, Role] = {}
    for name in names:
        if name in drained:
            out[name] = Role.DRAINED
        elif name in carrying:
            out[name] = Role.CARRYING
        elif name in in_service:
            out[name] = Role.STANDBY
        else:
            out[name] = Role.DOWN
    return out

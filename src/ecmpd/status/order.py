"""The failover order in the status: tier, role, bytes, takeover time, data caps. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ecmpd.carrying import Carrying, carrying, carrying_tiers, takeover_time, uplink_roles
from ecmpd.config import Config
from ecmpd.datacap import Ledger
from ecmpd.model import DesiredState, nexthop_id
from ecmpd.order import Role
from ecmpd.status.types import Status


@dataclass(frozen=True)
class OrderView:
    """What the status shows of the order, gathered by its caller."""

    roles: Mapping[str, Role]
    in_service: frozenset[str]  # in service in some family
    counters: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # (rx, tx) bytes
    ledgers: Mapping[str, Ledger] = field(default_factory=dict)
    last_resort: frozenset[str] = frozenset()


def daemon_order_view(
    config: Config,
    now: Carrying,
    in_service: Collection[str],
    drained: Collection[str],
    counters: Mapping[str, tuple[int, int]],
    ledgers: Mapping[str, Ledger],
    last_resort: Collection[str],
) -> OrderView:
    """The daemon's view: roles from what its last reconcile made carry, and its health."""
    return OrderView(
        roles=uplink_roles(config, now, in_service, drained),
        in_service=frozenset(in_service),
        counters=counters,
        ledgers=ledgers,
        last_resort=frozenset(last_resort),
    )


def kernel_order_view(
    config: Config,
    observed: DesiredState,
    rule_names: Iterable[tuple[int, str]],
    counters: Mapping[str, tuple[int, int]],
) -> OrderView:
    """The kernel's view: carrying from its groups and rules; a nexthop of a tier above
    the carrying one stands by (the kernel cannot say whether it is healthy)."""
    now = carrying(config, observed, dict(rule_names))
    nexthops = {n.id for n in observed.nexthops}
    tiers = carrying_tiers(config, now)
    standing = {
        u.name
        for u in config.uplinks
        for family, tier in tiers.items()
        if tier is not None and u.tier > tier and nexthop_id(u.table, family) in nexthops
    }
    in_service = now.uplinks() | standing
    return OrderView(uplink_roles(config, now, in_service, ()), frozenset(in_service), counters)


def with_order(status: Status, config: Config, view: OrderView) -> Status:
    """The status with each uplink's tier, role, bytes, takeover time and data cap."""
    uplinks = []
    for entry in status.uplinks:
        u = config.uplink(entry.name)
        role = view.roles.get(u.name)
        rx_tx = view.counters.get(u.name)
        ledger = view.ledgers.get(u.name)
        update: dict[str, object] = {"tier": u.tier, "metered": u.metered, "role": role}
        if rx_tx is not None:
            update["bytes_in"], update["bytes_out"] = rx_tx
        if role is Role.STANDBY:
            update["takeover_time_s"] = round(takeover_time(config, u.name, view.in_service), 3)
        if u.data_cap is not None:
            update["data_cap"] = u.data_cap.limit
            update["data_used"] = ledger.used if ledger is not None else None
            update["last_resort"] = u.name in view.last_resort
        uplinks.append(entry.model_copy(update=update))
    return status.model_copy(update={"uplinks": tuple(uplinks)})

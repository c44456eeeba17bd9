"""Pure: route health injection, the default route FRR imports while this router is online.

`announce: {table: N, min_uplinks: 1}` keeps, per family, a plain default route in table
N exactly while at least `min_uplinks` uplinks of that family are in service with a known
verdict (drained and not-yet-probed uplinks do not count). FRR's zebra imports the table
(`ip import-table N`) and bgpd announces it (`redistribute table N`), so a router whose
uplinks all failed stops attracting traffic within FRR's own delays (~124 ms measured).

Why a plain gateway route and not the balancer's: a route on a nexthop object would be
imported *with* that object, and zebra would then treat ecmpd's group as its own; and a
zebra importing the balancer table saw every in-place group change and lost the route
(see plan.py for why the announce route changes by delete-then-add).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ecmpd.config import Config
from ecmpd.model import (
    ANNOUNCE_MAIN_METRIC,
    DEFAULT_ROUTE,
    IPV6_METRIC,
    MAIN_TABLE,
    SCOPE_LINK,
    Family,
    Route,
)
from ecmpd.order import OrderState, balanced
from ecmpd.uplinkplan import UplinkPlan, carries

# Which uplinks' verdicts count, per family (None: every uplink in service, as `apply`
# assumes with no daemon). The daemon leaves out uplinks it has not probed yet.
Known = Mapping[Family, Collection[str]] | None


def announce_routes(
    config: Config,
    by_family: Mapping[Family, Sequence[UplinkPlan]],
    order: OrderState,
    known: Known = None,
) -> set[Route]:
    """The announce table's default routes: one per family whose minimum is met."""
    if config.announce is None:
        return set()
    routes: set[Route] = set()
    for family, plans in by_family.items():
        minimum = config.announce.min_uplinks.of(family)
        if minimum is None or not any(carries(u, family) for u in config.uplinks):
            continue
        counted = [
            u for u in plans if u.in_service and (known is None or u.name in known.get(family, ()))
        ]
        if len(counted) < minimum:
            continue
        via = announce_via(plans, counted, order)
        table = config.announce.table_of(family)
        routes.add(
            Route(
                family=family,
                table=table,
                dst=DEFAULT_ROUTE[family],
                ifname=via.ifname,
                gateway=via.gateway,
                # A point-to-point uplink without a gateway: a device route (scope link).
                scope=0 if via.gateway is not None or family is Family.INET6 else SCOPE_LINK,
                metric=_metric(family, table),
            )
        )
    return routes


def _metric(family: Family, table: int) -> int:
    """ANNOUNCE_MAIN_METRIC in main; elsewhere what the kernel reports for metric 0."""
    if table == MAIN_TABLE:
        return ANNOUNCE_MAIN_METRIC
    return IPV6_METRIC if family is Family.INET6 else 0


def announce_tables(config: Config) -> frozenset[int]:
    """The tables whose routes (of ecmpd's) only announce: `plan` orders them apart."""
    if config.announce is None:
        return frozenset()
    return frozenset(config.announce.table_of(f) for f in Family)


def announce_via(
    plans: Sequence[UplinkPlan], counted: Sequence[UplinkPlan], order: OrderState
) -> UplinkPlan:
    """The uplink the announce route names: the first counted one carrying traffic.

    Its gateway only has to be reachable for zebra to take the route as valid (BGP
    announces the router itself as next hop); the first balancer member in config order
    changes only when that uplink leaves service, so the route rarely changes.
    """
    names = {u.name for u in counted}
    carrying = [u for u in balanced(plans, order) if u.name in names]
    return (carrying or list(counted))[0]


def known_uplinks(
    verdicts: Mapping[tuple[str, Family], bool | None], adopted: Collection[Family] = ()
) -> dict[Family, set[str]]:
    """Per family, the uplinks whose verdict counts for the announce route.

    `verdicts`: (uplink, family) -> in service (healthy and not drained), None while
    not probed yet. Not-yet-probed uplinks count only in an `adopted` family: one whose
    announce route the daemon found in the kernel at start, so that a restart (SIGTERM
    leaves the route in place) withdraws nothing while probing settles.
    """
    known: dict[Family, set[str]] = {}
    for (name, family), verdict in verdicts.items():
        if verdict or (verdict is None and family in adopted):
            known.setdefault(family, set()).add(name)
    return known


def announced_families(routes: Collection[Route], config: Config) -> set[Family]:
    """The families with an announce route among `routes` (what a restart adopts)."""
    if config.announce is None:
        return set()
    return {r.family for r in routes if r.table == config.announce.table_of(r.family)}

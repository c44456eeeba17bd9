"""Pure: diff(desired, observed) -> the ordered operations that turn one into the other.

The order is what keeps traffic flowing: everything is added or replaced before
anything is deleted, and dependencies are respected (nexthops before the groups that
use them, groups before routes, routes before the rules that point at their tables,
rules before the MPTCP endpoints whose subflows they route; deletions in the reverse
order).

The announce table (`announce`, what FRR imports and announces by BGP) is the exception:
its route goes first of all when it goes, so the router stops attracting traffic before
the balancer loses its last uplink, and comes last of all when it comes, once the
balancer can carry what it attracts. A changed announce route is deleted and added
again, never replaced in place: FRR 8.4's zebra loses an imported route that is
replaced (measured: withdrawn and never re-announced), while delete-then-add, even as
two messages, never flapped at the BGP peer.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ecmpd.model import (
    DesiredState,
    MptcpEndpoint,
    MptcpLimits,
    Nexthop,
    NexthopGroup,
    NftTable,
    Queue,
    Route,
    Rule,
    Sysctl,
)

KernelObject = (
    Rule | Route | Nexthop | NexthopGroup | Sysctl | NftTable | MptcpEndpoint | MptcpLimits | Queue
)

# A group whose type or bucket count must change cannot be changed in place: the
# route moves to a group at this offset while the real one is re-created.
SWAP_ID_OFFSET = 0x8000


class OpKind(enum.Enum):
    """What an operation does to its object."""

    ADD = "add"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class Op:
    """One kernel operation: the unit `plan` prints, `apply` executes, tests compare."""

    kind: OpKind
    obj: KernelObject

    def __str__(self) -> str:
        return f"{self.kind.value} {type(self.obj).__name__} {self.obj}"


_T = TypeVar(
    "_T", Rule, Route, Nexthop, NexthopGroup, Sysctl, NftTable, MptcpEndpoint, MptcpLimits, Queue
)


def _by_key(objs: Iterable[_T]) -> dict[object, _T]:
    return {o.key: o for o in objs}


def _changes(want: Iterable[_T], have: Iterable[_T]) -> tuple[list[_T], list[_T], list[_T]]:
    """(to add, to replace, to delete), each sorted for a stable plan."""
    w, h = _by_key(want), _by_key(have)
    add = [o for k, o in w.items() if k not in h]
    rep = [o for k, o in w.items() if k in h and h[k] != o]
    dele = [o for k, o in h.items() if k not in w]
    return _sorted(add), _sorted(rep), _sorted(dele)


def _sorted(objs: list[_T]) -> list[_T]:
    return sorted(objs, key=lambda o: repr(o.key))


def diff(desired: DesiredState, observed: DesiredState) -> list[Op]:
    """The minimal ordered operations from `observed` to `desired` (empty when equal)."""
    a_add, a_rep, a_del = _changes(
        (r for r in desired.routes if r.table in desired.announce_tables),
        (r for r in observed.routes if r.table in desired.announce_tables),
    )
    have_announced = _by_key(observed.routes)
    ops: list[Op] = [Op(OpKind.DELETE, r) for r in a_del]
    add, rep, dele = _changes(desired.sysctls, observed.sysctls)
    ops += [Op(OpKind.REPLACE, s) for s in add + rep]
    # The uplinks' queues before the table that sends packets to their classes.
    q_add, q_rep, q_del = _changes(desired.queues, observed.queues)
    ops += [Op(OpKind.REPLACE, q) for q in q_add + q_rep]
    # The nftables table (NAT, connection marks) before any route can send traffic out
    # of an uplink; replaced atomically. Its reset sets (the uplinks whose connections
    # are ending) lose members before the routes change and gain them after: a rejoining
    # uplink's new connections are never reset, and a failover's group replace is never
    # held up by nft.
    n_add, n_rep, n_del = _changes(desired.nft, observed.nft)
    have_nft = _by_key(observed.nft)
    late_nft = []
    for table in n_add + n_rep:
        early = _fewer_resets(have_nft.get(table.key), table)
        if early != have_nft.get(table.key):
            ops.append(Op(OpKind.REPLACE, early))
        if early != table:
            late_nft.append(table)
    # The subflows limit before any endpoint that needs room under it.
    m_add, m_rep, m_del = _changes(desired.mptcp_limits, observed.mptcp_limits)
    ops += [Op(OpKind.REPLACE, m) for m in m_add + m_rep]

    nh_add, nh_rep, nh_del = _changes(desired.nexthops, observed.nexthops)
    ops += [Op(OpKind.ADD, n) for n in nh_add] + [Op(OpKind.REPLACE, n) for n in nh_rep]

    g_add, g_rep, g_del = _changes(desired.groups, observed.groups)
    have_groups: Mapping[object, NexthopGroup] = _by_key(observed.groups)
    swaps = [g for g in g_rep if g.immutable() != have_groups[g.key].immutable()]
    ops += [Op(OpKind.ADD, g) for g in g_add]
    ops += [Op(OpKind.REPLACE, g) for g in g_rep if g not in swaps]

    announced = desired.announce_tables
    r_add, r_rep, r_del = _changes(
        (r for r in desired.routes if r.table not in announced),
        (r for r in observed.routes if r.table not in announced),
    )
    for group in swaps:
        ops += _swap_group(have_groups[group.key], group, observed.routes)
    ops += [Op(OpKind.ADD, r) for r in r_add] + [Op(OpKind.REPLACE, r) for r in r_rep]

    # Rules have no in-place replace: a changed rule is added beside the old one at
    # the same priority (the kernel keeps both, old first) and the old one deleted.
    ru_add, ru_rep, ru_del = _changes(desired.rules, observed.rules)
    have_rules = _by_key(observed.rules)
    ops += [Op(OpKind.ADD, r) for r in ru_add + ru_rep]
    ops += _endpoints(desired.endpoints, observed.endpoints)
    ops += [Op(OpKind.DELETE, have_rules[r.key]) for r in ru_rep]
    ops += [Op(OpKind.DELETE, r) for r in ru_del]
    ops += [Op(OpKind.REPLACE, n) for n in late_nft]

    ops += [Op(OpKind.DELETE, r) for r in r_del]
    ops += [Op(OpKind.DELETE, g) for g in g_del]
    ops += [Op(OpKind.DELETE, n) for n in nh_del]
    ops += [Op(OpKind.DELETE, n) for n in n_del]
    ops += [Op(OpKind.DELETE, q) for q in q_del]
    ops += [Op(OpKind.DELETE, m) for m in m_del]
    ops += [Op(OpKind.DELETE, s) for s in dele]
    for route in a_rep:
        ops += [Op(OpKind.DELETE, have_announced[route.key]), Op(OpKind.ADD, route)]
    ops += [Op(OpKind.ADD, r) for r in a_add]
    return ops


# The field of DesiredState that holds each kind of object.
_FIELDS: Mapping[type, str] = {
    Rule: "rules",
    Route: "routes",
    Nexthop: "nexthops",
    NexthopGroup: "groups",
    Sysctl: "sysctls",
    NftTable: "nft",
    MptcpEndpoint: "endpoints",
    MptcpLimits: "mptcp_limits",
    Queue: "queues",
}


def after(state: DesiredState, op: Op) -> DesiredState:
    """The state once the kernel took `op` (the daemon's view as a reconcile goes on).

    An add puts the object beside any other of its key (a changed rule's twin at the
    same priority), a replace takes the place of the one of its key, a delete removes
    exactly the object deleted. The kernel's own cascades (a deleted group takes its
    routes along) are not modelled: a plan deletes routes before their groups.
    """
    name = _FIELDS[type(op.obj)]
    objs: frozenset[Any] = getattr(state, name)
    if op.kind is OpKind.DELETE:
        objs = objs - {op.obj}
    elif op.kind is OpKind.REPLACE:
        objs = frozenset(o for o in objs if o.key != op.obj.key) | {op.obj}
    else:
        objs = objs | {op.obj}
    changed: dict[str, Any] = {name: objs}
    return replace(state, **changed)


def _endpoints(want: Iterable[MptcpEndpoint], have: Iterable[MptcpEndpoint]) -> list[Op]:
    """MPTCP endpoints, once the reply rules that route their subflows are in place.

    Only `backup` changes in place (the kernel sends MP_PRIO); another device means
    delete and add, in that order, as the kernel allows one endpoint per address.
    Endpoints that go are deleted before any rule or route they relied on.
    """
    add, rep, dele = _changes(want, have)
    old = _by_key(have)
    moved = [e for e in rep if e.immutable() != old[e.key].immutable()]
    ops = [Op(OpKind.DELETE, old[e.key]) for e in moved]
    ops += [Op(OpKind.ADD, e) for e in _sorted(add + moved)]
    ops += [Op(OpKind.REPLACE, e) for e in rep if e not in moved]
    ops += [Op(OpKind.DELETE, e) for e in dele]
    return ops


def _fewer_resets(old: NftTable | None, new: NftTable) -> NftTable:
    """`new` with only the resets (whole uplinks, pins' connections) `old` had too: the
    table to put up first (a pin's resets come after the pin rule that moved it back)."""
    if old is None:
        return replace(new, reset4=(), reset6=(), pins4=(), pins6=())
    return replace(
        new,
        reset4=tuple(v for v in new.reset4 if v in old.reset4),
        reset6=tuple(v for v in new.reset6 if v in old.reset6),
        pins4=tuple(p for p in new.pins4 if p in old.pins4),
        pins6=tuple(p for p in new.pins6 if p in old.pins6),
    )


def _swap_group(old: NexthopGroup, group: NexthopGroup, have_routes: Iterable[Route]) -> list[Op]:
    """Re-create a group whose immutable attributes change, with no moment unrouted.

    The routes that use it move to a temporary twin, the group is re-created with the
    new attributes and the routes move back as they were; the ordinary route pass then
    makes any change they need. (Deleting a nexthop deletes the routes still using it,
    so none may be left on the twin, and moving a route straight to its final form
    could point it at another group still waiting for its own swap.)
    """
    twin = replace(group, id=group.id + SWAP_ID_OFFSET)
    users = [r for r in have_routes if r.nhid == old.id]
    ops = [Op(OpKind.ADD, twin)]
    ops += [Op(OpKind.REPLACE, replace(r, nhid=twin.id)) for r in users]
    ops += [Op(OpKind.DELETE, old), Op(OpKind.ADD, group)]
    ops += [Op(OpKind.REPLACE, r) for r in users]
    ops += [Op(OpKind.DELETE, twin)]
    return ops

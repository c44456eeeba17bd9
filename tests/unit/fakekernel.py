"""A fake kernel with the kernel's dependency rules, and random states for diff() tests."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from hypothesis import strategies as st

from ecmpd.model import (
    DesiredState,
    Family,
    GroupType,
    MptcpEndpoint,
    MptcpLimits,
    Nexthop,
    NexthopGroup,
    NftTable,
    Queue,
    Route,
    RouteType,
    Rule,
    RuleAction,
    Sysctl,
)
from ecmpd.plan import Op, OpKind, diff


class KernelRefused(Exception):
    """The fake kernel refused an operation the real one would refuse too."""


@dataclass
class FakeKernel:
    """The dependency rules of the kernel's nexthop/route/rule tables, in memory."""

    nexthops: dict[int, Nexthop] = field(default_factory=dict)
    groups: dict[int, NexthopGroup] = field(default_factory=dict)
    routes: dict[object, Route] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    nft: set[NftTable] = field(default_factory=set)
    endpoints: dict[object, MptcpEndpoint] = field(default_factory=dict)
    limits: set[MptcpLimits] = field(default_factory=set)
    queues: dict[str, Queue] = field(default_factory=dict)

    @classmethod
    def holding(cls, state: DesiredState) -> FakeKernel:
        k = cls()
        for op in diff(state, DesiredState()):
            k.apply(op)
        assert k.state() == state
        return k

    def state(self) -> DesiredState:
        return DesiredState(
            rules=frozenset(self.rules),
            routes=frozenset(self.routes.values()),
            nexthops=frozenset(self.nexthops.values()),
            groups=frozenset(self.groups.values()),
            sysctls=frozenset(Sysctl(k, v) for k, v in self.sysctls.items()),
            nft=frozenset(self.nft),
            endpoints=frozenset(self.endpoints.values()),
            mptcp_limits=frozenset(self.limits),
            queues=frozenset(self.queues.values()),
        )

    def apply(self, op: Op) -> None:
        obj = op.obj
        if isinstance(obj, Sysctl):
            if op.kind is OpKind.DELETE:
                del self.sysctls[obj.name]
            else:
                self.sysctls[obj.name] = obj.value
        elif isinstance(obj, Nexthop):
            self._nexthop(op.kind, obj)
        elif isinstance(obj, NexthopGroup):
            self._group(op.kind, obj)
        elif isinstance(obj, Route):
            self._route(op.kind, obj)
        elif isinstance(obj, NftTable):
            # One table, replaced atomically (add table; delete table; add table ...).
            self.nft = set() if op.kind is OpKind.DELETE else {obj}
        elif isinstance(obj, MptcpLimits):
            # Set in place; a delete restores what was there before ecmpd.
            self.limits = set() if op.kind is OpKind.DELETE else {obj}
        elif isinstance(obj, MptcpEndpoint):
            self._endpoint(op.kind, obj)
        elif isinstance(obj, Queue):
            # Built or changed whole under one root; a delete gives the default back.
            if op.kind is OpKind.DELETE:
                self.queues.pop(obj.ifname, None)
            else:
                self.queues[obj.ifname] = obj
        else:
            self._rule(op.kind, obj)

    def _endpoint(self, kind: OpKind, e: MptcpEndpoint) -> None:
        # One endpoint per address; SET_FLAGS changes only `backup`.
        if kind is OpKind.ADD:
            self._require(e.key not in self.endpoints, "EEXIST")
        elif kind is OpKind.REPLACE:
            old = self.endpoints.get(e.key)
            self._require(old is not None and old.immutable() == e.immutable(), "EINVAL")
        else:
            self._require(self.endpoints.get(e.key) == e, "ENOENT")
            del self.endpoints[e.key]
            return
        self.endpoints[e.key] = e

    def _nexthop(self, kind: OpKind, nh: Nexthop) -> None:
        if kind is OpKind.ADD:
            self._require(nh.id not in self.nexthops and nh.id not in self.groups, "EEXIST")
            self.nexthops[nh.id] = nh
        elif kind is OpKind.REPLACE:
            self._require(nh.id in self.nexthops, "ENOENT")
            self.nexthops[nh.id] = nh
        else:
            self._require(self.nexthops.get(nh.id) == nh, "ENOENT")
            del self.nexthops[nh.id]
            for g in list(self.groups.values()):
                members = tuple(m for m in g.members if m[0] != nh.id)
                if not members:
                    self._drop_group(g.id)
                elif members != g.members:
                    self.groups[g.id] = replace(g, members=members)
            self._drop_routes_using(nh.id)

    def _group(self, kind: OpKind, g: NexthopGroup) -> None:
        self._require(all(m[0] in self.nexthops for m in g.members), "member missing")
        if kind is OpKind.ADD:
            self._require(g.id not in self.nexthops and g.id not in self.groups, "EEXIST")
            self.groups[g.id] = g
        elif kind is OpKind.REPLACE:
            self._require(g.id in self.groups, "ENOENT")
            self._require(self.groups[g.id].immutable() == g.immutable(), "EINVAL immutable")
            self.groups[g.id] = g
        else:
            self._require(self.groups.get(g.id) == g, "ENOENT")
            self._drop_group(g.id)

    def _drop_group(self, gid: int) -> None:
        del self.groups[gid]
        self._drop_routes_using(gid)

    def _drop_routes_using(self, nhid: int) -> None:
        for key, r in list(self.routes.items()):
            if r.nhid == nhid:
                del self.routes[key]

    def _route(self, kind: OpKind, r: Route) -> None:
        if kind is not OpKind.DELETE and r.nhid is not None:
            self._require(r.nhid in self.nexthops or r.nhid in self.groups, "nhid missing")
        if kind is OpKind.ADD:
            self._require(r.key not in self.routes, "EEXIST")
        elif kind is OpKind.REPLACE:
            self._require(r.key in self.routes, "ENOENT")
        else:
            self._require(self.routes.get(r.key) == r, "ESRCH")
            del self.routes[r.key]
            return
        self.routes[r.key] = r

    def _rule(self, kind: OpKind, r: Rule) -> None:
        if kind is OpKind.DELETE:
            self._require(r in self.rules, "ENOENT")
            self.rules.remove(r)
        else:
            self._require(r not in self.rules, "EEXIST")
            self.rules.append(r)

    @staticmethod
    def _require(ok: bool, why: str) -> None:
        if not ok:
            raise KernelRefused(why)


# --- random states ---------------------------------------------------------------

NH_IDS = [1, 2, 3, 4]
GROUP_IDS = [50, 51]
IFNAMES = ["wan-a", "wan-b", "wan-c"]
GATEWAYS = [IPv4Address("10.1.0.1"), IPv4Address("10.2.0.1"), None]
DSTS = [IPv4Network("0.0.0.0/0"), IPv4Network("10.9.0.0/24")]
TABLES = [101, 200]
MASK = 0xFF000000
MARKS: list[int | None] = [None, 0x01000000, 0x02000000]
ENDPOINT_ADDRESSES = [IPv4Address("10.1.0.2"), IPv4Address("10.2.0.2")]


@st.composite
def states(draw: st.DrawFn) -> DesiredState:
    nexthops = [
        Nexthop(
            id=i,
            family=Family.INET,
            ifname=draw(st.sampled_from(IFNAMES)),
            gateway=draw(st.sampled_from(GATEWAYS)),
        )
        for i in draw(st.lists(st.sampled_from(NH_IDS), unique=True))
    ]
    groups = []
    if nexthops:
        for gid in draw(st.lists(st.sampled_from(GROUP_IDS), unique=True)):
            members = draw(
                st.lists(st.sampled_from([n.id for n in nexthops]), min_size=1, unique=True)
            )
            gtype = draw(st.sampled_from(list(GroupType)))
            resilient = gtype is GroupType.RESILIENT
            groups.append(
                NexthopGroup(
                    id=gid,
                    type=gtype,
                    members=tuple(sorted((m, draw(st.integers(1, 256))) for m in members)),
                    buckets=draw(st.sampled_from([64, 512])) if resilient else 0,
                    idle_timer=draw(st.sampled_from([0, 60])) if resilient else 0,
                )
            )
    targets = [n.id for n in nexthops] + [g.id for g in groups]
    routes = []
    for table in TABLES:
        for dst in DSTS:
            how = draw(st.sampled_from(["none", "gw", "unreachable", "nhid"]))
            if how == "gw":
                routes.append(
                    Route(Family.INET, table, dst, ifname="wan-a", gateway=IPv4Address("10.1.0.1"))
                )
            elif how == "unreachable":
                routes.append(Route(Family.INET, table, dst, type=RouteType.UNREACHABLE))
            elif how == "nhid" and targets:
                routes.append(Route(Family.INET, table, dst, nhid=draw(st.sampled_from(targets))))
    # A priority may hold a reply rule and a connection-mark rule (told apart by fwmark).
    rules = [
        Rule(
            Family.INET,
            prio,
            RuleAction.LOOKUP,
            table=draw(st.sampled_from(TABLES)),
            suppress_prefixlength=draw(st.sampled_from([None, 0])),
            fwmark=mark,
            fwmask=None if mark is None else MASK,
        )
        for prio in draw(st.lists(st.integers(10000, 10004), unique=True))
        for mark in draw(st.lists(st.sampled_from(MARKS), min_size=1, unique=True))
    ]
    nft = [
        NftTable(
            mask=MASK,
            marks=(("wan-a", 0x01000000), ("wan-b", 0x02000000)),
            reset4=tuple(sorted(draw(st.lists(st.sampled_from(MARKS[1:]), unique=True)))),
            masquerade=draw(st.sampled_from([(), ("wan-a",)])),
        )
        for _ in range(draw(st.integers(0, 1)))
    ]
    sysctls = [
        Sysctl("net.ipv4.fib_multipath_hash_policy", str(p))
        for p in draw(st.lists(st.integers(0, 3), max_size=1))
    ]
    endpoints = [
        MptcpEndpoint(address, draw(st.sampled_from(IFNAMES)), draw(st.booleans()))
        for address in draw(st.lists(st.sampled_from(ENDPOINT_ADDRESSES), unique=True))
    ]
    limits = [MptcpLimits(n) for n in draw(st.lists(st.integers(2, 3), max_size=1))]
    return DesiredState(
        frozenset(rules),
        frozenset(routes),
        frozenset(nexthops),
        frozenset(groups),
        frozenset(sysctls),
        nft=frozenset(nft),
        endpoints=frozenset(endpoints),
        mptcp_limits=frozenset(limits),
    )

"""diff(): any state reaches any other, adding before deleting, with kernel semantics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
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


@settings(max_examples=400, deadline=None)
@given(start=states(), target=states())
def test_any_state_reaches_any_other_adding_before_deleting(
    start: DesiredState, target: DesiredState
) -> None:
    kernel = FakeKernel.holding(start)
    kept_routes = {r.key for r in start.routes} & {r.key for r in target.routes}
    kept_rules = {r.key for r in start.rules} & {r.key for r in target.rules}
    for op in diff(target, start):
        kernel.apply(op)
        now = kernel.state()
        # Traffic never sees a moment without a route or rule it had before and after.
        assert kept_routes <= {r.key for r in now.routes}, op
        assert kept_rules <= {r.key for r in now.rules}, op
    assert kernel.state() == target


@settings(max_examples=200, deadline=None)
@given(state=states())
def test_a_state_diffed_against_itself_needs_nothing(state: DesiredState) -> None:
    assert diff(state, state) == []


def _two_uplinks(members: tuple[tuple[int, int], ...]) -> DesiredState:
    nhs = frozenset(Nexthop(i, Family.INET, f"wan-{i}", IPv4Address(f"10.{i}.0.1")) for i in (1, 2))
    group = NexthopGroup(50, GroupType.RESILIENT, members, buckets=512, idle_timer=60)
    route = Route(Family.INET, 200, DSTS[0], nhid=50)
    return DesiredState(routes=frozenset({route}), nexthops=nhs, groups=frozenset({group}))


def test_failover_is_one_group_replace() -> None:
    before = _two_uplinks(((1, 1), (2, 2)))
    after = _two_uplinks(((2, 2),))
    assert diff(after, before) == [Op(OpKind.REPLACE, next(iter(after.groups)))]


def test_failover_with_resets_replaces_the_group_before_the_table() -> None:
    """The table's reset sets change after the group: a failover is never held up by nft."""
    table = NftTable(mask=MASK, marks=(("wan-1", 0x01000000), ("wan-2", 0x02000000)))
    before = replace(_two_uplinks(((1, 1), (2, 2))), nft=frozenset({table}))
    ending = replace(table, reset4=(0x01000000,))
    after = replace(_two_uplinks(((2, 2),)), nft=frozenset({ending}))
    assert diff(after, before) == [
        Op(OpKind.REPLACE, next(iter(after.groups))),
        Op(OpKind.REPLACE, ending),
    ]
    # Anything else in the table (a new uplink's mark, NAT) still comes first.
    grown = replace(ending, marks=(*ending.marks, ("wan-3", 0x03000000)))
    ops = diff(replace(after, nft=frozenset({grown})), before)
    assert ops[0] == Op(OpKind.REPLACE, grown)


def test_group_type_change_swaps_through_a_twin_without_a_gap() -> None:
    before = _two_uplinks(((1, 1), (2, 2)))
    group = replace(
        next(iter(before.groups)), type=GroupType.HASH_THRESHOLD, buckets=0, idle_timer=0
    )
    after = replace(before, groups=frozenset({group}))
    ops = diff(after, before)
    kinds = [(op.kind, type(op.obj).__name__) for op in ops]
    assert kinds == [
        (OpKind.ADD, "NexthopGroup"),
        (OpKind.REPLACE, "Route"),
        (OpKind.DELETE, "NexthopGroup"),
        (OpKind.ADD, "NexthopGroup"),
        (OpKind.REPLACE, "Route"),
        (OpKind.DELETE, "NexthopGroup"),
    ]
    kernel = FakeKernel.holding(before)
    for op in ops:
        kernel.apply(op)
        assert kernel.routes, op
    assert kernel.state() == after


def test_endpoints_follow_the_rules_that_route_them_and_go_before_them() -> None:
    reply = Rule(Family.INET, 10000, RuleAction.LOOKUP, table=101)
    a = MptcpEndpoint(IPv4Address("10.1.0.2"), "wan-a")
    with_both = DesiredState(rules=frozenset({reply}), endpoints=frozenset({a}))
    up = [type(op.obj).__name__ for op in diff(with_both, DesiredState())]
    assert up.index("Rule") < up.index("MptcpEndpoint")
    down = [type(op.obj).__name__ for op in diff(DesiredState(), with_both)]
    assert down.index("MptcpEndpoint") < down.index("Rule")


def test_a_degraded_uplink_flips_backup_in_place_and_a_new_device_re_adds() -> None:
    a = MptcpEndpoint(IPv4Address("10.1.0.2"), "wan-a")
    before = DesiredState(endpoints=frozenset({a}))
    backup = replace(a, backup=True)
    assert diff(replace(before, endpoints=frozenset({backup})), before) == [
        Op(OpKind.REPLACE, backup)
    ]
    moved = replace(a, ifname="wan-b")
    assert diff(replace(before, endpoints=frozenset({moved})), before) == [
        Op(OpKind.DELETE, a),
        Op(OpKind.ADD, moved),
    ]

"""diff(): any state reaches any other, adding before deleting, with kernel semantics."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, ip_network

from hypothesis import given, settings

from ecmpd.model import (
    ALL_PORTS,
    DesiredState,
    Family,
    GroupType,
    MptcpEndpoint,
    Nexthop,
    NexthopGroup,
    NftTable,
    PinReset,
    Route,
    Rule,
    RuleAction,
)
from ecmpd.plan import Op, OpKind, after, diff
from tests.unit.fakekernel import DSTS, MASK, FakeKernel, states


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


@settings(max_examples=400, deadline=None)
@given(start=states(), target=states())
def test_after_each_operation_the_view_is_what_the_kernel_holds(
    start: DesiredState, target: DesiredState
) -> None:
    """The daemon's view, moved on op by op (plan.after), never differs from the kernel."""
    kernel = FakeKernel.holding(start)
    view = start
    for op in diff(target, start):
        kernel.apply(op)
        view = after(view, op)
        assert view == kernel.state(), op
    assert view == target


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
    # Back in service: the reset goes first, so the uplink's new connections never meet it.
    assert diff(before, after) == [
        Op(OpKind.REPLACE, table),
        Op(OpKind.REPLACE, next(iter(before.groups))),
    ]
    # Anything else in the table (a new uplink's mark, NAT) still comes first; an added
    # reset value waits for the routes.
    grown = replace(ending, marks=(*ending.marks, ("wan-3", 0x03000000)))
    ops = diff(replace(after, nft=frozenset({grown})), before)
    assert ops[0] == Op(OpKind.REPLACE, replace(grown, reset4=()))
    assert ops[-1] == Op(OpKind.REPLACE, grown)
    # A pin's resets likewise: added after the rules moved the pin back, dropped before.
    pin = PinReset(
        ip_network("10.200.1.5/32"), ip_network("0.0.0.0/0"), ALL_PORTS, ALL_PORTS, 0x02000000
    )
    pinned = replace(table, pins4=(pin,))
    moved = replace(before, nft=frozenset({pinned}))  # the pin back on its first choice
    assert diff(moved, after) == [
        Op(OpKind.REPLACE, table),  # the uplink's reset goes first (it rejoins)...
        Op(OpKind.REPLACE, next(iter(moved.groups))),
        Op(OpKind.REPLACE, pinned),  # ...the pin's after the routes
    ]
    assert diff(after, moved)[0] == Op(OpKind.REPLACE, table)  # and goes before them


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

"""The daemon's reconcile policy: holds, pruned groups, backoff, a pass against a fake writer."""

from __future__ import annotations

import errno
import textwrap
from dataclasses import replace
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import pytest

from ecmpd.config import parse_config
from ecmpd.kernel.apply import KernelWriter
from ecmpd.kernel.partial import execute_partial
from ecmpd.kernel.record import Record
from ecmpd.model import (
    DesiredState,
    Family,
    GroupType,
    Nexthop,
    NexthopGroup,
    Queue,
    Route,
    Rule,
    RuleAction,
    Sysctl,
    nexthop_id,
)
from ecmpd.plan import SWAP_ID_OFFSET, Op, OpKind, diff
from ecmpd.refusals import (
    RETRY_MAX_S,
    Owners,
    RefusalBook,
    RefusalKind,
    describe,
    foreign_use,
    held_by,
    missing_group,
    prune_group,
    refusal_kind,
)

NH_A, NH_B = nexthop_id(101), nexthop_id(102)
GROUP = nexthop_id(200)
DEFAULT = ip_network("0.0.0.0/0")
QUEUE = Queue("wan-b", rate=2_500_000, first=625_000, limit=125_000)


def nexthop(nhid: int, dev: str) -> Nexthop:
    return Nexthop(nhid, Family.INET, dev, gateway=IPv4Address("10.0.0.1"))


def group(*members: int) -> NexthopGroup:
    return NexthopGroup(GROUP, GroupType.RESILIENT, tuple((m, 1) for m in members), buckets=128)


def rule(priority: int, table: int) -> Rule:
    return Rule(Family.INET, priority, RuleAction.LOOKUP, table=table)


def test_a_changed_rule_keeps_the_old_one_while_its_twin_is_refused() -> None:
    new, old = rule(10100, 200), rule(10100, 101)
    refused = Op(OpKind.ADD, new)
    assert held_by(Op(OpKind.DELETE, old), [refused]) == refused
    assert held_by(Op(OpKind.DELETE, rule(10110, 101)), [refused]) is None
    assert held_by(Op(OpKind.ADD, old), [refused]) is None  # only deletions wait


def test_a_swapped_group_stays_while_its_twin_or_moving_routes_are_refused() -> None:
    old = group(NH_A)
    twin = replace(old, id=GROUP + SWAP_ID_OFFSET)
    delete_old = Op(OpKind.DELETE, old)
    assert held_by(delete_old, [Op(OpKind.ADD, twin)]) is not None
    moving = Op(OpKind.REPLACE, Route(Family.INET, 200, DEFAULT, nhid=twin.id))
    assert held_by(delete_old, [moving]) == moving
    # A refused route deletion or an unrelated nexthop does not hold it.
    gone = Op(OpKind.DELETE, Route(Family.INET, 200, DEFAULT, nhid=GROUP))
    assert held_by(delete_old, [gone, Op(OpKind.ADD, nexthop(NH_B, "b"))]) is None


def test_a_group_is_sent_without_members_the_kernel_lacks() -> None:
    op = Op(OpKind.REPLACE, group(NH_A, NH_B))
    assert prune_group(op, {NH_A, NH_B}) is op
    assert prune_group(op, {NH_A}) == Op(OpKind.REPLACE, group(NH_A))
    assert prune_group(op, set()) is None  # an empty group cannot exist: it waits
    other = Op(OpKind.ADD, nexthop(NH_A, "a"))
    assert prune_group(other, set()) is other


def test_backoff_doubles_to_its_cap_and_a_changed_operation_goes_at_once() -> None:
    book = RefusalBook(first=1.0, cap=8.0)
    op = Op(OpKind.ADD, nexthop(NH_A, "a"))
    assert book.due(op, 0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        entry = book.refuse(op, RefusalKind.REFUSED, "no", now)
        assert not book.due(op, now) and book.waiting(op) == entry
        waits.append(entry.retry_at - now)
        now = entry.retry_at
        assert book.due(op, now)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert book.current()[0].since == 0.0 and book.total == 6
    # The immediate second pass after a re-read sends it again whatever the backoff,
    # and is no backoff round of its own.
    book.reopen([entry])
    assert book.due(op, now) and book.current()[0].attempts == 5
    assert book.refuse(op, RefusalKind.REFUSED, "no", now).attempts == 6
    changed = Op(OpKind.ADD, replace(nexthop(NH_A, "a"), gateway=IPv4Address("10.0.0.9")))
    assert book.due(changed, now - 1)  # new content: no wait
    assert book.refuse(changed, RefusalKind.REFUSED, "no", now).attempts == 1
    held = Op(OpKind.DELETE, rule(10100, 101))
    book.refuse(held, RefusalKind.HELD, "waits", now)
    assert book.total == 8  # holds are not refusals
    book.keep_only([changed])
    assert [r.op for r in book.current()] == [changed]
    assert book.done(changed) and book.current() == () and book.next_retry() is None
    assert RETRY_MAX_S == 60.0


class FakeWriter(KernelWriter):
    """Refuses the operations it is told to, records the rest (no kernel)."""

    def __init__(self, run: Path, refuse: dict[Op, int]) -> None:
        super().__init__(None, Record(run))
        self.refuse = refuse  # op -> errno
        self.sent: list[Op] = []

    def execute(self, op: Op) -> None:
        code = self.refuse.get(op)
        if code is not None:
            raise OSError(code, errno.errorcode[code])
        self.sent.append(op)


def test_one_refused_nexthop_holds_up_nothing_else(tmp_path: Path) -> None:
    """isp-b's nexthop is taken (EEXIST): isp-a still fails over, the rest is applied."""
    before = DesiredState(
        nexthops=frozenset({nexthop(NH_A, "a")}),
        groups=frozenset({group(NH_A)}),
        rules=frozenset({rule(10100, 101)}),
    )
    after = DesiredState(
        nexthops=frozenset({nexthop(NH_A, "a"), nexthop(NH_B, "b")}),
        groups=frozenset({group(NH_A, NH_B)}),
        rules=frozenset({rule(10100, 200)}),
        sysctls=frozenset({Sysctl("net.ipv4.conf.b.rp_filter", "2")}),
    )
    ops = diff(after, before)
    add_b = Op(OpKind.ADD, nexthop(NH_B, "b"))
    new_rule = Op(OpKind.ADD, rule(10100, 200))
    writer = FakeWriter(tmp_path, {add_b: errno.EEXIST, new_rule: errno.EINVAL})
    writer.record.remember({"net.ipv4.conf.b.rp_filter": "0"})  # no /proc read in a test
    book = RefusalBook()
    taken: list[Op] = []
    result = execute_partial(writer, ops, book, {NH_A}, now=100.0, took=taken.append)
    # Each operation is heard as the kernel took it, in order, the group as sent.
    assert taken == writer.sent
    kinds = {str(r.op): r.kind for r in result.refused}
    assert kinds == {
        str(add_b): RefusalKind.CONFLICT,
        str(new_rule): RefusalKind.REFUSED,
        str(Op(OpKind.DELETE, rule(10100, 101))): RefusalKind.HELD,  # the old rule stays
    }
    # The group went without isp-b's missing nexthop; the sysctl went through.
    assert Op(OpKind.REPLACE, group(NH_A)) in writer.sent
    assert Op(OpKind.REPLACE, Sysctl("net.ipv4.conf.b.rp_filter", "2")) in writer.sent
    assert result.pruned and not result.complete
    assert "foreign object" in next(r.error for r in result.refused if r.op == add_b)

    # Again before the retry time: nothing refused is sent again (no hot loop).
    writer.sent.clear()
    again = execute_partial(writer, ops, book, {NH_A}, now=100.5)
    assert {r.op for r in again.deferred} == {add_b, new_rule}
    # What is held waits for those, pass after pass, with no backoff of its own.
    assert [(r.op, r.kind) for r in again.refused] == [
        (Op(OpKind.DELETE, rule(10100, 101)), RefusalKind.HELD)
    ]
    assert book.next_retry() == 101.0  # the refusals' own retry, not the hold's
    assert add_b not in writer.sent and new_rule not in writer.sent
    # Its time come and the kernel willing: taken, and said so.
    writer.refuse.clear()
    later = execute_partial(writer, ops, book, {NH_A}, now=102.0)
    assert set(later.recovered) >= {add_b, new_rule}
    assert book.current() == () and later.complete


def test_a_plain_exception_is_a_refusal_too(tmp_path: Path) -> None:
    class Broken(FakeWriter):
        def execute(self, op: Op) -> None:
            raise ValueError("nft said no")

    op = Op(OpKind.ADD, nexthop(NH_A, "a"))
    result = execute_partial(Broken(tmp_path, {}), [op], RefusalBook(), set(), now=0.0)
    assert [(r.op, r.error) for r in result.refused] == [(op, "nft said no")]


@pytest.mark.parametrize(
    ("obj", "owner"),
    [
        (nexthop(NH_B, "wan-b"), "isp-b"),
        (nexthop(nexthop_id(101, Family.INET6), "wan-a"), "isp-a"),
        (Route(Family.INET, 101, DEFAULT, ifname="wan-a"), "isp-a"),
        (Route(Family.INET, 200, DEFAULT, nhid=GROUP), None),
        (rule(10001, 102), "isp-b"),
        (Rule(Family.INET, 10100, RuleAction.UNREACHABLE), None),
        (Sysctl("net.ipv4.conf.wan-b.rp_filter", "2"), "isp-b"),
        (Sysctl("net.ipv4.fib_multipath_hash_policy", "1"), None),
        (group(NH_A), None),
        (QUEUE, "isp-b"),
    ],
)
def test_owners(
    obj: Nexthop | Route | Rule | Sysctl | NexthopGroup | Queue, owner: str | None
) -> None:
    config = parse_config(
        textwrap.dedent(
            """
            uplinks:
              - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
              - {name: isp-b, interface: wan-b, gateway: 10.2.0.1}
            """
        )
    )
    assert Owners.of(config).of_object(obj) == owner


def test_a_foreign_object_on_one_of_ecmpds_ids_is_never_taken_over_nor_routed_through() -> None:
    foreign = {GROUP}
    add = Op(OpKind.ADD, group(NH_A))
    assert foreign_use(add, foreign) == (
        RefusalKind.CONFLICT,
        f"id {GROUP} is held by a foreign nexthop object",
    )
    assert foreign_use(Op(OpKind.REPLACE, group(NH_A)), foreign) is not None
    route = Op(OpKind.ADD, Route(Family.INET, 200, DEFAULT, nhid=GROUP))
    assert foreign_use(route, foreign) == (
        RefusalKind.HELD,
        f"its nexthop group {GROUP} is a foreign object",
    )
    assert foreign_use(Op(OpKind.DELETE, group(NH_A)), foreign) is None  # gone: not ours
    assert foreign_use(add, set()) is None


def test_a_route_waits_for_its_group_and_one_gone_with_its_group_is_gone(tmp_path: Path) -> None:
    route = Route(Family.INET, 200, DEFAULT, nhid=GROUP)
    assert missing_group(Op(OpKind.ADD, route), {NH_A}) == f"waits for its nexthop group {GROUP}"
    assert missing_group(Op(OpKind.ADD, route), {GROUP}) is None
    # In one pass: the group refused, the route not sent; a deletion of a route whose
    # group went (the kernel deleted both) is done without asking.
    add_group, add_route = Op(OpKind.ADD, group(NH_A)), Op(OpKind.ADD, route)
    writer = FakeWriter(tmp_path, {add_group: errno.EINVAL})
    result = execute_partial(writer, [add_group, add_route], RefusalBook(), {NH_A}, now=0.0)
    assert [(r.op, r.kind) for r in result.refused] == [
        (add_group, RefusalKind.REFUSED),
        (add_route, RefusalKind.HELD),
    ]
    assert writer.sent == []
    gone = Op(OpKind.DELETE, route)
    result = execute_partial(writer, [gone], RefusalBook(), {NH_A}, now=0.0)
    assert result.done == (gone,) and writer.sent == [] and result.complete


def test_someone_elses_qdisc_where_a_queue_goes_is_a_conflict_named_as_the_kernel_said() -> None:
    op = Op(OpKind.REPLACE, QUEUE)
    busy = OSError(errno.EBUSY, "wan-b has a root qdisc ecmpd does not own (tbf 1:)")
    assert refusal_kind(busy, op) is RefusalKind.CONFLICT
    assert describe(busy, op) == "wan-b has a root qdisc ecmpd does not own (tbf 1:)"
    # Any other refusal of a queue is a plain one.
    assert refusal_kind(OSError(errno.EINVAL, "Invalid argument"), op) is RefusalKind.REFUSED

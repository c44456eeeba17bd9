"""An uplink's `queue`: the config, the desired tree, its place in a plan, its commands."""

from __future__ import annotations

from dataclasses import replace
from textwrap import dedent

import pytest

from ecmpd.config import (
    Config,
    ConfigError,
    check_against_kernel,
    parse_config,
    queue_conflicts,
)
from ecmpd.config.uplink import FIRST_BYTES
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state
from ecmpd.export.iptext import op_command
from ecmpd.export.standby import daemon_notes
from ecmpd.model import QUEUE_BULK, QUEUE_FIRST, QUEUE_HANDLE, QUEUE_TOP, NftTable, Queue
from ecmpd.plan import Op, OpKind, after, diff
from ecmpd.queues import (
    MIN_LIMIT,
    desired_queues,
    first_bytes,
    queue_classes,
    queue_for,
    queue_leaves,
    show_handle,
)
from tests.unit.fixtures import wan_facts

CONFIG = """\
uplinks:
  - name: isp-a
    interface: wan1
    gateway: 10.1.0.1
    queue:
      rate: 95Mbit
  - name: isp-b
    interface: wan2
    gateway: 10.2.0.1
    queue: {rate: 19Mbit, first_bytes: 8kB}
  - name: isp-c
    interface: wan3
    gateway: 10.3.0.1
"""


def config(text: str = CONFIG) -> Config:
    return parse_config(dedent(text), "ecmpd.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(dedent(text), "ecmpd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_the_config_reads_rate_and_first_bytes_with_a_default() -> None:
    a, b, c = config().uplinks
    assert a.queue is not None and (a.queue.rate, a.queue.first_bytes) == (
        95_000_000,
        32 * 1024,
    )
    assert b.queue is not None and (b.queue.rate, b.queue.first_bytes) == (19_000_000, 8000)
    assert c.queue is None


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("{}", "ecmpd.yaml:5: uplinks[0].queue.rate: required"),
        ("{rate: fast}", "ecmpd.yaml:5: uplinks[0].queue.rate: expected a bandwidth"),
        (
            "{rate: 10Mbit, first_bytes: 0}",
            "ecmpd.yaml:5: uplinks[0].queue.first_bytes: must be at least 1 byte",
        ),
        (
            "{rate: 10Mbit, first_bytes: 20 packets}",
            "ecmpd.yaml:5: uplinks[0].queue.first_bytes: expected a size like '32KiB'",
        ),
        ("{rate: 10Mbit, first: 3}", "ecmpd.yaml:5: uplinks[0].queue.first: unknown key"),
    ],
)
def test_a_bad_queue_names_file_line_and_field(queue: str, expected: str) -> None:
    text = "uplinks:\n  - name: isp-a\n    interface: eth0\n    gateway: 192.168.1.1\n"
    text += f"    queue: {queue}\n"
    found = errors(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_tree_shares_the_rate_and_queues_50_ms() -> None:
    q = queue_for("wan1", 95_000_000)
    assert (q.rate, q.first, q.limit) == (11_875_000, 2_968_750, 593_750)
    top, first, bulk = queue_classes(q)
    assert (top.classid, top.parent, top.rate, top.ceil) == (
        QUEUE_TOP,
        QUEUE_HANDLE,
        q.rate,
        q.rate,
    )
    assert (first.classid, first.prio, bulk.classid, bulk.prio) == (QUEUE_FIRST, 0, QUEUE_BULK, 1)
    assert first.rate + bulk.rate == q.rate and first.ceil == bulk.ceil == q.rate
    assert [(leaf.parent, leaf.kind) for leaf in queue_leaves(q)] == [
        (QUEUE_FIRST, "pfifo"),
        (QUEUE_BULK, "bfifo"),
    ]
    assert queue_leaves(q)[1].limit == q.limit
    assert queue_for("wan1", 1_000_000).limit == MIN_LIMIT  # 50 ms of 1 Mbit/s is 6 KB
    assert [show_handle(h) for h in (QUEUE_HANDLE, QUEUE_TOP, QUEUE_FIRST)] == [
        "ec:",
        "ec:1",
        "ec:10",
    ]


def test_queues_are_wanted_on_existing_interfaces_and_the_table_sends_first_bytes() -> None:
    c = config()
    assert desired_queues(c, wan_facts(3)) == {
        queue_for("wan1", 95_000_000),
        queue_for("wan2", 19_000_000),
    }
    # wan2 not there (yet, or any more): no queue for it, the table's rule stays (by name).
    assert desired_queues(c, wan_facts(1)) == {queue_for("wan1", 95_000_000)}
    assert first_bytes(c) == (("wan1", FIRST_BYTES), ("wan2", 8000))
    state = desired_state(c, {}, wan_facts(3))
    (table,) = state.nft
    assert table.queues == (("wan1", FIRST_BYTES), ("wan2", 8000))
    assert without_connections(state).queues == frozenset()


def test_a_plan_builds_queues_before_the_table_and_removes_them_after_it() -> None:
    q = queue_for("wan1", 95_000_000)
    table = NftTable(queues=(("wan1", 20),), masquerade=("wan1",))
    state = desired_state(config(), {}, wan_facts(3))
    built = diff(state, type(state)())
    kinds = [type(op.obj).__name__ for op in built]
    assert kinds.index("Queue") < kinds.index("NftTable")
    assert Op(OpKind.REPLACE, q) in built
    gone = diff(type(state)(), state)
    kinds = [type(op.obj).__name__ for op in gone]
    assert kinds.index("NftTable") < kinds.index("Queue")
    assert Op(OpKind.DELETE, table) not in gone  # (a different table: sanity of the test)
    # What the kernel reads back not intact is rebuilt; an equal one is left alone.
    have = after(type(state)(), Op(OpKind.REPLACE, replace(q, intact=False)))
    want = replace(have, queues=frozenset({q}))
    assert diff(want, have) == [Op(OpKind.REPLACE, q)]
    assert diff(want, want) == []


def test_the_commands_are_tc_with_exact_rates() -> None:
    q = Queue("wan1", rate=2_500_000, first=625_000, limit=125_000)
    assert op_command(Op(OpKind.REPLACE, q)).split(" && ") == [
        "tc qdisc replace dev wan1 root handle ec: htb default 20",
        "tc class replace dev wan1 parent ec: classid ec:1 htb"
        " rate 2500000bps ceil 2500000bps prio 0",
        "tc class replace dev wan1 parent ec:1 classid ec:10 htb"
        " rate 625000bps ceil 2500000bps prio 0",
        "tc class replace dev wan1 parent ec:1 classid ec:20 htb"
        " rate 1875000bps ceil 2500000bps prio 1",
        "tc qdisc replace dev wan1 parent ec:10 handle ed: pfifo limit 1000",
        "tc qdisc replace dev wan1 parent ec:20 handle ee: bfifo limit 125000",
    ]
    assert op_command(Op(OpKind.DELETE, q)) == "tc qdisc del dev wan1 root handle ec:"


def test_exports_say_the_queues_are_left_out() -> None:
    notes = "\n".join(daemon_notes(config()))
    assert "isp-a, isp-b: the egress queue (`queue`)" in notes
    plain = CONFIG.replace("    queue:\n      rate: 95Mbit\n", "").replace(
        "    queue: {rate: 19Mbit, first_bytes: 8kB}\n", ""
    )
    assert "queue" not in "\n".join(daemon_notes(config(plain)))


def test_someone_elses_root_qdisc_is_a_conflict_at_the_queues_line() -> None:
    c = config()
    facts = replace(wan_facts(3), foreign_qdiscs={"wan2": "cake 8001:", "wan3": "tbf 1:"})
    issues = [str(i) for i in check_against_kernel(c, facts)]
    # wan3 has no `queue`: its qdisc is none of ecmpd's business.
    assert issues == [
        "ecmpd.yaml:10: uplinks[1].queue: wan2 has a root qdisc ecmpd does not own"
        " (cake 8001:): remove it (tc qdisc del dev wan2 root) or drop `queue` here"
    ]
    assert [str(i) for i in queue_conflicts(c, facts)] == issues
    assert check_against_kernel(c, facts, queues=False) == []

"""ecmpd.ending's pure choices: which uplinks' connections end, with which mark."""

from __future__ import annotations

import textwrap
from collections.abc import Collection
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network

from ecmpd.config import parse_config
from ecmpd.connections import removed, renamed, resetting_pins
from ecmpd.ending import EndingWatch, ending_now
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.kernel.resets import Ending
from ecmpd.model import ALL_PORTS, DesiredState, Family, NftTable, PinReset

CONFIG_TEXT = textwrap.dedent("""
    mode: router
    uplinks:
      - {name: a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
      - {name: b, interface: wan-b, gateway: 10.2.0.1}
      - {name: c, interface: wan-c, gateway: 10.3.0.1, on_failure: wait}
    """)
CONFIG = parse_config(CONFIG_TEXT, "ecmpd.yaml")
FACTS = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a", 2, addresses=(ip_interface("10.1.0.2/24"), ip_interface("2001:db8:1::2/64"))
        ),
        "wan-b": InterfaceFacts("wan-b", 3, addresses=(ip_interface("10.2.0.2/24"),)),
        "wan-c": InterfaceFacts("wan-c", 4, addresses=(ip_interface("10.3.0.2/24"),)),
    },
    mark_slots=(("a", 7),),  # recorded: a keeps 7 although its table is 101
)
V4, V6 = Family.INET, Family.INET6
# The kernel's table resets every uplink's value (the usual case: what health says).
ALL = {V4: range(1 << 32), V6: range(1 << 32)}
NO_PINS: dict[Family, frozenset[PinReset]] = {}  # the kernel's table resets no pin


def test_ending_now_leaves_drained_and_waiting_uplinks_alone() -> None:
    service = {V4: {"a": False, "b": False, "c": False}, V6: {"a": True, "b": True, "c": True}}
    assert ending_now(CONFIG, service, drained={"b"}) == {V4: {"a"}, V6: set()}


def in_service(down4: set[str], down6: Collection[str] = ()) -> dict[Family, dict[str, bool]]:
    return {
        V4: {n: n not in down4 for n in "abc"},
        V6: {n: n not in down6 for n in "abc"},
    }


def test_endings_carry_the_recorded_mark_and_the_families_that_entered_the_reset_set() -> None:
    watch = EndingWatch()
    assert watch.after(CONFIG, in_service(set()), (), FACTS, ALL, NO_PINS) == []
    # b is drained, c waits: only a ends (both families); a rejoin ends nothing.
    got = dict(watch.after(CONFIG, in_service({"a", "b", "c"}, {"a"}), {"b"}, FACTS, ALL, NO_PINS))
    assert set(got) == {"a"}
    a = got["a"]
    assert (a.mark, a.mask, a.probe_mark) == (0x07000000, 0xFF000000, 0xFF000000)
    assert a.families == (V4, V6)
    assert a.sources == (IPv4Address("10.1.0.2"), IPv6Address("2001:db8:1::2"))
    # Its link's prefixes and gateways: the router's sockets to a neighbour there stay.
    assert a.on_link == tuple(
        ip_network(n)
        for n in ("10.1.0.0/24", "10.1.0.1/32", "2001:db8:1::/64", "2001:db8:1::1/128")
    )
    # Still down: nothing new. b undrained while down: its connections end now.
    assert watch.after(CONFIG, in_service({"a", "b", "c"}, {"a"}), {"b"}, FACTS, ALL, NO_PINS) == []
    assert [
        n
        for n, _ in watch.after(CONFIG, in_service({"a", "b", "c"}, {"a"}), (), FACTS, ALL, NO_PINS)
    ] == ["b"]
    # a back and down again: it ends again.
    assert watch.after(CONFIG, in_service({"b", "c"}), (), FACTS, ALL, NO_PINS) == []
    assert [
        n for n, _ in watch.after(CONFIG, in_service({"a", "b", "c"}), (), FACTS, ALL, NO_PINS)
    ] == ["a"]


def test_a_family_ends_only_once_the_kernels_table_resets_it() -> None:
    """a's IPv6 verdict came after the reconcile computed its state (its table resets only
    IPv4): probing IPv6 now would elicit answers the table lets through. It ends with the
    reconcile that puts it in the IPv6 reset set."""
    watch = EndingWatch()
    down = in_service({"a"}, {"a"})
    only4 = {V4: {0x07000000}, V6: set()}
    ((name, first),) = watch.after(CONFIG, down, (), FACTS, only4, NO_PINS)
    assert (name, first.families) == ("a", (V4,))
    assert watch.after(CONFIG, down, (), FACTS, only4, NO_PINS) == []
    both = {V4: {0x07000000}, V6: {0x07000000}}
    ((name, second),) = watch.after(CONFIG, down, (), FACTS, both, NO_PINS)
    assert (name, second.families) == ("a", (V6,))
    assert watch.after(CONFIG, down, (), FACTS, both, NO_PINS) == []


RENAMED = parse_config(
    textwrap.dedent("""
    mode: router
    uplinks:
      - {name: a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1", table: 150}
      - {name: bee, interface: wan-b, gateway: 10.2.0.1}
    """),
    "ecmpd.yaml",
)


def test_a_reload_renames_or_removes_uplinks() -> None:
    assert renamed(CONFIG, RENAMED) == {"bee": "b"}
    assert removed(CONFIG, RENAMED) == ["c"]
    assert removed(RENAMED, CONFIG) == [] and renamed(RENAMED, CONFIG) == {"b": "bee"}
    two_on_one = RENAMED.model_copy(
        update={"uplinks": [*RENAMED.uplinks, CONFIG.uplink("b").model_copy(update={"name": "x"})]}
    )
    assert renamed(CONFIG, two_on_one) == {}  # two new names on wan-b: which one? neither
    assert removed(CONFIG, two_on_one) == ["b", "c"]  # so b counts as removed


def test_a_removed_uplink_resetting_its_connections_joins_the_reset_sets_once() -> None:
    resetting = parse_config(CONFIG_TEXT.replace("on_failure: wait", "on_failure: reset"), "x")
    watch = EndingWatch()
    facts = replace(FACTS, mark_slots=(("a", 7), ("b", 2), ("c", 3)))
    watch.reload(CONFIG, RENAMED, facts)
    assert watch.retiring == []  # c removed, but it waits (on_failure: wait)
    watch.reload(resetting, RENAMED, facts)
    ((name, ending),) = watch.retiring
    assert (name, ending.mark, ending.families) == ("c", 0x03000000, (V4,))
    table = NftTable(mask=0xFF000000, reset4=(0x07000000,))
    state = watch.desired(DesiredState(nft=frozenset({table})))
    assert state.nft == {replace(table, reset4=(0x03000000, 0x07000000))}
    assert [n for n, _ in watch.after(RENAMED, in_service(set()), (), facts, ALL, NO_PINS)] == ["c"]
    assert watch.desired(DesiredState(nft=frozenset({table}))).nft == {table}  # once


ANY4 = ip_network("0.0.0.0/0")
ON_B = PinReset(ip_network("10.200.1.5/32"), ANY4, ALL_PORTS, ALL_PORTS, 0x02000000)
PINNED = NftTable(mask=0xFF000000, pins4=(ON_B,))


def pin_endings(watch: EndingWatch, *tables: NftTable) -> list[tuple[str, Ending]]:
    """watch.after with the kernel holding these tables (none: no table), nobody down."""
    facts = replace(FACTS, mark_slots=(("a", 1), ("b", 2), ("c", 3)))
    pins = resetting_pins(DesiredState(nft=frozenset(tables)))
    return watch.after(CONFIG, in_service(set()), (), facts, ALL, pins)


def test_a_pins_resets_end_its_connections_once_when_they_enter_the_table() -> None:
    watch = EndingWatch()
    ((name, ending),) = pin_endings(watch, PINNED)
    assert (name, ending.mark, ending.families, ending.only) == ("b", 0x02000000, (V4,), (ON_B,))
    assert ending.sources == ()  # the router's own sockets are not the pin's
    assert pin_endings(watch, PINNED) == []  # already resetting
    assert pin_endings(watch, replace(PINNED, pins4=())) == []
    assert [n for n, _ in pin_endings(watch, PINNED)] == ["b"]  # the pin's choice back again


def test_pins_end_again_when_they_return_after_a_state_without_the_table() -> None:
    """The pins come from the table the kernel holds: none without it (before, the last
    table's pins stayed recorded, so the same pins returning ended nothing)."""
    watch = EndingWatch()
    assert [n for n, _ in pin_endings(watch, PINNED)] == ["b"]
    assert pin_endings(watch) == []  # no table: no pin resets
    assert [n for n, _ in pin_endings(watch, PINNED)] == ["b"]

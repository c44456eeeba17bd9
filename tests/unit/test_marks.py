"""ecmpd.marks: the owned bit range, slots per uplink, and clashes with foreign uses."""

from __future__ import annotations

import textwrap

import pytest

from ecmpd.config import ConfigError, check_against_kernel, parse_config
from ecmpd.facts import KernelFacts
from ecmpd.marks import (
    DEFAULT_MASK,
    FULL,
    MarkSpace,
    MarkUse,
    assign_slots,
    clashes,
    mask_problem,
)


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        (0xFF000000, None),
        (0x3, None),
        (0xFFFFFFFF, None),
        (0, "must name some"),
        (0x1 << 32, "must name some"),
        (0x01000000, "has 1 bit"),
        (0xFF00FF00, "not one contiguous"),
        (0x5, "not one contiguous"),
    ],
)
def test_mask_problem(mask: int, problem: str | None) -> None:
    got = mask_problem(mask)
    assert got is None if problem is None else (got is not None and problem in got)


def test_mark_space_values() -> None:
    space = MarkSpace(DEFAULT_MASK)
    assert (space.shift, space.probe_slot, space.max_uplinks) == (24, 255, 254)
    assert space.value(101) == 0x65000000 and space.slot(0x65ABCDEF) == 101
    assert space.probe == 0xFF000000
    for bad in (0, 255, 256):
        with pytest.raises(ValueError):
            space.value(bad)
    with pytest.raises(ValueError):
        MarkSpace(0x5)


def test_slots_prefer_the_record_then_the_table_then_the_lowest_free() -> None:
    space = MarkSpace(0xF0)  # slots 1..14
    uplinks = [("a", 101), ("b", 3), ("c", 5), ("d", 3)]
    # a: table 101 does not fit -> lowest free (1); b: its table; c: recorded; d: 3 is taken.
    assert assign_slots(uplinks, {"c": 9}, space) == {"a": 1, "b": 3, "c": 9, "d": 2}
    # Same inputs, same answer; the record wins over a table id that now collides.
    assert assign_slots(uplinks, {"c": 9, "a": 3}, space) == {"a": 3, "b": 1, "c": 9, "d": 2}


def test_slots_of_removed_uplinks_are_not_reused_at_once() -> None:
    space = MarkSpace(0x30)  # slots 1, 2
    assert assign_slots([("new", 1)], {"gone": 1}, space) == {"new": 2}
    # A full range takes a retired slot rather than failing.
    assert assign_slots([("x", 0), ("y", 0)], {"gone": 1}, space) == {"x": 2, "y": 1}


def test_a_recorded_slot_outside_a_narrower_range_is_dropped() -> None:
    assert assign_slots([("a", 2)], {"a": 200}, MarkSpace(0x30)) == {"a": 2}


@pytest.mark.parametrize(
    ("use", "clash"),
    [
        (MarkUse("x", FULL, 0xCA6C), False),  # wg-quick's exact test
        (MarkUse("x", FULL, 0x01000000), True),  # tests for one of ours set
        (MarkUse("x", 0x00FF0000, 0x40000), False),  # tailscale
        (MarkUse("x", 0x0F000000, 0), True),  # a partial mask over ours
        (MarkUse("x", FULL, writes=True), True),  # `meta mark set 0x1`
        (MarkUse("x", 0x4000, writes=True), False),  # kube-proxy's or-mark
    ],
)
def test_clashes(use: MarkUse, clash: bool) -> None:
    assert clashes(use, DEFAULT_MASK) is clash


BASE = "uplinks:\n  - {name: a, interface: eth0, gateway: 10.0.0.1}\n"


def errors(yaml_text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")
    return [str(i) for i in caught.value.issues]


def test_config_errors_name_the_field() -> None:
    assert errors("connections: {mark: 0x00ff00ff}\n" + BASE) == [
        "ecmpd.yaml:1: connections.mark: 0x00ff00ff is not one contiguous range of bits"
        " (like 0xff000000)"
    ]
    three = BASE + "  - {name: b, interface: eth1}\n  - {name: c, interface: eth2}\n"
    assert errors("connections: {mark: 0x3}\n" + three) == [
        "ecmpd.yaml:1: connections.mark: 0x00000003 has room for 2 uplinks, the config has 3"
        " (give it more bits)"
    ]
    rule = "rules:\n  - {name: r, action: main, fwmark: 0x01000000/0x0f000000}\n"
    assert errors(BASE + rule) == [
        "ecmpd.yaml:4: rules[0].fwmark: tests bits of connections.mark (0xff000000),"
        " which ecmpd sets itself"
    ]
    assert parse_config("connections: {mark: 0xff00}\n" + BASE + rule).connections.mark == 0xFF00


def test_foreign_uses_of_the_bits_are_kernel_conflicts() -> None:
    config = parse_config(BASE, "ecmpd.yaml")
    facts = KernelFacts(
        foreign_mark_uses=(
            MarkUse("ip rule 5000", FULL, 0xCA6C),
            MarkUse("nft table ip fw chain pre", FULL, writes=True),
        )
    )
    issues = [str(i) for i in check_against_kernel(config, facts) if "mark" in i.field]
    assert issues == [
        "ecmpd.yaml: connections.mark: nft table ip fw chain pre sets mark bits 0xff000000,"
        " which ecmpd owns"
    ]

"""render_table's nft JSON and parse_table's reading of `nft -j list table` (pure)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from ipaddress import ip_network
from typing import Any

import pytest

from ecmpd.kernel.nftdoc import KICK_ACK, parse_table, render_table
from ecmpd.kernel.nftuses import mark_uses
from ecmpd.marks import FULL, MarkUse
from ecmpd.model import ALL_PORTS, NftTable, PinReset, PortRange

TABLE = {"family": "inet", "name": "ecmpd"}
M = 0xFF000000
A, B = 0x65000000, 0x66000000
FULL_TABLE = NftTable(
    mask=M,
    marks=(("wan-a", A), ("wan-b", B)),
    reset4=(A,),
    reset6=(A, B),
    masquerade=("wan-a", "wan-b"),
)
PIN4 = PinReset(ip_network("10.200.1.5/32"), ip_network("0.0.0.0/0"), ALL_PORTS, ALL_PORTS, B)
PIN4_WEB = PinReset(
    ip_network("10.200.1.0/24"), ip_network("198.51.100.0/24"), ALL_PORTS, PortRange(443, 443), A
)
PIN6 = PinReset(
    ip_network("2001:db8:200::/64"), ip_network("::/0"), PortRange(1000, 2000), ALL_PORTS, B
)
PINNED = NftTable(mask=M, marks=(("wan-a", A), ("wan-b", B)), pins4=(PIN4_WEB, PIN4), pins6=(PIN6,))


def chains(table: NftTable) -> dict[str, dict[str, Any]]:
    commands = render_table(table)["nftables"][3:]
    return {c["add"]["chain"]["name"]: c["add"]["chain"] for c in commands if "chain" in c["add"]}


def rules(table: NftTable, chain: str) -> list[str]:
    commands = render_table(table)["nftables"][3:]
    return [
        json.dumps(c["add"]["rule"]["expr"])
        for c in commands
        if "rule" in c["add"] and c["add"]["rule"]["chain"] == chain
    ]


def test_render_is_one_replace_transaction() -> None:
    commands = render_table(FULL_TABLE)["nftables"]
    assert commands[:3] == [
        {"add": {"table": TABLE}},
        {"delete": {"table": TABLE}},
        {"add": {"table": TABLE}},
    ]
    kinds = [next(iter(c["add"])) for c in commands[3:]]
    # Every chain exists before the first rule: vmaps jump to the per-value chains.
    assert kinds == sorted(kinds, key=lambda k: k == "rule")


def test_base_chains_hook_where_marks_must_be_read_and_written() -> None:
    hooked = {
        name: (c["type"], c["hook"], c["prio"])
        for name, c in chains(FULL_TABLE).items()
        if "hook" in c
    }
    assert hooked == {
        "probe": ("filter", "output", -300),
        "conn_in": ("filter", "prerouting", -150),
        "conn_local": ("route", "output", -150),
        "conn_out": ("filter", "postrouting", -150),
        "conn_reset": ("filter", "forward", 0),
        "nat": ("nat", "postrouting", 100),
    }
    assert {"ct_65000000", "ct_66000000", "mark_65000000", "mark_66000000"} <= set(
        chains(FULL_TABLE)
    )
    assert {"reset_ipv4", "reset_ipv6"} <= set(chains(FULL_TABLE))


def test_only_ecmpd_bits_are_written() -> None:
    # ct mark = ct mark & (~M | A) | A: every bit outside M is kept.
    keep = (~M & FULL) | A
    ct = {"ct": {"key": "mark"}}
    meta = {"meta": {"key": "mark"}}
    assert rules(FULL_TABLE, "ct_65000000") == [
        json.dumps([{"mangle": {"key": ct, "value": {"|": [{"&": [ct, keep]}, A]}}}])
    ]
    assert rules(FULL_TABLE, "mark_65000000") == [
        json.dumps([{"mangle": {"key": meta, "value": {"|": [{"&": [meta, keep]}, A]}}}])
    ]


def test_local_packets_restore_only_in_the_original_direction() -> None:
    # A reset the kernel sends for the reject rule is attached to the connection in the
    # reply direction: restoring its mark would route it out of the uplink.
    (local,) = rules(FULL_TABLE, "conn_local")
    assert '"direction"}}, "right": "original"' in local


def test_resets_per_family() -> None:
    (v4,) = rules(FULL_TABLE, "reset_ipv4")
    (v6,) = rules(FULL_TABLE, "reset_ipv6")
    assert f'"right": {{"set": [{A}]}}' in v4 and '"tcp reset"' in v4
    assert f'"right": {{"set": [{A}, {B}]}}' in v6
    # A kicked client's RST (no conntrack entry, KICK_ACK as its sequence) never leaves.
    _, kick, _ = rules(FULL_TABLE, "conn_reset")
    assert '"invalid"' in kick and f'"right": {KICK_ACK}' in kick and '"drop"' in kick
    no_reset = NftTable(mask=M, marks=(("wan-a", A),))
    assert "conn_reset" not in chains(no_reset)


def test_nat_only_table() -> None:
    assert set(chains(NftTable(masquerade=("wan-a",)))) == {"nat"}
    (rule,) = rules(NftTable(masquerade=("wan-a",)), "nat")
    assert '"nfproto"}}, "right": "ipv4"' in rule


@pytest.mark.parametrize(
    "table",
    [
        NftTable(masquerade=("",)),
        NftTable(masquerade=("a-very-long-ifname",)),  # 18 bytes > IFNAMSIZ - 1
        NftTable(masquerade=("wan*",)),  # nft would read a wildcard
        NftTable(masquerade=('wan"a',)),
        NftTable(masquerade=("wan-a", "wan-a")),
        NftTable(mask=M, marks=(("wan-a", A), ("wan-b", A))),
        NftTable(mask=M, marks=(("wan-a", 0x00650000),)),  # outside the mask
        NftTable(mask=M, marks=(("wan-a", M),)),  # the probe mark
        NftTable(marks=(("wan-a", A),)),  # no mask
        NftTable(mask=M, marks=(("wan-a", A),), reset4=(0x1,)),
        NftTable(mask=M, marks=(("wan-a", A),), pins4=(replace(PIN4, mark=0x1),)),
        NftTable(mask=M, marks=(("wan-a", A),), pins4=(PIN6,)),  # the wrong family
    ],
)
def test_bad_tables_are_refused(table: NftTable) -> None:
    with pytest.raises(ValueError):
        render_table(table)


def as_nft_lists(node: Any) -> Any:
    """What nft 1.0.6 prints instead: one-element sets bare, prefix masks as prefixes."""
    if isinstance(node, list):
        return [as_nft_lists(n) for n in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"set"} and len(node["set"]) == 1:
        return as_nft_lists(node["set"][0])
    if set(node) == {"match"}:
        left, right = node["match"]["left"], node["match"]["right"]
        if isinstance(left, dict) and "&" in left and isinstance(right, int):
            mask = left["&"][1]
            length = bin(mask).count("1")
            if mask == (FULL << (32 - length)) & FULL:
                prefix = {"prefix": {"addr": right, "len": length}}
                return {"match": {"op": "==", "left": left["&"][0], "right": prefix}}
    return {k: as_nft_lists(v) for k, v in node.items()}


def listed(table: NftTable, reorder: bool = False) -> dict[str, Any]:
    """What `nft -j list table inet ecmpd` prints after apply_table(table)."""
    out: list[dict[str, Any]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {**TABLE, "handle": 7}},
    ]
    commands = render_table(table)["nftables"][3:]
    if reorder:  # the chains in another order (rules keep theirs: it is their meaning)
        chain_count = sum("chain" in c["add"] for c in commands)
        commands = commands[:chain_count][::-1] + commands[chain_count:]
    for handle, command in enumerate(commands, start=1):
        kind, body = next(iter(command["add"].items()))
        out.append({kind: {**as_nft_lists(body), "handle": handle}})
    return {"nftables": out}


@pytest.mark.parametrize(
    "table",
    [
        FULL_TABLE,
        NftTable(masquerade=("wan-a",)),
        NftTable(mask=M, marks=(("wan-a", A),)),
        NftTable(mask=0x0000FF00, marks=(("wan-a", 0x100), ("x", 0x200)), reset6=(0x200,)),
        NftTable(mask=0x00000300, marks=(("wan-a", 0x100),), reset4=(0x100,)),
        PINNED,
        replace(FULL_TABLE, pins4=(PIN4,)),
    ],
)
def test_parse_reads_back_what_render_wrote(table: NftTable) -> None:
    assert parse_table(listed(table)) == table
    assert parse_table(listed(table, reorder=True)) == table


def test_parse_gives_none_for_anything_ecmpd_never_writes() -> None:
    base = listed(FULL_TABLE)
    items = base["nftables"]
    rule_at = next(i for i, it in enumerate(items) if "rule" in it)
    variants = []
    foreign_rule = copy.deepcopy(base)
    foreign_rule["nftables"][rule_at]["rule"]["expr"][-1] = {"accept": None}
    variants.append(foreign_rule)
    other_chain = copy.deepcopy(base)
    other_chain["nftables"].append({"chain": {"name": "extra", "family": "inet"}})
    variants.append(other_chain)
    moved = copy.deepcopy(base)
    chain_at = next(i for i, it in enumerate(items) if it.get("chain", {}).get("name") == "conn_in")
    moved["nftables"][chain_at]["chain"]["prio"] = 50
    variants.append(moved)
    no_chain = copy.deepcopy(base)
    del no_chain["nftables"][chain_at]
    variants.append(no_chain)
    a_set = copy.deepcopy(base)
    a_set["nftables"].append({"set": {"name": "s", "family": "inet"}})
    variants.append(a_set)
    extra_rule = copy.deepcopy(base)
    extra_rule["nftables"].append(copy.deepcopy(items[rule_at]))
    variants.append(extra_rule)
    for doc in variants:
        assert parse_table(doc) is None


def foreign(*exprs: list[Any]) -> dict[str, Any]:
    body = {"family": "ip", "table": "fw", "chain": "c"}
    ours = {"family": "inet", "table": "ecmpd", "chain": "conn_in", "expr": [{"drop": None}]}
    return {"nftables": [{"rule": {**body, "expr": e}} for e in exprs] + [{"rule": ours}]}


def test_mark_uses_of_foreign_rules() -> None:
    meta = {"meta": {"key": "mark"}}
    ct = {"ct": {"key": "mark"}}
    doc = foreign(
        [{"match": {"op": "==", "left": meta, "right": 0xCA6C}}],  # wg-quick: exact test
        [{"match": {"op": "==", "left": {"&": [meta, 0xFF00]}, "right": 0x100}}],
        [{"match": {"op": "==", "left": ct, "right": {"prefix": {"addr": 0x4000000, "len": 8}}}}],
        [{"mangle": {"key": meta, "value": ct}}],  # a whole-mark copy: carries ours along
        [{"mangle": {"key": ct, "value": 5}}],
        [{"mangle": {"key": meta, "value": {"|": [meta, 0x4000]}}}],
        [{"mangle": {"key": meta, "value": {"|": [{"&": [meta, 0xFFFF00FF]}, 0x100]}}}],
        [{"vmap": {"key": {"&": [ct, 0xF0]}, "data": {"set": []}}}],
    )
    where = "nft table ip fw chain c"
    assert mark_uses(doc) == [
        MarkUse(where, FULL, 0xCA6C),
        MarkUse(where, 0xFF00, 0x100),
        MarkUse(where, 0xFF000000, 0x4000000),
        MarkUse(where, FULL, writes=True),
        MarkUse(where, 0x4000, writes=True),
        MarkUse(where, 0xFF00, writes=True),
        MarkUse(where, 0xF0, FULL),
    ]


def test_a_pins_resets_are_a_set_keyed_by_its_match_and_the_uplinks_mark() -> None:
    commands = render_table(PINNED)["nftables"]
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in commands[3:] if "set" in c["add"]}
    assert sets["pins4"]["type"] == [
        "ipv4_addr",
        "ipv4_addr",
        "inet_service",
        "inet_service",
        "mark",
    ]
    assert sets["pins4"]["flags"] == ["interval"]
    # As nft lists them: a host bare, a one-port range as the port.
    assert sets["pins4"]["elem"][1]["concat"] == [
        "10.200.1.5",
        {"prefix": {"addr": "0.0.0.0", "len": 0}},
        {"range": [0, 65535]},
        {"range": [0, 65535]},
        B,
    ]
    assert sets["pins4"]["elem"][0]["concat"][3] == 443
    (v4,) = rules(PINNED, "reset_ipv4")
    assert '"@pins4"' in v4 and '"tcp reset"' in v4 and f"{M}" in v4
    (v6,) = rules(PINNED, "reset_ipv6")
    assert '"@pins6"' in v6 and '"ip6"' in v6
    # The set is made before the rule that names it.
    kinds = [next(iter(c["add"])) for c in commands[3:]]
    assert kinds.index("set") < kinds.index("rule")

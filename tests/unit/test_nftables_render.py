"""render_table's nft JSON (golden) and parse_table's reading of `nft -j list table`."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address
from typing import Any

import pytest

from ecmpd.kernel.nftables import NatPlan, parse_table, render_table

TABLE = {"family": "inet", "name": "ecmpd"}
NFPROTO_V4 = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}


def oifname(name: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}}


def rule(*expr: dict[str, Any]) -> dict[str, Any]:
    return {"family": "inet", "table": "ecmpd", "chain": "postrouting", "expr": list(expr)}


def test_render_is_one_replace_transaction_with_one_rule_per_oif() -> None:
    plan = NatPlan(masquerade=("wan-b", "wan-a"), snat=(("wan-c", IPv4Address("10.3.0.2")),))
    assert render_table(plan) == {
        "nftables": [
            {"add": {"table": TABLE}},
            {"delete": {"table": TABLE}},
            {"add": {"table": TABLE}},
            {
                "add": {
                    "chain": {
                        "family": "inet",
                        "table": "ecmpd",
                        "name": "postrouting",
                        "type": "nat",
                        "hook": "postrouting",
                        "prio": 100,
                        "policy": "accept",
                    }
                }
            },
            {"add": {"rule": rule(NFPROTO_V4, oifname("wan-a"), {"masquerade": None})}},
            {"add": {"rule": rule(NFPROTO_V4, oifname("wan-b"), {"masquerade": None})}},
            {
                "add": {
                    "rule": rule(
                        NFPROTO_V4,
                        oifname("wan-c"),
                        {"snat": {"family": "ip", "addr": "10.3.0.2"}},
                    )
                }
            },
        ]
    }


def test_an_empty_plan_renders_an_empty_chain() -> None:
    commands = render_table(NatPlan(masquerade=()))["nftables"]
    assert [next(iter(c["add" if "add" in c else "delete"])) for c in commands] == [
        "table",
        "table",
        "table",
        "chain",
    ]


def test_plans_are_normalised_so_equal_plans_compare_equal() -> None:
    a = NatPlan(masquerade=("wan-b", "wan-a"), snat=(("x", IPv4Address("1.2.3.4")),))
    b = NatPlan(masquerade=("wan-a", "wan-b"), snat=(("x", IPv4Address("1.2.3.4")),))
    assert a == b
    assert a.masquerade == ("wan-a", "wan-b")


@pytest.mark.parametrize(
    "plan_kwargs",
    [
        {"masquerade": ("",)},
        {"masquerade": ("a-very-long-ifname",)},  # 18 bytes > IFNAMSIZ - 1
        {"masquerade": ("wan*",)},  # nft would read a wildcard
        {"masquerade": ('wan"a',)},
        {"masquerade": ("wan-a", "wan-a")},
        {"masquerade": ("wan-a",), "snat": (("wan-a", IPv4Address("10.1.0.2")),)},
    ],
)
def test_bad_plans_are_refused(plan_kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NatPlan(**plan_kwargs)


def listed(plan: NatPlan) -> dict[str, Any]:
    """What `nft -j list table inet ecmpd` prints after apply_table(plan)."""
    out: list[dict[str, Any]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {**TABLE, "handle": 7}},
    ]
    for handle, command in enumerate(render_table(plan)["nftables"][3:], start=1):
        kind, body = next(iter(command["add"].items()))
        out.append({kind: {**body, "handle": handle}})
    return {"nftables": out}


def test_parse_reads_back_what_render_wrote() -> None:
    plan = NatPlan(masquerade=("wan-a", "wan-b"), snat=(("wan-c", IPv4Address("10.3.0.2")),))
    assert parse_table(listed(plan)) == plan
    assert parse_table(listed(NatPlan(masquerade=()))) == NatPlan(masquerade=())


def test_parse_gives_none_for_anything_ecmpd_never_writes() -> None:
    base = listed(NatPlan(masquerade=("wan-a",)))
    foreign_rule = copy.deepcopy(base)
    foreign_rule["nftables"][-1]["rule"]["expr"][-1] = {"accept": None}
    no_nfproto = copy.deepcopy(base)
    del no_nfproto["nftables"][-1]["rule"]["expr"][0]
    other_chain = copy.deepcopy(base)
    other_chain["nftables"].append({"chain": {"name": "extra", "family": "inet"}})
    moved_chain = copy.deepcopy(base)
    moved_chain["nftables"][2]["chain"]["prio"] = 50
    no_chain = copy.deepcopy(base)
    del no_chain["nftables"][2]
    a_set = copy.deepcopy(base)
    a_set["nftables"].append({"set": {"name": "s", "family": "inet"}})
    for doc in (foreign_rule, no_nfproto, other_chain, moved_chain, no_chain, a_set):
        assert parse_table(doc) is None

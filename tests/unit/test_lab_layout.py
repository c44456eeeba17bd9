"""The lab planned without the system: its addressing, its config, its shaping numbers."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from ecmpd.lab import netns
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import plan_lab, round_robin
from ecmpd.lab.shaping import MIN_BURST_BYTES, tbf_for


def test_tbf_burst_is_at_least_4ms_and_32k() -> None:
    assert tbf_for(50).burst_bytes == MIN_BURST_BYTES
    assert tbf_for(100).burst_bytes == 50_000
    assert tbf_for(200).burst_bytes == 100_000
    assert tbf_for(200).rate_bytes == 25_000_000
    with pytest.raises(ValueError):
        tbf_for(0)


def test_plan_follows_the_addressing_plan(tmp_path: Path) -> None:
    lab = plan_lab(isps=8, servers=4, lan=True, workdir=tmp_path, prefix="ecmpd-test-")
    assert [i.name for i in lab.isps] == [f"isp-{c}" for c in "abcdefgh"]
    assert [i.uplink_if for i in lab.isps][:2] == ["wan-a", "wan-b"]
    assert lab.isps[7].gateway == IPv4Address("10.8.0.1")
    assert lab.isps[7].address == IPv4Interface("10.8.0.2/24")
    # Default rates repeat: a..h = 100, 200, 50, 100, ...
    assert [i.rate_mbit for i in lab.isps][:4] == [100, 200, 50, 100]
    assert lab.servers == [IPv4Address(f"198.51.100.{k}") for k in range(1, 5)]
    assert lab.alt_servers[0] == IPv4Address("203.0.113.1")
    assert lab.ns("router") == "ecmpd-test-router"
    assert lab.ns("isp-c") == "ecmpd-test-isp-c"
    assert lab.ns("lan") == "ecmpd-test-lan"
    assert lab.config_path == tmp_path / "ecmpd.yaml"


def test_round_robin_takes_clients_and_servers_in_turn_from_the_offset(tmp_path: Path) -> None:
    assert round_robin("abc", "XY", 5) == [
        ("a", "X"),
        ("b", "Y"),
        ("c", "X"),
        ("a", "Y"),
        ("b", "X"),
    ]
    assert round_robin("abc", "XY", 3, offset=7) == [("b", "Y"), ("c", "X"), ("a", "Y")]
    assert round_robin("abc", "XY", 0) == []
    lab = plan_lab(isps=2, servers=3, lan=True, workdir=tmp_path, prefix="ecmpd-test-")
    lab.lan_clients.extend(IPv4Address(f"10.200.1.{k}") for k in (1, 2))
    assert lab.pairs(4, offset=1) == [
        (lab.lan_clients[1], lab.servers[1]),
        (lab.lan_clients[0], lab.servers[2]),
        (lab.lan_clients[1], lab.servers[0]),
        (lab.lan_clients[0], lab.servers[1]),
    ]


def test_plan_follows_the_ipv6_addressing_plan(tmp_path: Path) -> None:
    ipv4_only = plan_lab(workdir=tmp_path, ipv6=False)
    assert ipv4_only.servers6 == [] and {i.gateway6 for i in ipv4_only.isps} == {None}
    lab = plan_lab(isps=8, servers=4, workdir=tmp_path, prefix="ecmpd-test-")  # dual-stack
    assert lab.ipv6
    assert lab.isps[7].gateway6 == IPv6Address("2001:db8:8::1")
    assert lab.isps[7].address6 == IPv6Interface("2001:db8:8::2/64")
    assert lab.servers6 == [IPv6Address(f"2001:db8:100::{k}") for k in range(1, 5)]
    first = lab.isps[0]
    assert first.gateway6 is not None and first.address6 is not None
    # Documentation prefix only.
    every = [first.gateway6, first.address6.ip, *lab.servers6]
    assert all(a in IPv6Network("2001:db8::/32") for a in every)
    dual = lab_config(lab, ipv6=True, link_local=["isp-b"])
    assert [u.get("gateway6") for u in dual["uplinks"][:2]] == ["2001:db8:1::1", "fe80::1"]
    assert dual["uplinks"][1]["check"]["targets"] == [
        "10.2.0.1",
        "198.51.100.1",
        "fe80::1",
        "2001:db8:100::1",
    ]
    assert "gateway6" not in lab_config(lab)["uplinks"][0]  # the config's IPv6 is opt-in
    with pytest.raises(ValueError):
        lab_config(ipv4_only, ipv6=True)


def test_plan_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plan_lab(isps=9, workdir=tmp_path)
    with pytest.raises(ValueError):
        plan_lab(isps=2, weights=[1, 2, 3], workdir=tmp_path)
    with pytest.raises(ValueError):
        plan_lab(workdir=tmp_path, prefix="Bad Prefix/")
    with pytest.raises(KeyError):
        plan_lab(workdir=tmp_path).ns("lan")


def test_lab_config_is_a_pure_function_of_the_lab(tmp_path: Path) -> None:
    lab = plan_lab(workdir=tmp_path, prefix="ecmpd-test-")
    config = lab_config(lab)
    assert config == lab_config(lab)
    assert config["mode"] == "host"
    assert [u["name"] for u in config["uplinks"]] == ["isp-a", "isp-b", "isp-c"]
    assert [u["interface"] for u in config["uplinks"]] == ["wan-a", "wan-b", "wan-c"]
    assert [u["weight"] for u in config["uplinks"]] == [2, 4, 1]
    assert [u["table"] for u in config["uplinks"]] == [101, 102, 103]
    assert config["uplinks"][1]["gateway"] == "10.2.0.1"
    assert config["uplinks"][1]["source"] == "10.2.0.2"
    assert config["uplinks"][1]["check"]["targets"] == ["10.2.0.1", "198.51.100.1"]
    assert [r["action"] for r in config["rules"]] == ["bypass", "balance"]
    merged = lab_config(lab, extra={"balancer": {"group": "hash-threshold"}, "hash": "l3"})
    assert merged["balancer"] == {"group": "hash-threshold"}
    assert merged["hash"] == "l3"
    assert lab_config(plan_lab(workdir=tmp_path, lan=True))["mode"] == "router"


def test_run_in_refuses_a_shell_string() -> None:
    with pytest.raises(TypeError):
        netns.run_in("x", "ip link")

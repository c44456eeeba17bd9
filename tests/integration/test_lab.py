"""The namespace lab: topology, shaping, failures, cleanup, state and config."""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import ISP_CORE_IF, ISP_CUSTOMER_IF, LAN_IF, Lab
from ecmpd.lab.shaping import tbf_for
from ecmpd.lab.topology import (
    add_lan_clients,
    build_lab,
    destroy_lab,
    isp_link_down,
    isp_link_up,
    load_lab,
    save_lab,
)
from ecmpd.lab.wait import wait_until

LabFactory = Callable[..., Lab]

# --- helpers ---------------------------------------------------------------


def _json(ns: str, argv: list[str]) -> Any:
    """Runs a command with JSON output (ip -j, tc -j) inside a namespace."""
    out = netns.run_in(ns, argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _link(ns: str, ifname: str) -> dict[str, Any]:
    """Returns `ip -j -s link show` of one interface."""
    found: list[dict[str, Any]] = _json(ns, ["ip", "-j", "-s", "link", "show", "dev", ifname])
    return found[0]


def _rx_packets(ns: str, ifname: str) -> int:
    """Returns the received-packets counter of an interface."""
    return int(_link(ns, ifname)["stats64"]["rx"]["packets"])


def _icmp_echo(ident: int, seq: int) -> bytes:
    """Returns an ICMP echo request with a valid checksum."""
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"ecmpd-lab-ping"
    data = header + payload
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    return header[:2] + struct.pack("!H", checksum) + header[4:] + payload


def ping(ns: str, dst: IPv4Address, *, count: int = 3, timeout: float = 2.0) -> int:
    """Sends ICMP echoes from a namespace (this VM has no ping binary); returns replies."""
    ident = random.getrandbits(16)
    with netns.socket_in(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(count):
            sock.sendto(_icmp_echo(ident, seq), (str(dst), 0))
        replies: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(replies) < count and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (src, _) = sock.recvfrom(2048)
            except TimeoutError:
                break
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == 0 and rid == ident and src == str(dst):
                replies.add(seq)
    return len(replies)


def _our_namespaces(prefix: str) -> list[str]:
    """Lists namespaces with the prefix, as `ip netns list` sees them."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(prefix)]


def _wait_for(check: Any, timeout: float = 3.0) -> bool:
    """Polls check() until it is true (True) or timeout passes (False)."""
    try:
        wait_until(check, timeout, "the lab", 0.02)
    except TimeoutError:
        return False
    return True


# --- pure: no root needed ----------------------------------------------------


# --- real kernel ---------------------------------------------------------------


def test_every_namespace_exists_with_its_addresses(lab: Lab) -> None:
    assert sorted(_our_namespaces(lab.prefix)) == sorted(lab.namespaces())
    addrs = _json(lab.router, ["ip", "-j", "addr", "show"])
    have = {(a["ifname"], f"{i['local']}/{i['prefixlen']}") for a in addrs for i in a["addr_info"]}
    for isp in lab.isps:
        # Dual-stack by default; the IPv6 address usable at once (no DAD pending).
        assert {(isp.uplink_if, str(isp.address)), (isp.uplink_if, str(isp.address6))} <= have
        assert _link(lab.router, isp.uplink_if)["operstate"] == "UP"
    assert not [i for a in addrs for i in a["addr_info"] if i.get("tentative")]
    # The default route is ecmpd's to install, never the lab's.
    assert _json(lab.router, ["ip", "-j", "route", "show", "default"]) == []
    assert _json(lab.router, ["ip", "-j", "-6", "route", "show", "default"]) == []
    assert netns.read_sysctl(lab.internet, "net.ipv4.ip_forward") == "1"
    assert netns.read_sysctl(lab.isps[0].ns, "net.ipv4.conf.all.rp_filter") == "2"


def test_ping_a_server_through_each_isp_in_turn(lab: Lab) -> None:
    server = lab.servers[0]
    count = 20
    for isp in lab.isps:
        netns.run_in(
            lab.router,
            ["ip", "route", "replace", str(server), "via", str(isp.gateway)],
            check=True,
        )
        before = {i.uplink_if: _rx_packets(lab.router, i.uplink_if) for i in lab.isps}
        assert ping(lab.router, server, count=count) == count, f"no replies via {isp.name}"
        after = {i.uplink_if: _rx_packets(lab.router, i.uplink_if) for i in lab.isps}
        # Replies come back the way the requests went (the ISP does not NAT and
        # the internet routes the customer prefix back through it). A few
        # packets of IPv6 neighbour discovery may land anywhere.
        for other in lab.isps:
            delta = after[other.uplink_if] - before[other.uplink_if]
            if other == isp:
                assert delta >= count
            else:
                assert delta < count // 2, f"replies via {other.name} while using {isp.name}"


def test_tbf_shapes_both_directions_at_the_isp_rate(lab: Lab) -> None:
    for isp in lab.isps:
        want = tbf_for(isp.rate_mbit)
        # On the ISP's side, as a modem's queue: the router's interface is left alone.
        router_side = _json(lab.router, ["tc", "-j", "qdisc", "show", "dev", isp.uplink_if])
        assert all(q["kind"] != "tbf" for q in router_side)
        for ns, ifname in ((isp.ns, ISP_CORE_IF), (isp.ns, ISP_CUSTOMER_IF)):
            qdiscs = _json(ns, ["tc", "-j", "qdisc", "show", "dev", ifname])
            root = [q for q in qdiscs if q.get("root")]
            assert [q["kind"] for q in root] == ["tbf"], (ns, ifname, qdiscs)
            assert root[0]["options"]["rate"] == isp.rate_mbit * 1_000_000 // 8
            # The kernel keeps the bucket in clock ticks; bytes come back rounded.
            assert root[0]["options"]["burst"] == pytest.approx(want.burst_bytes, rel=1e-3)


@pytest.mark.parametrize("lab", [{"isps": 2, "shaping": False}], indirect=True)
def test_shaping_can_be_turned_off(lab: Lab) -> None:
    isp = lab.isps[0]
    for ifname in (ISP_CORE_IF, ISP_CUSTOMER_IF):
        qdiscs = _json(isp.ns, ["tc", "-j", "qdisc", "show", "dev", ifname])
        assert all(q["kind"] != "tbf" for q in qdiscs)
    assert len(lab.isps) == 2


def test_isp_link_down_takes_the_carrier_away(lab: Lab) -> None:
    wan = lab.isp("isp-b").uplink_if

    def lost() -> bool:
        link = _link(lab.router, wan)
        return "NO-CARRIER" in link["flags"] and link["operstate"] in ("LOWERLAYERDOWN", "DOWN")

    isp_link_down(lab, "isp-b")
    assert _wait_for(lost)
    assert _link(lab.router, "wan-a")["operstate"] == "UP"
    isp_link_up(lab, "isp-b")
    assert _wait_for(lambda: not lost() and _link(lab.router, wan)["operstate"] == "UP")


@pytest.mark.parametrize("lab", [{"lan": True}], indirect=True)
def test_lan_namespace_and_clients(lab: Lab) -> None:
    assert lab.lan is not None
    assert lab.ns("lan") in _our_namespaces(lab.prefix)
    assert _json(lab.lan, ["ip", "-j", "route", "show", "default"])[0]["gateway"] == "10.200.0.1"
    clients = add_lan_clients(lab, 3)
    assert clients == [IPv4Address(f"10.200.1.{k}") for k in (1, 2, 3)]
    assert add_lan_clients(lab, 1) == [IPv4Address("10.200.1.4")]
    addrs = _json(lab.lan, ["ip", "-j", "-4", "addr", "show", "dev", LAN_IF])[0]["addr_info"]
    assert {a["local"] for a in addrs} >= {"10.200.0.2", "10.200.1.1", "10.200.1.4"}
    assert ping(lab.lan, IPv4Address("10.200.0.1")) == 3


def test_destroy_removes_everything_and_may_be_called_twice(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2)
    sleeper = netns.popen_in(lab.router, ["sleep", "60"])
    try:
        assert _wait_for(lambda: sleeper.pid in netns.pids_in(lab.router))
        destroy_lab(lab)
        assert _our_namespaces(lab.prefix) == []
        # A process left in a namespace would keep it (and its veths) alive.
        assert sleeper.wait(timeout=5) != 0
        destroy_lab(lab)
        assert _our_namespaces(lab.prefix) == []
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()])
def test_a_build_failing_half_way_leaves_no_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_prefix: str, exc: BaseException
) -> None:
    real = netns.create_netns
    calls: list[str] = []

    def flaky(name: str) -> None:
        calls.append(name)
        if len(calls) == 3:
            raise exc
        real(name)

    monkeypatch.setattr(netns, "create_netns", flaky)
    with pytest.raises(type(exc)):
        build_lab(workdir=tmp_path, prefix=lab_prefix)
    assert len(calls) == 3
    assert _our_namespaces(lab_prefix) == []


def test_a_build_failing_late_leaves_no_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_prefix: str
) -> None:

    def broken(*args: object) -> None:
        raise RuntimeError("tc exploded")

    monkeypatch.setattr("ecmpd.lab.topology.shape", broken)
    with pytest.raises(RuntimeError, match="tc exploded"):
        build_lab(workdir=tmp_path, prefix=lab_prefix)
    assert _our_namespaces(lab_prefix) == []


def test_a_clashing_prefix_fails_without_harming_the_first_lab(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    first = lab_factory(isps=1)
    with pytest.raises(FileExistsError):
        build_lab(isps=1, workdir=tmp_path / "second", prefix=first.prefix)
    assert sorted(_our_namespaces(first.prefix)) == sorted(first.namespaces())


@pytest.mark.parametrize("lab", [{"isps": 2}], indirect=True)
def test_an_ipv6_lab_round_trips_and_answers_on_ipv6(lab: Lab) -> None:
    assert load_lab(save_lab(lab)) == lab
    server = lab.servers6[0]
    for isp in lab.isps:
        assert isp.gateway6 is not None
        netns.run_in(
            lab.router,
            ["ip", "-6", "route", "replace", str(server), "via", str(isp.gateway6)],
            check=True,
        )
        assert ping6(lab.router, server) == 3, f"no IPv6 replies via {isp.name}"
    assert netns.read_sysctl(lab.internet, "net.ipv6.conf.all.forwarding") == "1"
    # The default route is ecmpd's to install, in IPv6 too.
    assert _json(lab.router, ["ip", "-j", "-6", "route", "show", "default"]) == []


@pytest.mark.parametrize("lab", [{"isps": 1, "ipv6": False}], indirect=True)
def test_an_ipv4_only_lab_has_no_global_ipv6(lab: Lab) -> None:
    for ns in lab.namespaces():
        addrs = _json(ns, ["ip", "-j", "-6", "addr", "show", "scope", "global"])
        assert [a for a in addrs if a["addr_info"]] == [], ns
    assert load_lab(save_lab(lab)) == lab
    assert ping(lab.router, lab.isps[0].gateway) == 3


def ping6(ns: str, dst: IPv6Address, *, count: int = 3, timeout: float = 2.0) -> int:
    """Sends ICMPv6 echoes from a namespace; returns the replies (the kernel sums them)."""
    ident = random.getrandbits(16)
    with netns.socket_in(ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        for seq in range(count):
            sock.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq), (str(dst), 0))
        replies: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(replies) < count and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                break
            kind, _, _, rid, seq = struct.unpack("!BBHHH", data[:8])
            if kind == 129 and rid == ident and peer[0] == str(dst):
                replies.add(seq)
    return len(replies)


def test_save_and_load_round_trip(lab: Lab) -> None:
    path = save_lab(lab)
    assert path.parent == lab.workdir
    assert load_lab(path) == lab
    assert load_lab(lab.workdir) == lab
    # What `ecmpd lab down` in another process does: destroy from the state file.
    destroy_lab(load_lab(path))
    assert _our_namespaces(lab.prefix) == []


def test_written_config_parses_and_lists_the_uplinks(lab: Lab, tmp_path: Path) -> None:
    built = yaml.safe_load(lab.config_path.read_text())
    assert [u["name"] for u in built["uplinks"]] == [i.name for i in lab.isps]
    assert [u["weight"] for u in built["uplinks"]] == [2, 4, 1]
    assert [u["interface"] for u in built["uplinks"]] == ["wan-a", "wan-b", "wan-c"]
    assert [r["name"] for r in built["rules"]] == ["local", "everything-else"]
    # A dual-stack lab, an IPv4 config: lab_config(ipv6=True) asks for IPv6.
    assert lab.ipv6 and not [u for u in built["uplinks"] if "gateway6" in u]
    other = write_lab_config(lab, tmp_path / "x.yaml", extra={"hash": "l3"})
    assert yaml.safe_load(other.read_text())["hash"] == "l3"


def test_two_labs_at_once_do_not_collide(lab_factory: LabFactory) -> None:
    one = lab_factory(isps=2)
    two = lab_factory(isps=2, rates_mbit=(10, 20))
    assert not set(one.namespaces()) & set(two.namespaces())
    for each in (one, two):
        assert ping(each.router, each.isps[1].gateway) == 3
    destroy_lab(one)
    assert sorted(_our_namespaces(two.prefix)) == sorted(two.namespaces())
    assert ping(two.router, two.isps[0].gateway) == 3


def test_the_module_lab_is_shared_and_live(lab_module: Lab, lab: Lab) -> None:
    assert lab_module.prefix != lab.prefix
    assert sorted(_our_namespaces(lab_module.prefix)) == sorted(lab_module.namespaces())
    assert ping(lab_module.router, lab_module.isps[0].gateway) == 3

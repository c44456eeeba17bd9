"""Boot order as systemd produces it: `ecmpd run` first, then the DHCP client, the router's
advertisements and the VPN tunnel, in either order; and a tunnel that goes and comes back.

At boot an uplink's interface may not exist yet (tun0) and a `gateway: dhcp` uplink has
no lease yet: the daemon starts anyway, holds such uplinks down, and brings each in
within a second (FOLLOW) of its peer being ready, whatever the others do.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from pathlib import Path

import pytest
import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import recovery_time
from ecmpd.lab import netns
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.peers import wiring
from ecmpd.lab.peers.process import Peer
from ecmpd.lab.wait import wait_for
from ecmpd.model import IPV6_ID_OFFSET, NH_ID_BASE
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ip_json
from tests.integration.fixtures.peers import balancer, follows, has_nexthop, main_defaults, others

VPN_TABLE = 104
TUN = "tun0"
ROUTER6 = IPv6Address("fe80::1")
REJOIN = recovery_time(CheckConfig()) + 1.0  # health must rise once the line is there


def boot_config(lab: Lab, path: Path) -> Path:
    """isp-a static; isp-b `gateway: dhcp`; isp-c `gateway6: ra`; vpn on tun0 (router mode)."""
    data = lab_config(lab, ipv6=True, extra={"mode": "router"})
    isp_b, isp_c = data["uplinks"][1], data["uplinks"][2]
    isp_b["gateway"] = "dhcp"
    del isp_b["source"]
    isp_b["check"]["targets"] = [str(lab.servers[0]), str(lab.servers6[0])]
    isp_c["gateway6"] = "ra"
    isp_c["check"]["targets"] = [t for t in isp_c["check"]["targets"] if ":" not in t]
    vpn = {"name": "vpn", "interface": TUN, "table": VPN_TABLE}
    data["uplinks"].append({**vpn, "check": {"targets": [str(lab.servers[1])]}})
    path.write_text(yaml.safe_dump(data))
    return path


def tun_index(lab: Lab) -> int | None:
    """tun0's ifindex (None: no tun0)."""
    links = [link for link in ip_json(lab.router, "link", "show") if link["ifname"] == TUN]
    return int(links[0]["ifindex"]) if links else None


@pytest.mark.parametrize("order", ["dhcp-ra-vpn", "vpn-ra-dhcp"])
@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_daemon_first_then_each_peer_when_ready(lab: Lab, tmp_path: Path, order: str) -> None:
    config = boot_config(lab, tmp_path / "boot.yaml")
    peers = tmp_path / "peers"
    b, c = lab.isps[1], lab.isps[2]
    server = wiring.dhcp_server(lab, "isp-b", peers)
    client = wiring.dhcp_client(lab, "isp-b", peers)  # isp-b's static address goes
    radvd = wiring.router_advertiser(lab, "isp-c", ROUTER6, peers)
    tun = wiring.tunnel(lab, "isp-a", peers)
    v4 = {VPN_TABLE: "vpn"}
    started: list[Peer] = []
    # Each step: start the peer, then wait for the kernel's change and ecmpd's.
    steps: dict[str, tuple[list[Peer], Callable[[], bool], Callable[[], bool], str, str]] = {
        "dhcp": (
            [server, client],
            lambda: main_defaults(lab, b.uplink_if) == {str(b.gateway)},
            lambda: has_nexthop(lab, NH_ID_BASE + 102),
            "isp-b",
            "-4",
        ),
        "ra": (
            [radvd],
            lambda: main_defaults(lab, c.uplink_if, "-6") == {str(ROUTER6)},
            lambda: has_nexthop(lab, NH_ID_BASE + IPV6_ID_OFFSET + 103, "-6"),
            "isp-c",
            "-6",
        ),
        "vpn": (
            [tun.server, tun.client],
            lambda: tun_index(lab) is not None and tun.client.established(),
            lambda: has_nexthop(lab, NH_ID_BASE + VPN_TABLE),
            "vpn",
            "-4",
        ),
    }
    try:
        with running_daemon(lab, config, tmp_path / "daemon") as daemon:
            # Booted without tun0, a lease or a router: only what exists is balanced.
            wait_for(lambda: balancer(lab, "-4", v4) == {"isp-a", "isp-c"}, 10, "IPv4 group")
            wait_for(lambda: balancer(lab, "-6") == {"isp-a", "isp-b"}, 10, "IPv6 group")
            # Each held down, saying why.
            assert "no interface" in str(daemon.uplink("vpn").reason)
            assert daemon.uplink("vpn").carrier is None  # no tun0: no carrier to speak of
            assert "no DHCP lease yet" in str(daemon.uplink("isp-b").families["ipv4"].reason)
            isp_c6 = daemon.uplink("isp-c").families["ipv6"]
            assert "no router advertisement yet" in str(isp_c6.reason)
            before = others(lab, (lab.isps[0].uplink_if,), (101,))
            want4, want6 = {"isp-a", "isp-c"}, {"isp-a", "isp-b"}
            for name in order.split("-"):
                programs, kernel, followed, uplink, family = steps[name]
                for program in programs:
                    program.start()
                    started.append(program)
                follows(kernel, followed, f"{name} ready")
                (want6 if family == "-6" else want4).add(uplink)
                wait_for(lambda: balancer(lab, "-4", v4) == want4, REJOIN, f"{name}: IPv4")
                wait_for(lambda: balancer(lab, "-6") == want6, REJOIN, f"{name}: IPv6")
            assert others(lab, (lab.isps[0].uplink_if,), (101,)) == before
            daemon.alive()
    finally:
        for program in reversed(started):
            program.stop()


def test_tunnel_gone_and_back_with_a_new_ifindex(lab: Lab, tmp_path: Path) -> None:
    """The client exits (tun0 is deleted) and comes back (a new tun0): never fatal."""
    data = lab_config(lab)
    data["uplinks"].append(
        {"name": "vpn", "interface": TUN, "table": VPN_TABLE,
         "check": {"targets": [str(lab.servers[1])]}}
    )  # fmt: skip
    config = tmp_path / "vpn.yaml"
    config.write_text(yaml.safe_dump(data))
    tun = wiring.tunnel(lab, "isp-a", tmp_path / "peers")
    isps = {isp.name for isp in lab.isps}
    v4 = {VPN_TABLE: "vpn"}
    unmoved = tuple(isp.uplink_if for isp in lab.isps)
    with tun.server, tun.client:
        wait_for(tun.client.established, 15, "the tunnel")
        with running_daemon(lab, config, tmp_path / "daemon") as daemon:
            wait_for(lambda: balancer(lab, "-4", v4) == isps | {"vpn"}, 10, "every uplink")
            first = tun_index(lab)
            before = others(lab, unmoved, (101, 102, 103))

            tun.client.stop()  # OpenVPN deletes the device it made
            follows(
                lambda: tun_index(lab) is None,
                lambda: (
                    balancer(lab, "-4", v4) == isps and not has_nexthop(lab, NH_ID_BASE + VPN_TABLE)
                ),
                "tunnel gone",
            )
            wait_for(lambda: "no interface" in str(daemon.uplink("vpn").reason), 1, "the reason")
            assert daemon.uplink("vpn").carrier is None
            daemon.alive()

            tun.client.start()
            follows(
                lambda: tun_index(lab) is not None and tun.client.established(),
                lambda: has_nexthop(lab, NH_ID_BASE + VPN_TABLE),
                "tunnel back",
            )
            assert tun_index(lab) != first
            wait_for(lambda: balancer(lab, "-4", v4) == isps | {"vpn"}, REJOIN, "vpn back")
            assert others(lab, unmoved, (101, 102, 103)) == before
            daemon.alive()
    assert netns.list_netns(lab.prefix)  # the lab's own cleanup removes it

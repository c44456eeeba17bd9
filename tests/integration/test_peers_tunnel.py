"""A point-to-point `tun` uplink from a real OpenVPN tunnel through an ISP, with `ecmpd run`.

The tunnel's client runs in the router, its server in isp-a; the tunnel is a fourth
uplink (`vpn`, no gateway: point-to-point). Up, down (the client stops: the persistent
device stays without carrier), back, and gone (the device is deleted) and back with a
new ifindex: each followed within a second (FOLLOW), the other uplinks never move.
PPP, WireGuard and GRE would be followed the same way, but this kernel has none of them.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.lab import netns
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import Lab, core_link
from ecmpd.lab.peers import openvpn, wiring
from ecmpd.lab.peers.openvpn import TunnelPlan
from ecmpd.lab.wait import wait_for
from ecmpd.model import NH_ID_BASE
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ip_json
from tests.integration.fixtures.peers import (
    addresses,
    balancer,
    follows,
    has_nexthop,
    others,
    rule_sources,
    went_down,
)

ISPS = {"isp-a", "isp-b", "isp-c"}
ALL = ISPS | {"vpn"}
VPN_TABLE = 104
NH_VPN = NH_ID_BASE + VPN_TABLE
TUN = "tun0"
RENUMBERED = IPv4Address("10.240.1.6")  # isp-a's tunnel: 10.240.1.1 <-> .2, then .6


def tunnel_config(lab: Lab, path: Path) -> Path:
    """The lab's three ISPs and the tunnel as a fourth, point-to-point uplink."""
    data = lab_config(lab)
    data["uplinks"].append(
        {
            "name": "vpn",
            "interface": TUN,
            "table": VPN_TABLE,
            "check": {"targets": [str(lab.servers[1])]},
        }
    )
    path.write_text(yaml.safe_dump(data))
    return path


def carrier(lab: Lab) -> bool | None:
    """Whether tun0 has carrier (None: no tun0)."""
    links = [link for link in ip_json(lab.router, "link", "show") if link["ifname"] == TUN]
    return None if not links else "LOWER_UP" in links[0]["flags"]


def members(lab: Lab) -> set[str]:
    """The balancer's members, the tunnel included."""
    return balancer(lab, extra={VPN_TABLE: "vpn"})


def renumber(lab: Lab, plan: TunnelPlan) -> None:
    """Move the router's end of the tunnel to RENUMBERED; the ISP and internet route it."""
    new, peer = str(RENUMBERED), str(plan.server_inner)
    netns.run_in(lab.ns("isp-a"), ["ip", "route", "replace", f"{new}/32", "dev", TUN], check=True)
    isp_side, _ = core_link(0)
    netns.run_in(
        lab.internet, ["ip", "route", "replace", f"{new}/32", "via", str(isp_side.ip)], check=True
    )
    # Old out, new in: with the same peer the new address would be a secondary of the
    # old one, and the kernel deletes secondaries with their primary.
    old = str(plan.client_inner)
    netns.run_in(lab.router, ["ip", "addr", "del", old, "peer", peer, "dev", TUN], check=True)
    netns.run_in(lab.router, ["ip", "addr", "add", new, "peer", peer, "dev", TUN], check=True)


def tun_sources(lab: Lab) -> set[str]:
    """tun0's IPv4 addresses."""
    return addresses(lab, TUN)


def test_tunnel_up_down_and_back_with_a_persistent_device(lab: Lab, tmp_path: Path) -> None:
    """The device exists from the start (made persistent, as a VPN set up at boot has)."""
    config = tunnel_config(lab, tmp_path / "vpn.yaml")
    tun = wiring.tunnel(lab, "isp-a", tmp_path / "peers", persist_tun=True)
    openvpn.make_persistent_tun(lab.router, TUN)
    unmoved = tuple(isp.uplink_if for isp in lab.isps)
    rejoin = recovery_time(CheckConfig()) + 1.0
    with tun.server, running_daemon(lab, config, tmp_path / "daemon") as daemon:
        wait_for(lambda: group_members(lab) == ISPS, 10, "the ISPs in the group")
        assert carrier(lab) is False and not has_nexthop(lab, NH_VPN)
        before = others(lab, unmoved, (101, 102, 103))
        try:
            tun.client.start()
            follows(lambda: bool(carrier(lab)), lambda: has_nexthop(lab, NH_VPN), "tunnel up")
            wait_for(lambda: members(lab) == ALL, rejoin, "vpn probed up, in the group")

            tun.client.stop()  # the device stays, without carrier
            follows(lambda: carrier(lab) is False, lambda: members(lab) == ISPS, "tunnel down")
            assert not has_nexthop(lab, NH_VPN)

            tun.client.start()
            follows(lambda: bool(carrier(lab)), lambda: has_nexthop(lab, NH_VPN), "back")
            wait_for(lambda: members(lab) == ALL, rejoin, "vpn back in the group")

            downs = went_down(daemon.log(), "vpn")  # the carrier loss above
            # Renumbered, as PPP's IPCP or a VPN server may: the reply rule follows
            # the new address and the probes keep answering from it.
            renumber(lab, tun.plan)
            follows(
                lambda: tun_sources(lab) == {str(RENUMBERED)},
                lambda: (
                    rule_sources(lab) & {str(RENUMBERED), str(tun.plan.client_inner)}
                    == {str(RENUMBERED)}
                ),
                "a new address",
            )
            time.sleep(3 * detection_time(CheckConfig()))  # old-address probes would fail
            assert members(lab) == ALL
            assert went_down(daemon.log(), "vpn") == downs
            assert others(lab, unmoved, (101, 102, 103)) == before
            daemon.alive()
        finally:
            tun.client.stop()

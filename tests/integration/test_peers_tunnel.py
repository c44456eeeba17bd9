"""A point-to-point `tun` uplink from a real OpenVPN tunnel through an ISP, with `ecmpd run`.

The tunnel's client runs in the router, its server in isp-a; the tunnel is a fourth
uplink (`vpn`, no gateway: point-to-point). Up, down (the client stops: the persistent
device stays without carrier), back, and gone (the device is deleted) and back with a
new ifindex: each followed within a second (FOLLOW), the other uplinks never move.
PPP, WireGuard and GRE would be followed the same way, but this kernel has none of them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import recovery_time
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.peers import openvpn, wiring
from ecmpd.lab.topology import Lab
from ecmpd.model import NH_ID_BASE
from tests.integration.daemonproc import group_members, running_daemon, wait_for
from tests.integration.kernelstate import ip_json
from tests.integration.peerwatch import balancer, follows, has_nexthop, others

ISPS = {"isp-a", "isp-b", "isp-c"}
ALL = ISPS | {"vpn"}
VPN_TABLE = 104
NH_VPN = NH_ID_BASE + VPN_TABLE
TUN = "tun0"


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
            assert others(lab, unmoved, (101, 102, 103)) == before
            daemon.alive()
        finally:
            tun.client.stop()

"""`gateway: dhcp` against real dnsmasq (the ISP) and dhcpcd (the router), with `ecmpd run`.

Lease, renewal with a new router, rebinding, release, a new lease: each change dhcpcd
makes to the router's main table is followed by ecmpd within a second (FOLLOW), the
other uplinks never move, and the daemon never exits.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import recovery_time
from ecmpd.lab import netns
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import ISP_CUSTOMER_IF, Lab
from ecmpd.lab.peers import wiring
from ecmpd.lab.wait import wait_for
from ecmpd.model import NH_ID_BASE
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.peers import (
    PEER,
    addresses,
    follows,
    main_defaults,
    nexthop_gateway,
    others,
    rule_sources,
)

ALL = {"isp-a", "isp-b", "isp-c"}
NH_B = NH_ID_BASE + 102
NEW_ROUTER = IPv4Address("10.2.0.254")


def dhcp_config(lab: Lab, path: Path, isp: str = "isp-b") -> Path:
    """The lab's config with `isp` on `gateway: dhcp`, its source the leased address."""
    data = lab_config(lab)
    uplink = next(u for u in data["uplinks"] if u["name"] == isp)
    uplink["gateway"] = "dhcp"
    del uplink["source"]
    # Not the gateway as a target: the router changes; a server behind it stays.
    uplink["check"] = {"targets": [str(lab.servers[0])]}
    path.write_text(yaml.safe_dump(data))
    return path


def test_dhcp_lease_renewal_release_and_new_lease(lab: Lab, tmp_path: Path) -> None:
    isp = lab.isp("isp-b")
    wan, gateway = isp.uplink_if, str(isp.gateway)
    config = dhcp_config(lab, tmp_path / "dhcp.yaml")
    unmoved = (lab.isps[0].uplink_if, lab.isps[2].uplink_if)
    peers = tmp_path / "peers"
    netns.run_in(
        lab.ns("isp-b"),
        ["ip", "addr", "add", f"{NEW_ROUTER}/24", "dev", ISP_CUSTOMER_IF],
        check=True,
    )
    with (
        wiring.dhcp_server(lab, "isp-b", peers) as server,
        wiring.dhcp_client(lab, "isp-b", peers) as client,
    ):
        wait_for(lambda: main_defaults(lab, wan) == {gateway}, PEER, "the first lease")
        (address,) = addresses(lab, wan)
        assert IPv4Address(address) in wiring.dhcp_pool(lab, "isp-b").network
        with running_daemon(lab, config, tmp_path / "daemon") as daemon:
            wait_for(lambda: group_members(lab) == ALL, 10, "every uplink in the group")
            assert nexthop_gateway(lab, NH_B) == gateway
            assert address in rule_sources(lab)
            before = others(lab, unmoved, (101, 103))

            # The ISP moves its customers to a new router; the renewal hands it out.
            server.set_router(NEW_ROUTER)
            client.renew()
            follows(
                lambda: main_defaults(lab, wan) == {str(NEW_ROUTER)},
                lambda: nexthop_gateway(lab, NH_B) == str(NEW_ROUTER),
                "renewal with a new router",
            )
            # And back, by rebinding (a broadcast REQUEST, as after a link change).
            server.set_router(isp.gateway)
            client.rebind()
            follows(
                lambda: main_defaults(lab, wan) == {gateway},
                lambda: nexthop_gateway(lab, NH_B) == gateway,
                "rebinding with the old router",
            )
            assert group_members(lab) == ALL

            # Released: no address, no default route; isp-b leaves, the rest stays.
            client.release()
            follows(
                lambda: not main_defaults(lab, wan) and not addresses(lab, wan),
                lambda: group_members(lab) == ALL - {"isp-b"},
                "the release",
            )
            wait_for(lambda: nexthop_gateway(lab, NH_B) is None, 1, "isp-b's nexthop gone")
            assert not daemon.uplink("isp-b").in_balancer

            # A new lease: isp-b routes again at once, and rejoins once probed healthy.
            client.start()
            follows(
                lambda: main_defaults(lab, wan) == {gateway},
                lambda: nexthop_gateway(lab, NH_B) == gateway,
                "a new lease",
            )
            (renewed,) = addresses(lab, wan)
            wait_for(lambda: renewed in rule_sources(lab), 1, "the reply rule of the lease")
            bound = recovery_time(CheckConfig()) + 1.0
            wait_for(lambda: group_members(lab) == ALL, bound, "isp-b back in the group")

            assert others(lab, unmoved, (101, 103)) == before
            daemon.alive()
            assert "reconcile.failed" not in daemon.log()

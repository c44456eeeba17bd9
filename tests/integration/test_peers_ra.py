"""`gateway6: ra` against real radvd in the ISP, with `ecmpd run` started before any router.

A first router, a new router replacing it, router lifetime 0, a router after that:
each is followed within a second of the kernel learning it (FOLLOW), in host mode and
in router mode, where IPv6 forwarding makes the kernel drop every advertisement on an
interface unless ecmpd set accept_ra=2 on it, from the start (issue 12, item 3).
"""

from __future__ import annotations

import json
from ipaddress import IPv6Address
from pathlib import Path

import pytest
import yaml

from ecmpd.lab import netns
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.peers import wiring
from ecmpd.lab.wait import wait_for
from ecmpd.model import Family, nexthop_id
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.peers import PEER, follows, main_defaults, nexthop_gateway, others

ALL = {"isp-a", "isp-b", "isp-c"}
NH6_B = nexthop_id(102, Family.INET6)
FIRST, SECOND = IPv6Address("fe80::1"), IPv6Address("fe80::2")


def ra_config(lab: Lab, path: Path, mode: str) -> Path:
    """The dual-stack lab config with isp-b on `gateway6: ra` (probed at the router)."""
    config = write_lab_config(lab, path, ipv6=True, extra={"mode": mode})
    data = yaml.safe_load(config.read_text())
    isp_b = data["uplinks"][1]
    isp_b["gateway6"] = "ra"
    # No IPv6 target: the default one is the advertised router, and must follow it.
    isp_b["check"]["targets"] = [t for t in isp_b["check"]["targets"] if ":" not in t]
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("mode", ["host", "router"])
@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_gateway6_ra_follows_real_router_advertisements(
    lab: Lab, tmp_path: Path, mode: str
) -> None:
    config = ra_config(lab, tmp_path / "ra.yaml", mode)
    wan = lab.isps[1].uplink_if
    peers = tmp_path / "peers"
    unmoved = (lab.isps[0].uplink_if, lab.isps[2].uplink_if)

    def routers() -> set[str]:
        return main_defaults(lab, wan, "-6")

    def gateway() -> str | None:
        return nexthop_gateway(lab, NH6_B, "-6")

    def probed() -> list[str]:
        return [t.target for t in daemon.uplink("isp-b").families["ipv6"].targets]

    first = wiring.router_advertiser(lab, "isp-b", FIRST, peers)
    second = wiring.router_advertiser(lab, "isp-b", SECOND, peers)
    with running_daemon(lab, config, tmp_path / "daemon") as daemon:
        # No router yet: the daemon runs all the same; isp-b carries IPv4 only.
        wait_for(lambda: daemon.uplink("isp-a").families["ipv6"].health == "up", 5, "isp-a up")
        assert group_members(lab, Family.INET6) == ALL - {"isp-b"}
        assert group_members(lab) == ALL
        assert netns.read_sysctl(lab.router, f"net.ipv6.conf.{wan}.accept_ra") == (
            "2" if mode == "router" else "1"
        )
        before = others(lab, unmoved, (101, 103))
        try:
            first.start()
            follows(lambda: routers() == {str(FIRST)}, lambda: gateway() == str(FIRST), "router")
            wait_for(
                lambda: group_members(lab, Family.INET6) == ALL,
                5,
                "isp-b probed up, in IPv6's group",
            )
            assert probed() == [str(FIRST)]

            # The ISP swaps routers: the new one announces itself, the old one shuts
            # down (radvd's last advertisement has router lifetime 0).
            second.start()
            first.stop()
            follows(
                lambda: routers() == {str(SECOND)},
                lambda: gateway() == str(SECOND) and probed() == [str(SECOND)],
                "a new router",
            )
            wait_for(lambda: daemon.uplink("isp-b").families["ipv6"].health == "up", 5, "probed")
            assert group_members(lab, Family.INET6) == ALL

            # Router lifetime 0 from a router that keeps running: isp-b's IPv6 goes.
            second.set_lifetime(0)
            follows(
                lambda: not routers(),
                lambda: group_members(lab, Family.INET6) == ALL - {"isp-b"} and gateway() is None,
                "router lifetime 0",
            )
            assert group_members(lab) == ALL

            # Heard again after the withdrawal (router mode: accept_ra is still 2).
            second.set_lifetime(600)
            follows(lambda: routers() == {str(SECOND)}, lambda: gateway() == str(SECOND), "back")
            wait_for(
                lambda: group_members(lab, Family.INET6) == ALL, 5, "isp-b back in IPv6's group"
            )
            assert others(lab, unmoved, (101, 103)) == before
            assert "reconcile.failed" not in daemon.log()
        finally:
            first.stop()
            second.stop()
    # Without the daemon, status reads what the kernel learnt.
    with wiring.router_advertiser(lab, "isp-b", FIRST, peers / "again"):
        wait_for(lambda: routers() == {str(FIRST)}, PEER, "the kernel learns the router again")
        status = ecmpd(lab.router, config, tmp_path / "daemon" / "run", "status", "--json")
    assert status.returncode == 0, status.stderr
    uplinks = {u["name"]: u for u in json.loads(status.stdout)["uplinks"]}
    assert uplinks["isp-b"]["gateway6"] == f"ra ({FIRST})"
    assert uplinks["isp-a"]["gateway6"] == str(lab.isps[0].gateway6)

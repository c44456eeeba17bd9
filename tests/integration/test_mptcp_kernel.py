"""The MPTCP adapter (kernel.mptcp, kernel.mptcpdiag) against the real kernel, in a lab.

Endpoints and limits are checked against what `ip mptcp` reads back; a live MPTCP
download checks what the subflow reader reports and the kernel behaviour ecmpd builds
on: deleting an endpoint closes its subflow, re-adding it opens one again on the
existing connection (mptcp_net-next#440: the kernel does not do that by itself).
"""

from __future__ import annotations

import errno
import json
import subprocess
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest

from ecmpd.kernel import mptcp
from ecmpd.kernel.mptcpdiag import Subflow, dump_subflows
from ecmpd.kernel.transport import NetlinkError, release
from ecmpd.lab import netns
from ecmpd.lab.layout import Lab
from ecmpd.lab.mptcp import Download, Server
from ecmpd.lab.wait import wait_for
from ecmpd.model import IPAddress
from tests.integration.fixtures.mptcp import limits

TWO_PLAIN = {"isps": 2, "shaping": False, "servers": 2}
FIRST_ID = 0xC0


def ip_json(ns: str, *args: str) -> Any:
    """`ip -j ARGS` inside the namespace, parsed."""
    out = netns.run_in(ns, ["ip", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout or "[]")


def ip(ns: str, *args: str) -> None:
    netns.run_in(ns, ["ip", *args], check=True, capture_output=True)


def ip_root(*args: str) -> str:
    """`ip ARGS` in the test process's own namespace: read only."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def ifindex(ns: str, dev: str) -> int:
    return int(ip_json(ns, "link", "show", "dev", dev)[0]["ifindex"])


@pytest.mark.parametrize("lab", [TWO_PLAIN], indirect=True)
def test_endpoints_and_limits_round_trip_with_ip(lab: Lab) -> None:
    root_before = json.dumps(ip_json_root(), sort_keys=True)
    a, b = lab.isps
    assert a.address6 is not None
    ipr = netns.iproute(lab.router)
    try:
        wan_a, wan_b = ifindex(lab.router, a.uplink_if), ifindex(lab.router, b.uplink_if)
        mptcp.add_endpoint(ipr, FIRST_ID, a.address.ip, wan_a)
        mptcp.add_endpoint(ipr, FIRST_ID + 1, a.address6.ip, wan_a)
        mptcp.add_endpoint(ipr, FIRST_ID + 2, b.address.ip, wan_b, backup=True)
        shown = {e["id"]: e for e in ip_json(lab.router, "mptcp", "endpoint", "show")}
        ours = {e.id: e for e in mptcp.dump_endpoints(ipr)}
        assert set(shown) == set(ours) == {FIRST_ID, FIRST_ID + 1, FIRST_ID + 2}
        for ep_id, ep in ours.items():
            assert ip_address(shown[ep_id]["address"]) == ep.address
            assert shown[ep_id]["dev"] == (a.uplink_if if ep.ifindex == wan_a else b.uplink_if)
            assert shown[ep_id].get("backup", False) == ep.backup
            assert shown[ep_id]["subflow"] is True
        assert ours[FIRST_ID + 2].backup and not ours[FIRST_ID].backup
        assert isinstance(ours[FIRST_ID + 1].address, IPv6Address)

        # Backup flips in place, both families (MP_PRIO on live connections).
        mptcp.set_backup(ipr, a.address6.ip, True)
        mptcp.set_backup(ipr, b.address.ip, False)
        backup = {
            e["id"]: e.get("backup", False)
            for e in ip_json(lab.router, "mptcp", "endpoint", "show")
        }
        assert backup == {FIRST_ID: False, FIRST_ID + 1: True, FIRST_ID + 2: False}

        # The kernel refuses a second endpoint on an address, and deleting what is gone.
        with pytest.raises(NetlinkError) as dup:
            mptcp.add_endpoint(ipr, FIRST_ID + 5, a.address.ip, wan_a)
        assert dup.value.errno == errno.EEXIST
        mptcp.delete_endpoint(ipr, FIRST_ID)
        assert FIRST_ID not in {e.id for e in mptcp.dump_endpoints(ipr)}
        with pytest.raises(NetlinkError):
            mptcp.delete_endpoint(ipr, FIRST_ID)

        before = mptcp.get_limits(ipr)
        shown_limits = limits(lab.router)
        assert (before.subflows, before.add_addr_accepted) == (
            shown_limits["subflows"],
            shown_limits["add_addr_accepted"],
        )
        mptcp.set_limits(ipr, 5)
        after = limits(lab.router)
        assert after["subflows"] == 5 and after["add_addr_accepted"] == before.add_addr_accepted
        with pytest.raises(ValueError):
            mptcp.set_limits(ipr, mptcp.MAX_LIMIT + 1)
    finally:
        release(ipr)
        ipr.close()
    # Nothing of this reached the namespace the test runs in.
    assert json.dumps(ip_json_root(), sort_keys=True) == root_before


def ip_json_root() -> Any:
    """The test process's own namespace's endpoints and limits (read only)."""
    return [json.loads(ip_root("-j", "mptcp", "endpoint", "show") or "[]"),
            ip_root("mptcp", "limits", "show")]  # fmt: skip


def source_routing(lab: Lab, v6: bool) -> list[IPAddress]:
    """What ecmpd's reply rules do, by hand: each uplink source leaves by its own ISP."""
    sources: list[IPAddress] = []
    for i, isp in enumerate(lab.isps):
        table = str(101 + i)
        src: IPAddress
        gw: IPAddress
        if v6:
            assert isp.address6 is not None and isp.gateway6 is not None
            src, gw = isp.address6.ip, isp.gateway6
        else:
            src, gw = isp.address.ip, isp.gateway
        fam = "-6" if v6 else "-4"
        ip(lab.router, fam, "route", "add", "default", "via", str(gw), "table", table)
        ip(lab.router, fam, "rule", "add", "from", str(src), "lookup", table, "pref", "100")
        if i == 0:
            ip(lab.router, fam, "route", "add", "default", "via", str(gw))
        sources.append(src)
    return sources


def by_source(subflows: list[Subflow], token: int) -> dict[IPAddress, Subflow]:
    return {s.local: s for s in subflows if s.token == token and s.established}


@pytest.mark.parametrize("lab", [TWO_PLAIN], indirect=True)
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_subflows_follow_endpoints_on_a_live_connection(lab: Lab, v6: bool) -> None:
    src_a, src_b = source_routing(lab, v6)
    server_addr = lab.servers6[0] if v6 else lab.servers[0]
    ipr = netns.iproute(lab.router)
    try:
        wan = [ifindex(lab.router, isp.uplink_if) for isp in lab.isps]
        mptcp.set_limits(ipr, 2)
        mptcp.add_endpoint(ipr, FIRST_ID, src_a, wan[0])
        mptcp.add_endpoint(ipr, FIRST_ID + 1, src_b, wan[1])
        with Server(lab.internet, server_addr) as server:
            dl = Download(lab.router, server_addr, server.port, size=1 << 40).start()
            assert dl.is_mptcp()
            tokens = {s.token for s in dump_subflows(ipr) if s.local == src_a}
            assert len(tokens) == 1
            (token,) = tokens

            def both() -> bool:
                return set(by_source(dump_subflows(ipr), token)) == {src_a, src_b}

            wait_for(both, 2.0, "a subflow from each uplink")
            first = by_source(dump_subflows(ipr), token)
            assert first[src_b].local_id == FIRST_ID + 1
            assert isinstance(src_b, IPv6Address if v6 else IPv4Address)

            def carrying(src: IPAddress, since: int) -> bool:
                sub = by_source(dump_subflows(ipr), token).get(src)
                return sub is not None and sub.bytes_received > since + 1_000_000

            wait_for(lambda: carrying(src_b, 0), 5.0, "data on the second uplink")

            mptcp.delete_endpoint(ipr, FIRST_ID + 1)
            wait_for(lambda: src_b not in by_source(dump_subflows(ipr), token), 1.0, "gone")
            mptcp.add_endpoint(ipr, FIRST_ID + 1, src_b, wan[1])
            back = wait_for(lambda: carrying(src_b, 0), 2.0, "a new subflow carrying data")
            assert back < 2.0
            assert dl.error is None and not dl.done.is_set()
    finally:
        release(ipr)
        ipr.close()

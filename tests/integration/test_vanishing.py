"""Uplinks whose interface vanishes, is not there yet at boot, or comes and goes with a tunnel.

Issue 12 items 1, 2 and 6, against the real kernel and the real `ecmpd run`: `ip link
del` of an uplink's interface never ends the daemon (it holds the uplink down with
reason `no interface` and takes it back with whatever ifindex the name returns); the
daemon starts without an interface or a DHCP lease (`validate` warns) and brings them
in; a real OpenVPN tunnel whose device goes with the client; a foreign object on one of
ecmpd's ids is named in the status and counted, the rest applied. Other uplinks are
never touched: their nexthops and routes stay identical and their traffic flows.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import recovery_time
from ecmpd.lab import netns
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import lab_config, write_lab_config
from ecmpd.lab.layout import ISP_CUSTOMER_IF, LINK_LOCAL_GATEWAY6, IspInfo, Lab
from ecmpd.lab.peers import wiring
from ecmpd.lab.pinggaps import INTERVAL_S, PingStreams
from ecmpd.lab.wait import wait_for
from ecmpd.model import nexthop_id
from ecmpd.status import DisplayState
from tests.integration.fixtures.daemon import DaemonProc, running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.metrics import scrape_text
from tests.integration.fixtures.peers import (
    FOLLOW,
    balancer,
    follows,
    has_nexthop,
    main_defaults,
    nexthop_gateway,
    others,
)

ALL = {"isp-a", "isp-b", "isp-c"}
KEPT = ("isp-a", "isp-b")
# A healthy uplink's ping stream never pauses this long: scheduling on a busy 2-core
# machine delays a reply by tens of milliseconds; a broken path would be silent for
# seconds (a probe timeout at least).
MAX_GAP_S = 0.5


def rejoin_bound() -> float:
    """From an uplink's line back to it being back in the group: recovery, plus a margin."""
    return recovery_time(CheckConfig()) + FOLLOW


class SourcedPings(PingStreams):
    """Pings from the router, one stream per source address: each leaves by its uplink
    (its reply rule), so each stream is one uplink's traffic."""

    def __init__(self, ns: str, server: IPv4Address, sources: Sequence[IPv4Address]) -> None:
        super().__init__(ns, [server] * len(sources))
        self.sources = list(sources)

    def start(self) -> None:
        for source in self.sources:
            argv = ["ping", "-D", "-n", "-i", str(INTERVAL_S), "-W", "1", "-I", str(source),
                    str(self.servers[0])]  # fmt: skip
            out, err = subprocess.PIPE, subprocess.DEVNULL
            self.procs.append(netns.popen_in(self.ns, argv, stdout=out, stderr=err, text=True))


def delete_link(lab: Lab, isp: IspInfo) -> None:
    """`ip link del` of the uplink's interface (its veth peer in the ISP goes with it)."""
    netns.run_in(lab.router, ["ip", "link", "del", isp.uplink_if], check=True)


def add_link(lab: Lab, isp: IspInfo, index: int) -> None:
    """The uplink's interface again, as the lab built it, at a new ifindex."""
    netns.run_in(
        lab.router,
        ["ip", "link", "add", isp.uplink_if, "index", str(index), "type", "veth",
         "peer", "name", ISP_CUSTOMER_IF, "netns", isp.ns],
        check=True,
    )  # fmt: skip
    router = [str(isp.address)]
    customer = [f"{isp.gateway}/{isp.address.network.prefixlen}"]
    if isp.address6 is not None and isp.gateway6 is not None:
        router.append(str(isp.address6))
        customer += [f"{isp.gateway6}/64", str(LINK_LOCAL_GATEWAY6)]
    for ns, dev, addresses in ((lab.router, isp.uplink_if, router),
                               (isp.ns, ISP_CUSTOMER_IF, customer)):  # fmt: skip
        for address in addresses:
            netns.run_in(ns, ["ip", "addr", "add", address, "dev", dev], check=True)
        netns.run_in(ns, ["ip", "link", "set", dev, "up"], check=True)


def untouched(lab: Lab) -> object:
    """The kept uplinks' nexthops and tables (must stay identical)."""
    kept = [lab.isp(n) for n in KEPT]
    return others(lab, [i.uplink_if for i in kept], [101 + lab.isps.index(i) for i in kept])


def reason(daemon: DaemonProc, name: str) -> str | None:
    return daemon.uplink(name).reason


def test_an_interface_deleted_and_recreated_never_ends_the_daemon(lab: Lab, tmp_path: Path) -> None:
    isp_c = lab.isp("isp-c")
    nh_c = nexthop_id(103)
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: group_members(lab) == ALL, 10, "every uplink in the group")
        wait_for(daemon.all_in_service, 10, "every uplink probed up")
        before = untouched(lab)
        sources = [lab.isp(n).address.ip for n in KEPT]
        pings = SourcedPings(lab.router, lab.servers[0], sources)
        pings.start()
        started = time.time()
        try:
            for index in (301, 302):  # gone and back twice, each time a new ifindex
                delete_link(lab, isp_c)
                took = wait_for(lambda: balancer(lab) == set(KEPT), FOLLOW, "isp-c out")
                assert took <= FOLLOW
                wait_for(lambda: reason(daemon, "isp-c") == "no interface", FOLLOW, "reason")
                assert daemon.uplink("isp-c").state is DisplayState.DOWN
                daemon.alive()
                add_link(lab, isp_c, index)
                # Probing restarts on the new interface; the nexthop is re-created.
                wait_for(lambda: has_nexthop(lab, nh_c), FOLLOW, "the nexthop re-created")
                wait_for(lambda: balancer(lab) == ALL, rejoin_bound(), "isp-c back")
                assert daemon.uplink("isp-c").health == "up"
                assert untouched(lab) == before
        finally:
            streams = pings.stop()
        daemon.alive()
        for stream, source in zip(streams, sources, strict=True):
            gap = stream.gap_after(started)
            assert gap < MAX_GAP_S, (str(source), gap)
        assert "Traceback" not in daemon.log()


def test_run_starts_before_its_interface_and_its_lease(lab: Lab, tmp_path: Path) -> None:
    """Boot order as systemd gives it: ecmpd first, then the interface and the DHCP lease."""
    data = lab_config(lab)
    isp_b = next(u for u in data["uplinks"] if u["name"] == "isp-b")
    isp_b["gateway"] = "dhcp"
    del isp_b["source"]
    isp_b["check"] = {"targets": [str(lab.servers[0])]}  # the leased router changes nothing
    config = tmp_path / "boot.yaml"
    config.write_text(yaml.safe_dump(data))
    # isp-b's address comes with its lease; isp-c's interface is not there at all.
    netns.run_in(lab.router, ["ip", "addr", "flush", "dev", "wan-b"], check=True)
    delete_link(lab, lab.isp("isp-c"))

    checked = ecmpd(lab.router, config, tmp_path / "run", "validate", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["valid"] is True
    lines = checked.stderr.splitlines()
    assert any(
        line.startswith(f"{config}:") and "uplinks[2].interface: warning: no interface 'wan-c'"
        in line for line in lines
    ), lines  # fmt: skip
    assert any("uplinks[1].gateway: warning: wan-b has no DHCP lease yet" in line
               for line in lines), lines  # fmt: skip

    with running_daemon(lab, config, tmp_path / "daemon") as daemon:
        wait_for(lambda: balancer(lab) == {"isp-a"}, 10, "isp-a alone in the group")
        assert reason(daemon, "isp-b") == "no DHCP lease yet"
        assert reason(daemon, "isp-c") == "no interface"
        assert {daemon.uplink(n).state for n in ("isp-b", "isp-c")} == {DisplayState.DOWN}

        add_link(lab, lab.isp("isp-c"), 303)
        wait_for(lambda: has_nexthop(lab, nexthop_id(103)), FOLLOW, "isp-c's interface in")
        wait_for(lambda: balancer(lab) == {"isp-a", "isp-c"}, rejoin_bound(), "isp-c in")

        peers = tmp_path / "peers"
        with wiring.dhcp_server(lab, "isp-b", peers), wiring.dhcp_client(lab, "isp-b", peers):
            lease = wiring.dhcp_pool(lab, "isp-b").router
            follows(
                lambda: bool(main_defaults(lab, "wan-b")),
                lambda: nexthop_gateway(lab, nexthop_id(102)) == str(lease),
                "isp-b's lease",
            )
            wait_for(lambda: balancer(lab) == ALL, rejoin_bound(), "isp-b in with its lease")
        daemon.alive()


def test_an_interface_that_comes_while_the_daemon_starts_is_followed(
    lab: Lab, tmp_path: Path
) -> None:
    """A device created the moment `ecmpd run` first answers (systemd starts the VPN right
    after ecmpd) is followed within a second: no kernel change between the daemon's
    first read of the kernel and its listening for changes goes unnoticed."""
    data = lab_config(lab)
    data["uplinks"].append({"name": "late", "interface": "late0", "table": 104})
    config = tmp_path / "late.yaml"
    config.write_text(yaml.safe_dump(data))
    with running_daemon(lab, config, tmp_path / "daemon") as daemon:
        # At once, while the daemon may still be making its first reconcile.
        # (A veth pair inside the router: this kernel has no dummy driver.)
        for argv in (["ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1"],
                     ["ip", "addr", "add", "10.250.0.2/30", "dev", "late0"],
                     ["ip", "link", "set", "late1", "up"],
                     ["ip", "link", "set", "late0", "up"]):  # fmt: skip
            netns.run_in(lab.router, argv, check=True)
        took = wait_for(lambda: has_nexthop(lab, nexthop_id(104)), FOLLOW, "late0's nexthop")
        assert took <= FOLLOW
        wait_for(lambda: reason(daemon, "late") != "no interface", FOLLOW, "late0 not held")
        daemon.alive()


def test_a_tunnel_uplink_whose_device_comes_and_goes(lab: Lab, tmp_path: Path) -> None:
    """OpenVPN without a persistent device: the client creates tun0 and deletes it on exit.

    ecmpd starts before the tunnel; each start is a new device with a new ifindex.
    """
    data = lab_config(lab)
    data["uplinks"].append(
        {"name": "vpn", "interface": "tun0", "table": 104,
         "check": {"targets": [str(lab.servers[1])]}}
    )  # fmt: skip
    config = tmp_path / "vpn.yaml"
    config.write_text(yaml.safe_dump(data))
    tun = wiring.tunnel(lab, "isp-a", tmp_path / "peers")
    nh_vpn = nexthop_id(104)
    members = {104: "vpn"}
    with tun.server, running_daemon(lab, config, tmp_path / "daemon") as daemon:
        wait_for(lambda: balancer(lab, extra=members) == ALL, 10, "the ISPs in the group")
        assert reason(daemon, "vpn") == "no interface"
        before = others(lab, ["wan-a", "wan-b", "wan-c"], (101, 102, 103))
        indexes = set()
        try:
            for _ in range(2):
                tun.client.start()
                follows(lambda: _index(lab) is not None, lambda: has_nexthop(lab, nh_vpn),
                        "tunnel up")  # fmt: skip
                indexes.add(_index(lab))
                wait_for(lambda: balancer(lab, extra=members) == ALL | {"vpn"}, rejoin_bound(),
                         "vpn probed up, in the group")  # fmt: skip
                tun.client.stop()  # the device goes with the client
                follows(lambda: _index(lab) is None,
                        lambda: balancer(lab, extra=members) == ALL, "tunnel gone")  # fmt: skip
                wait_for(lambda: reason(daemon, "vpn") == "no interface", FOLLOW, "reason")
                daemon.alive()
        finally:
            tun.client.stop()
        assert len(indexes) == 2, indexes  # a new ifindex each time
        assert others(lab, ["wan-a", "wan-b", "wan-c"], (101, 102, 103)) == before
        assert "Traceback" not in daemon.log()


def _index(lab: Lab) -> int | None:
    """tun0's ifindex in the router (None: no tun0)."""
    done = netns.run_in(lab.router, ["ip", "-j", "link", "show", "tun0"], capture_output=True)
    if done.returncode != 0:
        return None
    links = json.loads(done.stdout or "[]")
    return int(links[0]["ifindex"]) if links else None


def test_a_foreign_object_on_an_id_is_named_counted_and_the_rest_applied(
    lab: Lab, tmp_path: Path
) -> None:
    """All uplinks down (the group goes), a foreign nexthop takes the group's id: ecmpd
    reports the conflict in its status and metrics, routes nothing through it, keeps
    every uplink's own objects right, and takes the id back once it is free."""
    port = 19474
    config = write_lab_config(
        lab,
        tmp_path / "c.yaml",
        extra={
            "balancer": {"when_all_down": "main"},
            "metrics": {"listen": f"127.0.0.1:{port}"},
        },
    )
    group = nexthop_id(200)
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: group_members(lab) == ALL, 10, "every uplink in the group")
        for isp in lab.isps:
            netns.run_in(lab.router, ["ip", "link", "set", isp.uplink_if, "down"], check=True)
        wait_for(lambda: not group_members(lab), FOLLOW, "the group gone with its members")
        # The kernel drops the group at once; the daemon hears the three carriers one by
        # one. Taken before it heard them all, the id would meet a reconcile that still
        # balances over the last one, and the next (all down) would forget the conflict.
        down = {DisplayState.DOWN}
        wait_for(lambda: {u.state for u in daemon.uplinks().values()} == down, FOLLOW, "all down")
        netns.run_in(lab.router, ["ip", "nexthop", "add", "id", str(group), "blackhole"],
                     check=True)  # fmt: skip
        for isp in lab.isps:
            netns.run_in(lab.router, ["ip", "link", "set", isp.uplink_if, "up"], check=True)

        def named() -> bool:
            refused = daemon.status().refused or ()
            return any(r.kind == "conflict" and f"id {group} " in r.op for r in refused)

        wait_for(named, rejoin_bound(), "the conflict in the status")
        status = daemon.status()
        kinds = {(r.kind.value, r.uplink) for r in status.refused or ()}
        assert ("held", None) in kinds  # the balanced route is not sent through it
        assert status.daemon is not None and status.daemon.refusals >= 1
        # Each uplink's own objects are right: nexthops re-created after the carrier.
        uplinks = [nexthop_id(table) for table in (101, 102, 103)]
        wait_for(lambda: all(has_nexthop(lab, n) for n in uplinks), FOLLOW, "uplink nexthops")
        text = scrape_text(lab.router, port)
        assert 'ecmpd_kernel_refused_ops{kind="conflict",uplink=""} 1.0' in text, text
        assert "ecmpd_kernel_refusals_total" in text

        netns.run_in(lab.router, ["ip", "nexthop", "del", "id", str(group)], check=True)
        # Retried on its backoff (RETRY_MAX_S at worst; here a few seconds).
        wait_for(lambda: group_members(lab) == ALL, 20, "ecmpd's group back")
        wait_for(lambda: not daemon.status().refused, FOLLOW, "nothing refused any more")
        daemon.alive()

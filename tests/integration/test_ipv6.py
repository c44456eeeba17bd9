"""IPv6 dual-stack in the lab: apply, split, explain, foreign objects, per-family health."""

from __future__ import annotations

import json
import random
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecmpd.config import CheckConfig
from ecmpd.explain import Flow
from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.netlink import open_iproute
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import LAN_HOST6, Lab
from ecmpd.lab.topology import isp_link_down, isp_link_up, lab_session
from ecmpd.lab.wait import wait_for
from ecmpd.model import Family, nexthop_id
from ecmpd.status import FamilyStatus
from tests.integration.fixtures.daemon import DaemonProc, running_daemon
from tests.integration.fixtures.kernelstate import ecmpd, explain_all, ip_json, ip_route_get
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

ALL = {"isp-a", "isp-b", "isp-c"}
DUAL_STACK_LAB = pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
PIN_C6 = IPv6Network("2001:db8:100::8/125")
RULES = [
    {"name": "local", "action": "bypass"},
    # The LAN's prefix is isp-a's delegation: source-specific routing, no NAT66.
    {
        "name": "lan6",
        "from": str(LAN_HOST6.network),
        "action": "pin",
        "uplink": "isp-a",
        "strict": True,
    },
    {"name": "pin-c6", "to": str(PIN_C6), "action": "pin", "uplink": "isp-c"},
    {"name": "everything-else", "action": "balance"},
]


@dataclass(frozen=True)
class Applied:
    lab: Lab
    config: Path
    run: Path
    first: dict[str, Any]


def _apply(lab: Lab, config: Path, run: Path) -> dict[str, Any]:
    r = ecmpd(lab.router, config, run, "apply", "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    """A dual-stack lab (isp-b by its link-local gateway) with a LAN, ecmpd applied."""
    require_netns()
    workdir = tmp_path_factory.mktemp("lab6")
    with lab_session(workdir=workdir, isps=3, lan=True, prefix=next_lab_prefix(), ipv6=True) as lab:
        # Host mode: forwarding by hand, to look up forwarded flows too.
        netns.write_sysctls(lab.router, {"net.ipv6.conf.all.forwarding": "1"})
        config = write_lab_config(
            lab,
            workdir / "dual.yaml",
            ipv6=True,
            link_local=["isp-b"],
            extra={"mode": "host", "rules": RULES},
        )
        first = _apply(lab, config, workdir / "run")
        yield Applied(lab, config, workdir / "run", first)


def _flows(lab: Lab, n: int, seed: int = 11) -> list[Flow]:
    rng = random.Random(seed)
    sources = [isp.address6.ip for isp in lab.isps if isp.address6 is not None]
    dsts = [*lab.servers6, *(isp.gateway6 for isp in lab.isps if isp.gateway6 is not None)]
    flows = []
    for _ in range(n):
        kind = rng.random()
        src: IPv6Address | None = None
        iif = None
        if kind < 0.2:
            src = rng.choice(sources)
        elif kind < 0.4:
            src, iif = LAN_HOST6.ip + rng.randint(0, 1000), "lan0"
        flows.append(
            Flow(
                dst=rng.choice(dsts),
                src=src,
                iif=iif,
                ip_proto=rng.choice((6, 17)),
                sport=rng.randint(1024, 65535),
                dport=rng.randint(1, 65535),
            )
        )
    return flows


def _expected(lab: Lab, f: Flow) -> tuple[str, str]:
    """(rule, uplink) by the config's semantics, independent of ecmpd's code."""
    by_source: dict[IPv4Address | IPv6Address | None, str] = {
        isp.address6.ip: isp.name for isp in lab.isps if isp.address6 is not None
    }
    if f.src in by_source and f.iif is None:
        return f"reply:{by_source[f.src]}", by_source[f.src]
    for isp in lab.isps:
        if isp.address6 is not None and f.dst in isp.address6.network:
            return "local", isp.name
    if f.src is not None and f.src in LAN_HOST6.network:
        return "lan6", "isp-a"
    if f.dst in PIN_C6:
        return "pin-c6", "isp-c"
    return "everything-else", "*"


# --- apply --------------------------------------------------------------------------


def test_apply_builds_both_families_and_reapply_changes_nothing(applied: Applied) -> None:
    lab = applied.lab
    assert applied.first["changes"] > 0
    assert group_members(lab) == group_members(lab, Family.INET6) == ALL
    nexthops = {n["id"]: n for n in ip_json(lab.router, "-d", "nexthop", "show")}
    # isp-b's IPv6 gateway is link-local: its nexthop names the device.
    assert (
        nexthops[nexthop_id(102, Family.INET6)]["gateway"],
        nexthops[nexthop_id(102, Family.INET6)]["dev"],
    ) == (
        "fe80::1",
        "wan-b",
    )
    rules6 = ip_json(lab.router, "-6", "rule", "show")
    ours = [r for r in rules6 if r.get("protocol") in ("236", 236)]
    # Reply rules: from each uplink's source6 to its table, first of ecmpd's rules with a
    # source. Its connection-mark rule shares the priority (the rule key is (family,
    # priority, fwmark)), so the source is what tells them apart.
    sourced = [r for r in ours if r.get("src", "all") != "all"]
    assert all("fwmark" not in r for r in sourced[:3]), sourced[:3]
    assert [(r["priority"], r["src"], r["table"]) for r in sourced[:3]] == [
        (10000, "2001:db8:1::2", "101"),
        (10001, "2001:db8:2::2", "102"),
        (10002, "2001:db8:3::2", "103"),
    ]
    # Each uplink's marked connections look up its table at its reply rule's priority.
    marked = {(r["priority"], r["table"]) for r in ours if "fwmark" in r}
    assert {(10000, "101"), (10001, "102"), (10002, "103")} <= marked, marked
    assert any(r.get("suppress_prefixlen") == 0 for r in ours), ours
    assert netns.read_sysctl(lab.router, "net.ipv6.fib_multipath_hash_policy") == "1"
    # Idempotent: IPv6 metrics, scopes and reject routes read back as desired.
    again = _apply(lab, applied.config, applied.run)
    assert again == {"changes": 0, "ops": []}
    plan = ecmpd(lab.router, applied.config, applied.run, "plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout) == {"changes": 0, "ops": []}


def test_status_without_a_daemon_shows_both_families(applied: Applied) -> None:
    r = ecmpd(applied.lab.router, applied.config, applied.run, "status", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for uplink in doc["uplinks"]:
        assert {k: f["in_balancer"] for k, f in uplink["families"].items()} == {
            "ipv4": True,
            "ipv6": True,
        }
    assert doc["uplinks"][1]["gateway6"] == "fe80::1"
    assert set(doc["balancer"]["groups"]) == {"ipv4", "ipv6"}
    assert {r["family"] for r in doc["rules"] if r["priority"] == 10100} == {"ipv4", "ipv6"}
    human = ecmpd(applied.lab.router, applied.config, applied.run, "status")
    assert "ip -6 rule" in human.stdout, human.stdout


def test_ipv6_traffic_leaves_by_each_uplink_table(applied: Applied) -> None:
    """An echo from each uplink's source reaches a server through that uplink."""
    lab = applied.lab
    for isp in lab.isps:
        assert isp.address6 is not None
        r = netns.run_in(
            lab.router,
            ["ip", "-6", "-j", "route", "get", str(lab.servers6[0]), "from", str(isp.address6.ip)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(r.stdout)[0]["dev"] == isp.uplink_if
        assert _echo6(lab.router, lab.servers6[0], isp.address6.ip) == 3


def _echo6(ns: str, dst: IPv6Address, src: IPv6Address, count: int = 3) -> int:
    """ICMPv6 echoes from src to dst inside a namespace; returns the replies."""
    sock = netns.socket_in(ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with sock:
        sock.bind((str(src), 0))
        sock.settimeout(2.0)
        for seq in range(count):
            # The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
            sock.sendto(bytes([128, 0, 0, 0, 0x12, 0x34, 0, seq]), (str(dst), 0))
        replies: set[int] = set()
        while len(replies) < count:
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                break
            if data[0] == 129 and data[4:6] == b"\x12\x34" and peer[0] == str(dst):
                replies.add(data[7])
    return len(replies)


# --- split and explain -----------------------------------------------------------------


def test_new_ipv6_flows_split_by_weight_within_two_points(applied: Applied) -> None:
    lab = applied.lab
    rng = random.Random(5)
    balanced = [s for s in lab.servers6 if s not in PIN_C6]
    flows = {
        (rng.choice(balanced), rng.choice((6, 17)), rng.randint(1024, 65535), rng.randint(1, 65535))
        for _ in range(21000)
    }
    assert len(flows) >= 20000

    def lookup() -> Counter[int]:
        ipr = open_iproute()
        try:
            counts: Counter[int] = Counter()
            for dst, proto, sport, dport in flows:
                answer = nl.route_get(ipr, dst, ip_proto=proto, sport=sport, dport=dport)
                counts[answer.ifindex or 0] += 1
            return counts
        finally:
            ipr.close()

    by_index = netns.call_in(lab.router, lookup)
    index = {link["ifindex"]: link["ifname"] for link in ip_json(lab.router, "link", "show")}
    by_if = {index[i]: n for i, n in by_index.items()}
    total = sum(by_if.values())
    weights = sum(isp.weight for isp in lab.isps)
    for isp in lab.isps:
        share = by_if.get(isp.uplink_if, 0) / total
        assert abs(share - isp.weight / weights) < 0.02, (isp.name, by_if)


def test_explain_agrees_with_ip_route_get_for_every_ipv6_flow(applied: Applied) -> None:
    flows = _flows(applied.lab, 1000)
    kernel = ip_route_get(applied.lab.router, flows)
    explained = explain_all(applied.lab.router, applied.config, flows)
    for flow, ip, ours in zip(flows, kernel, explained, strict=True):
        assert (ours["interface"], ours["gateway"]) == (ip["dev"], ip.get("gateway")), flow
        rule, uplink = _expected(applied.lab, flow)
        assert ours["rule"] == rule, (flow, ours)
        if uplink != "*":
            assert ours["uplink"] == uplink, flow
    assert {e["uplink"] for e in explained} == ALL
    assert sum(f.iif is not None for f in flows) > 150


def test_explain_cli_for_ipv6(applied: Applied, tmp_path: Path) -> None:
    lab = applied.lab
    r = ecmpd(
        lab.router,
        applied.config,
        tmp_path,
        "explain",
        "2001:db8:100::9",
        "--proto",
        "tcp",
        "--sport",
        "40000",
        "--dport",
        "443",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["uplink"], doc["rule"], doc["interface"]) == ("isp-c", "pin-c6", "wan-c")
    human = ecmpd(
        lab.router,
        applied.config,
        tmp_path,
        "explain",
        str(lab.servers6[0]),
        "--from",
        str(LAN_HOST6.ip),
        "--iif",
        "lan0",
        "--proto",
        "udp",
        "--sport",
        "5000",
        "--dport",
        "53",
    )
    assert "leaves by isp-a (wan-a via 2001:db8:1::1)" in human.stdout, human.stdout
    assert "rule lan6" in human.stdout
    assert f"[{LAN_HOST6.ip}]:5000" in human.stdout


# --- foreign objects -------------------------------------------------------------------


def _foreign6(ns: str) -> dict[str, Any]:
    """Every IPv6 rule, route and nexthop not carrying ecmpd's protocol id."""
    mine = ("236", 236)
    routes = [
        r
        for r in ip_json(ns, "-6", "route", "show", "table", "all")
        if r.get("protocol") not in mine
        and not (r.get("protocol") == "kernel" and str(r.get("dst", "")).startswith("fe80:"))
    ]
    for r in routes:
        r.pop("flags", None)
    return {
        "rules": [r for r in ip_json(ns, "-6", "rule", "show") if r.get("protocol") not in mine],
        "routes": sorted(routes, key=json.dumps),
        "nexthops": [n for n in ip_json(ns, "nexthop", "show") if n.get("protocol") not in mine],
    }


@DUAL_STACK_LAB
def test_foreign_ipv6_rules_routes_and_nexthops_are_never_touched(lab: Lab, tmp_path: Path) -> None:
    ns = lab.router
    for argv in (
        [
            "ip",
            "-6",
            "rule",
            "add",
            "priority",
            "500",
            "from",
            "2001:db8:999::/64",
            "lookup",
            "300",
        ],
        [
            "ip",
            "-6",
            "rule",
            "add",
            "priority",
            "20500",
            "to",
            "2001:db8:998::/64",
            "lookup",
            "main",
        ],
        ["ip", "-6", "route", "add", "2001:db8:999::/64", "dev", "wan-a", "table", "300"],
        ["ip", "-6", "route", "add", "2001:db8:998::/64", "via", "2001:db8:1::1"],
        ["ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "wan-c", "metric", "2000"],
        ["ip", "-6", "nexthop", "add", "id", "77", "via", "2001:db8:2::1", "dev", "wan-b"],
    ):
        netns.run_in(ns, argv, check=True, capture_output=True)
    before = _foreign6(ns)
    original = netns.read_sysctl(ns, "net.ipv6.fib_multipath_hash_policy")
    config = write_lab_config(lab, tmp_path / "dual.yaml", ipv6=True)
    run = tmp_path / "run"
    assert _apply(lab, config, run)["changes"] > 0
    assert _foreign6(ns) == before
    assert netns.read_sysctl(ns, "net.ipv6.fib_multipath_hash_policy") == "1" != original
    r = ecmpd(ns, config, run, "down")
    assert r.returncode == 0, r.stderr
    assert _foreign6(ns) == before
    assert netns.read_sysctl(ns, "net.ipv6.fib_multipath_hash_policy") == original
    left = [r for r in ip_json(ns, "-6", "rule", "show") if r.get("protocol") in ("236", 236)]
    assert left == []
    assert not [n for n in ip_json(ns, "nexthop", "show") if n.get("protocol") in ("236", 236)]


# --- the daemon: health per family --------------------------------------------------------


def _family(daemon: DaemonProc, name: str, family: str) -> FamilyStatus:
    return daemon.uplink(name).families[family]


def _all_up(daemon: DaemonProc) -> bool:
    return all(f.health == "up" for u in daemon.status().uplinks for f in u.families.values())


@DUAL_STACK_LAB
def test_an_ipv6_gray_failure_leaves_only_the_ipv6_group_and_recovers(
    lab: Lab, tmp_path: Path
) -> None:
    config = write_lab_config(lab, tmp_path / "dual.yaml", ipv6=True, link_local=["isp-c"])
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: _all_up(daemon), 5, "every family up")
        assert group_members(lab) == group_members(lab, Family.INET6) == ALL
        gray_failure(lab.ns("isp-b"), Family.INET6)
        v4_members: list[frozenset[str]] = []

        def ipv6_left() -> bool:
            v4_members.append(group_members(lab))
            return group_members(lab, Family.INET6) == ALL - {"isp-b"}

        took = wait_for(ipv6_left, 3, "isp-b out of the IPv6 group")
        assert took < 1.5, took  # as IPv4: the default check's bound is 0.85 s
        assert took <= detection_time(CheckConfig()) + 0.5, took
        assert all(m == ALL for m in v4_members)  # IPv4 never noticed
        uplink = daemon.uplink("isp-b")
        assert (uplink.families["ipv6"].state, uplink.families["ipv4"].state) == (
            "down",
            "up",
        )
        assert uplink.families["ipv6"].in_balancer is False
        assert uplink.families["ipv4"].in_balancer is True
        assert (uplink.state, uplink.degraded) == ("up", True)
        assert any(t.target == "2001:db8:100::1" for t in uplink.targets)
        # `ecmpd watch` shows the degraded uplink's families apart.
        frame = ecmpd(
            lab.router, config, tmp_path / "run", "watch", "--once", env={"COLUMNS": "160"}
        )
        assert frame.returncode == 0, frame.stderr
        row = next(line for line in frame.stdout.splitlines() if " isp-b " in line)
        assert "v4 ● up · v6 ● down" in row, frame.stdout
        heal(lab.ns("isp-b"))
        back = wait_for(lambda: group_members(lab, Family.INET6) == ALL, 5, "isp-b back in IPv6")
        assert back < recovery_time(CheckConfig()) + 1.0, back
        assert _family(daemon, "isp-b", "ipv6").state == "up"
        assert group_members(lab) == ALL
        # isp-c probes its link-local gateway through the device, and is up.
        assert _family(daemon, "isp-c", "ipv6").targets[0].target == "fe80::1"
        assert daemon.uplink("isp-a").transitions == 2  # unknown -> up, once per family


@DUAL_STACK_LAB
def test_carrier_loss_takes_both_families_out_at_once(lab: Lab, tmp_path: Path) -> None:
    config = write_lab_config(lab, tmp_path / "dual.yaml", ipv6=True)
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: _all_up(daemon), 5, "every family up")
        isp_link_down(lab, "isp-c")
        wait_for(
            lambda: group_members(lab) == group_members(lab, Family.INET6) == ALL - {"isp-c"},
            2,
            "isp-c out of both groups",
        )
        assert {f.state for f in daemon.uplink("isp-c").families.values()} == {"down"}
        isp_link_up(lab, "isp-c")
        wait_for(
            lambda: group_members(lab) == group_members(lab, Family.INET6) == ALL, 5, "isp-c back"
        )


@DUAL_STACK_LAB
def test_an_ipv6_only_uplink_beside_ipv4_ones(lab: Lab, tmp_path: Path) -> None:
    config = write_lab_config(lab, tmp_path / "mixed.yaml", ipv6=True)
    # isp-c carries IPv6 alone: no IPv4 gateway, source or targets.
    data = yaml.safe_load(config.read_text())
    isp_c = data["uplinks"][2]
    for key in ("gateway", "source"):
        del isp_c[key]
    isp_c["check"]["targets"] = [t for t in isp_c["check"]["targets"] if ":" in t]
    config.write_text(yaml.safe_dump(data))
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: _all_up(daemon), 5, "every family up")
        assert group_members(lab) == {"isp-a", "isp-b"}
        assert group_members(lab, Family.INET6) == ALL
        assert set(daemon.uplink("isp-c").families) == {"ipv6"}
        assert daemon.uplink("isp-c").state == "up"


@pytest.mark.parametrize("lab", [{"ipv6": True, "lan": True}], indirect=True)
def test_explain_says_when_linux_cannot_tell_a_forwarded_ipv6_flows_uplink(
    lab: Lab, tmp_path: Path
) -> None:
    """Router mode's custom hash: IPv6 route lookups skip a step forwarding takes."""
    config = write_lab_config(lab, tmp_path / "router.yaml", ipv6=True)
    run = tmp_path / "run"
    _apply(lab, config, run)

    def explain(dst: str, src: str) -> dict[str, Any]:
        r = ecmpd(
            lab.router,
            config,
            run,
            "explain",
            dst,
            "--from",
            src,
            "--iif",
            "lan0",
            "--proto",
            "tcp",
            "--sport",
            "40000",
            "--dport",
            "443",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        answer: dict[str, Any] = json.loads(r.stdout)
        return answer

    v6 = explain(str(lab.servers6[0]), str(LAN_HOST6.ip))
    assert (v6["rule"], v6["uplink"], v6["candidates"]) == ("everything-else", None, sorted(ALL)), (
        v6
    )
    assert v6["kernel_lookup_uplink"] in ALL  # what `ip -6 route get` says, not to be trusted
    text = ecmpd(
        lab.router,
        config,
        run,
        "explain",
        str(lab.servers6[0]),
        "--from",
        str(LAN_HOST6.ip),
        "--iif",
        "lan0",
    ).stdout
    assert "leaves by one of isp-a, isp-b, isp-c" in text and "cannot say which" in text
    # IPv4 builds a packet for its lookup: the kernel's answer is the forwarding's.
    v4 = explain(str(lab.servers[0]), "10.200.1.7")
    assert v4["uplink"] in ALL and v4["candidates"] == []

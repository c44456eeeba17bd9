"""The status contract: the display-state rule, both builders, the JSON both ways."""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import replace
from ipaddress import IPv4Address, ip_address, ip_interface
from typing import Any

import pytest

from ecmpd.config import parse_config
from ecmpd.desired import desired_state
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.fsm import HealthState
from ecmpd.health.window import TargetStats
from ecmpd.kernel.mptcpdiag import Subflow
from ecmpd.model import Family, nexthop_id
from ecmpd.status import (
    Clock,
    DaemonCounters,
    DisplayState,
    FamilyReport,
    MptcpFamilyStatus,
    MptcpStatus,
    Status,
    UplinkReport,
    daemon_status,
    display_state,
    kernel_status,
    with_mptcp,
)

CONFIG = parse_config(
    textwrap.dedent(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: 2001:db8:1::1}
          - {name: isp-b, interface: wan-b, gateway: dhcp, weight: 2}
        rules:
          - {name: everything-else, action: balance}
        """
    ),
    "ecmpd.yaml",
)
FACTS = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a", 11, addresses=(ip_interface("10.1.0.2/24"), ip_interface("2001:db8:1::2/64"))
        ),
        "wan-b": InterfaceFacts(
            "wan-b",
            12,
            carrier=False,
            addresses=(ip_interface("10.2.0.2/24"),),
            dhcp_gateway=IPv4Address("10.2.0.1"),
        ),
    }
)
# The kernel as `apply` leaves it with isp-b out (it has no carrier).
OBSERVED = desired_state(CONFIG, {"isp-b": False}, FACTS)
CLOCK = Clock(monotonic=1000.0, wall=1_700_000_000.0)
STATS = TargetStats(IPv4Address("10.1.0.1"), 0.0015, 0.002, 0.25, 40, 30)


def report(state: HealthState, *, probed: bool = True, carrier: bool = True) -> FamilyReport:
    return FamilyReport(
        state=state,
        since=990.0,
        reason="because",
        transitions=3,
        targets=(STATS,) if probed else (),
        carrier=carrier,
    )


def daemon_view(drained: frozenset[str] = frozenset()) -> Status:
    reports = [
        UplinkReport(
            CONFIG.uplink("isp-a"),
            {Family.INET: report(HealthState.UP), Family.INET6: report(HealthState.DOWN)},
        ),
        UplinkReport(
            CONFIG.uplink("isp-b"), {Family.INET: report(HealthState.DOWN, carrier=False)}
        ),
    ]
    counters = DaemonCounters(pid=7, uptime_s=60.0, reconciles=2, ops=9, failures=0, resyncs=1)
    # isp-a's IPv6 left its group (the only member: the group went with it).
    groups = frozenset(g for g in OBSERVED.groups if g.id != nexthop_id(200, Family.INET6))
    observed = replace(OBSERVED, groups=groups)
    return daemon_status(200, reports, observed, FACTS, drained, counters, CLOCK)


@pytest.mark.parametrize(
    ("drained", "health", "in_balancer", "applied"),
    list(itertools.product((False, True), (None, *HealthState), (False, True), (False, True))),
)
def test_one_display_state_rule(
    drained: bool, health: HealthState | None, in_balancer: bool, applied: bool
) -> None:
    shown = display_state(drained=drained, health=health, in_balancer=in_balancer, applied=applied)
    if drained:
        expected = DisplayState.DRAINED
    elif health is None:  # the kernel's view: what the groups hold
        expected = (
            DisplayState.UP
            if in_balancer
            else DisplayState.DOWN
            if applied
            else DisplayState.UNKNOWN
        )
    else:  # the daemon's: health alone (falling still carries, rising not yet)
        expected = {
            HealthState.UNKNOWN: DisplayState.UNKNOWN,
            HealthState.UP: DisplayState.UP,
            HealthState.FALLING: DisplayState.UP,
            HealthState.DOWN: DisplayState.DOWN,
            HealthState.RISING: DisplayState.DOWN,
        }[health]
    assert shown is expected


# The keys scripts and tests read before the status became a type (contract: the
# spec's `status --json`); every one of them is still there.
DAEMON_UPLINK_KEYS = {
    "name", "interface", "state", "health", "since", "for_s", "reason", "in_balancer",
    "detection_time_s", "weight", "table", "carrier", "transitions", "targets", "degraded",
    "families", "tier", "metered",
}  # fmt: skip
DAEMON_FAMILY_KEYS = {
    "state", "health", "since", "for_s", "reason", "in_balancer", "transitions",
    "detection_time_s", "targets",
}  # fmt: skip
KERNEL_UPLINK_KEYS = {
    "name", "interface", "state", "weight", "in_balancer", "table", "gateway", "gateway6",
    "carrier", "families", "tier", "metered",
}  # fmt: skip
TARGET_KEYS = {"target", "rtt_ms", "rtt_avg_ms", "loss", "sent", "received"}


def test_the_daemon_view_as_json() -> None:
    doc: dict[str, Any] = daemon_view().to_json()
    assert doc["source"] == "daemon"
    assert doc["daemon"] == {
        "pid": 7, "uptime_s": 60.0, "reconciles": 2, "ops": 9, "failures": 0, "resyncs": 1,
        "refusals": 0,
    }  # fmt: skip
    assert "rules" not in doc and "balancer" not in doc  # the kernel's view only
    assert doc["refused"] == []
    a, b = doc["uplinks"]
    assert set(a) == DAEMON_UPLINK_KEYS | {"gateway", "gateway6"}
    assert set(a["families"]["ipv4"]) == DAEMON_FAMILY_KEYS | {"weight"}
    assert set(a["targets"][0]) == TARGET_KEYS
    # The top level is IPv4's; transitions and targets add up every family's.
    assert (a["state"], a["health"], a["in_balancer"], a["degraded"]) == ("up", "up", True, True)
    assert a["families"]["ipv6"]["state"] == "down"
    assert (a["transitions"], len(a["targets"])) == (6, 2)
    assert (a["since"], a["for_s"]) == (1_700_000_000.0 - 10.0, 10.0)
    assert a["targets"][0] == {
        "target": "10.1.0.1", "rtt_ms": 1.5, "rtt_avg_ms": 2.0, "loss": 0.25, "sent": 40,
        "received": 30,
    }  # fmt: skip
    assert (b["state"], b["carrier"], b["gateway"], b["weight"]) == (
        "down", False, "dhcp (10.2.0.1)", 2,
    )  # fmt: skip
    assert (b["in_balancer"], b["degraded"], list(b["families"])) == (False, False, ["ipv4"])


def test_drained_shows_whatever_the_health() -> None:
    status = daemon_view(frozenset({"isp-a"}))
    assert {f.state for f in status.uplink("isp-a").families.values()} == {DisplayState.DRAINED}
    assert status.uplink("isp-a").health is HealthState.UP
    assert status.uplink("isp-b").state is DisplayState.DOWN


@pytest.mark.parametrize("source", ["daemon", "kernel"])
def test_an_uplink_without_its_interface_has_no_carrier(source: str) -> None:
    """Not `true`: the daemon's trackers assume a carrier until told, the status does not."""
    facts = KernelFacts(interfaces={"wan-a": FACTS.interfaces["wan-a"]})  # no wan-b yet
    held = replace(report(HealthState.DOWN, probed=False), held="no interface wan-b")
    reports = [
        UplinkReport(CONFIG.uplink("isp-a"), {Family.INET: report(HealthState.UP)}),
        UplinkReport(CONFIG.uplink("isp-b"), {Family.INET: held}),
    ]
    counters = DaemonCounters(pid=7, uptime_s=1.0)
    status = (
        daemon_status(200, reports, OBSERVED, facts, (), counters, CLOCK)
        if source == "daemon"
        else kernel_status(CONFIG, OBSERVED, facts, ())
    )
    assert status.uplink("isp-b").carrier is None
    assert status.to_json()["uplinks"][1]["carrier"] is None  # type: ignore[index]
    assert status.uplink("isp-a").carrier is True


def test_the_kernel_view_as_json() -> None:
    status = kernel_status(CONFIG, OBSERVED, FACTS, desired_state(CONFIG, {}, FACTS).rule_names)
    doc: dict[str, Any] = status.to_json()
    assert doc["source"] == "kernel" and "daemon" not in doc
    a, b = doc["uplinks"]
    assert set(a) == KERNEL_UPLINK_KEYS
    assert set(a["families"]["ipv4"]) == {"state", "weight", "in_balancer", "targets"}
    assert (a["state"], a["in_balancer"], a["weight"]) == ("up", True, 1)
    assert set(a["families"]) == {"ipv4", "ipv6"}
    # isp-b has no carrier: no nexthop, so nothing says whether it is up.
    assert (b["state"], b["in_balancer"], b["carrier"]) == ("unknown", False, False)
    assert doc["balancer"] == {
        "table": 200,
        "group": nexthop_id(200),
        "type": "resilient",
        "groups": {
            "ipv4": {"group": nexthop_id(200), "type": "resilient"},
            "ipv6": {"group": nexthop_id(200, Family.INET6), "type": "resilient"},
        },
    }
    assert [(r["name"], r["family"]) for r in doc["rules"]] == [
        ("reply:isp-a", "ipv4"),
        ("conn:isp-a", "ipv4"),
        ("conn:probe", "ipv4"),
        ("reply:isp-a", "ipv6"),
        ("conn:isp-a", "ipv6"),
        ("conn:probe", "ipv6"),
        ("reply:isp-b", "ipv4"),
        ("conn:isp-b", "ipv4"),
        ("everything-else", "ipv4"),
        ("everything-else", "ipv6"),
    ]


def test_the_kernel_view_says_down_for_a_nexthop_out_of_its_group() -> None:
    carrier = {**FACTS.interfaces, "wan-b": InterfaceFacts("wan-b", 12, carrier=True,
               addresses=FACTS.interfaces["wan-b"].addresses,
               dhcp_gateway=IPv4Address("10.2.0.1"))}  # fmt: skip
    facts = KernelFacts(interfaces=carrier)
    observed = desired_state(CONFIG, {"isp-b": False}, facts)
    status = kernel_status(CONFIG, observed, facts, ())
    assert status.uplink("isp-b").state is DisplayState.DOWN
    assert status.uplink("isp-a").state is DisplayState.UP


@pytest.mark.parametrize("source", ["daemon", "kernel"])
def test_json_reads_back_as_the_same_status(source: str) -> None:
    status = (
        daemon_view()
        if source == "daemon"
        else kernel_status(CONFIG, OBSERVED, FACTS, desired_state(CONFIG, {}, FACTS).rule_names)
    )
    assert Status.from_json(status.to_json()) == status


def test_a_document_without_families_reads_as_ipv4() -> None:
    old = {
        "source": "daemon",
        "uplinks": [
            {"name": "a", "interface": "eth0", "state": "down", "weight": 3, "in_balancer": False,
             "table": 101, "health": "rising"}
        ],
    }  # fmt: skip
    uplink = Status.from_json(old).uplink("a")
    assert list(uplink.families) == ["ipv4"]
    assert (uplink.state, uplink.weight, uplink.health) == ("down", 3, HealthState.RISING)


def test_a_bad_document_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="interface"):
        Status.from_json({"source": "daemon", "uplinks": [{"name": "a", "families": {}}]})
    with pytest.raises(ValueError, match="families"):
        Status.from_json(
            {
                "source": "daemon",
                "uplinks": [{"name": "a", "interface": "e", "table": 1, "families": {}}],
            }
        )


def _sub(token: int, local: str, backup: bool = False) -> Subflow:
    return Subflow(token, ip_address(local), IPv4Address("198.51.100.1"), 40000, 443, 0xC0,
                   backup, True, 0, 0, 0)  # fmt: skip


def test_mptcp_figures_count_connections_and_subflows_per_uplink() -> None:
    config = CONFIG.model_copy(update={"mptcp": True})
    observed = desired_state(config, {}, FACTS, degraded={("isp-a", Family.INET6)})
    subflows = [
        _sub(1, "10.1.0.2"),  # connection 1: first subflow on isp-a
        _sub(1, "10.2.0.2"),  # ... and one on isp-b
        _sub(2, "2001:db8:1::2"),  # connection 2: IPv6, isp-a only
        _sub(3, "192.0.2.9"),  # not an uplink's address: counted nowhere
    ]
    status = with_mptcp(
        kernel_status(config, observed, FACTS, ()), config, observed, FACTS, subflows
    )
    a, b = (status.uplink(n).mptcp for n in ("isp-a", "isp-b"))
    assert a == MptcpStatus(
        endpoints=("10.1.0.2", "2001:db8:1::2"), backup=True, connections=2, subflows=2,
        families={
            "ipv4": MptcpFamilyStatus(endpoint="10.1.0.2", connections=1, subflows=1),
            # Degraded in IPv6 only: that family's endpoint alone is backup.
            "ipv6": MptcpFamilyStatus(
                endpoint="2001:db8:1::2", backup=True, connections=1, subflows=1
            ),
        },
    )  # fmt: skip
    # isp-b has no carrier, so no endpoint, yet a subflow still leaves from its address.
    assert b == MptcpStatus(
        endpoints=(), backup=False, connections=1, subflows=1,
        families={"ipv4": MptcpFamilyStatus(connections=1, subflows=1)},
    )  # fmt: skip
    assert status.to_json()["uplinks"][0]["mptcp"]["connections"] == 2  # type: ignore[index]
    assert Status.from_json(status.to_json()) == status
    # Without `mptcp` the key is absent.
    assert "mptcp" not in kernel_status(CONFIG, OBSERVED, FACTS, ()).to_json()["uplinks"][0]  # type: ignore[index]

"""What the unit tests share (no tests here): a hand-made typed status and counters, facts."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_interface
from typing import Any

from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.fsm import HealthState
from ecmpd.kernel.ctmessages import IPS_SEEN_REPLY, Flow
from ecmpd.lab.samples import Conn
from ecmpd.order import Role
from ecmpd.refusals import RefusalKind
from ecmpd.status import (
    DaemonCounters,
    DisplayState,
    FamilyStatus,
    RefusedOp,
    Status,
    TargetStatus,
    UplinkStatus,
)

NOW = 1_700_000_100.0


def family(
    state: str,
    health: str,
    *,
    weight: int = 1,
    since: float = NOW - 42.5,
    transitions: int = 0,
    targets: tuple[TargetStatus, ...] = (),
) -> FamilyStatus:
    """One family's figures of an uplink, as the daemon's status has them."""
    return FamilyStatus(
        state=DisplayState(state),
        health=HealthState(health),
        in_balancer=state == "up",
        weight=weight,
        since=since,
        for_s=41.0,  # stale on purpose: the collector must use `since`
        reason="",
        transitions=transitions,
        detection_time_s=0.85,
        targets=targets,
    )


def uplink(
    name: str,
    interface: str,
    state: str,
    health: str,
    ipv6: FamilyStatus | None = None,
    *,
    weight: int = 1,
    carrier: bool = True,
    transitions: int = 0,
    targets: tuple[TargetStatus, ...] = (),
) -> UplinkStatus:
    """One uplink of a daemon's status: IPv4 as given, dual-stack with `ipv6`."""
    families = {
        "ipv4": family(state, health, weight=weight, transitions=transitions, targets=targets)
    }
    if ipv6 is not None:
        families["ipv6"] = ipv6.model_copy(update={"weight": weight})
    return UplinkStatus(
        name=name, interface=interface, table=101, carrier=carrier, families=families
    )


def target(address: str, rtt_ms: float | None, sent: int, received: int) -> TargetStatus:
    """One probe target's figures (the average is 1.5 times the last RTT)."""
    return TargetStatus(
        target=address,
        rtt_ms=rtt_ms,
        rtt_avg_ms=None if rtt_ms is None else rtt_ms * 1.5,
        loss=round(1 - received / sent, 4),
        sent=sent,
        received=received,
    )


def daemon_view(
    *uplinks: UplinkStatus,
    counters: DaemonCounters | None = None,
    refused: tuple[RefusedOp, ...] | None = None,
) -> Status:
    """A daemon's status of these uplinks."""
    return Status(source="daemon", uplinks=uplinks, daemon=counters, refused=refused)


def refused(kind: str, uplink: str | None) -> RefusedOp:
    """An operation the kernel does not hold."""
    return RefusedOp(
        op="ip nexthop add id 1 via 10.0.0.1 dev wan-a proto 236",
        kind=RefusalKind(kind),
        error="File exists",
        uplink=uplink,
        attempts=2,
        for_s=3.0,
        retry_in_s=1.0,
    )


def _carrying(*args: Any, **kwargs: Any) -> UplinkStatus:
    """An uplink() carrying traffic, with its interface's byte counters."""
    return uplink(*args, **kwargs).model_copy(
        update={"role": Role.CARRYING, "bytes_in": 1000, "bytes_out": 2000}
    )


STATUS = daemon_view(
    # Dual-stack, up in IPv4 and down in IPv6 (its IPv6 target stopped answering).
    _carrying(
        "isp-a",
        "wan-a",
        "up",
        "up",
        weight=2,
        transitions=1,
        targets=(
            target("10.1.0.1", 1.5, 40, 40),
            target("198.51.100.1", None, 40, 0),  # never answered: no rtt sample
        ),
        ipv6=family(
            "down",
            "down",
            since=NOW - 7.25,
            transitions=2,
            targets=(target("2001:db8:1::1", 3.0, 40, 10),),
        ),
    ),
    uplink(
        "isp-b",
        "wan-b",
        "drained",
        "up",
        transitions=3,
        ipv6=family("drained", "rising", transitions=4),
    ).model_copy(update={"role": Role.DRAINED}),
    uplink("lte", "ppp0", "down", "down", carrier=False, transitions=2).model_copy(
        update={
            "tier": 2,
            "metered": True,
            "role": Role.DOWN,
            "bytes_in": 3000,
            "bytes_out": 400,
            "data_cap": 20 * 10**9,
            "data_used": 5 * 10**9,
            "last_resort": False,
        }
    ),
    counters=DaemonCounters(
        pid=1234, uptime_s=60.5, reconciles=5, ops=17, failures=1, resyncs=2, refusals=4
    ),
    refused=(
        refused("conflict", "isp-a"),
        refused("refused", "lte"),
        refused("held", "lte"),
        refused("refused", None),
    ),
)
COUNTERS = {
    "wan-a": {
        "rx_bytes": 1000,
        "rx_packets": 10,
        "rx_errors": 0,
        "rx_dropped": 1,
        "tx_bytes": 2000,
        "tx_packets": 20,
        "tx_errors": 2,
        "tx_dropped": 0,
    },
}


def wan_facts(count: int) -> KernelFacts:
    """Interfaces wan1..wanN (index 10+i), each with 10.i.0.2/24 and 2001:db8:i::2/64."""
    return KernelFacts(
        interfaces={
            f"wan{i}": InterfaceFacts(
                f"wan{i}",
                10 + i,
                addresses=(ip_interface(f"10.{i}.0.2/24"), ip_interface(f"2001:db8:{i}::2/64")),
            )
            for i in range(1, count + 1)
        }
    )


LAN, SERVER, PUBLIC = (
    IPv4Address("10.200.1.1"),
    IPv4Address("198.51.100.1"),
    IPv4Address("10.1.0.2"),
)


def ct_flow(proto: int = 6, status: int = IPS_SEEN_REPLY, **kw: object) -> Flow:
    """A conntrack entry of a LAN client's connection (LAN -> SERVER:443, NATed to PUBLIC)."""
    fields: dict[str, object] = {
        "proto": proto,
        "orig_src": LAN,
        "orig_dst": SERVER,
        "sport": 40000,
        "dport": 443,
        "reply_dst": PUBLIC,
        "ct_id": 1,
        "zone": None,
        "orig_tuple": b"x",
        "reply_src": SERVER,
        "reply_sport": 443,
        "reply_dport": 40000,
        "status": status,
    }
    fields.update(kw)
    return Flow(**fields)  # type: ignore[arg-type]


def traffic_conn(slot: int, serial: int, **more: Any) -> Conn:
    """A connection of the lab's bulk traffic (lab.samples), LAN -> SERVER, opened at 1 s."""
    return Conn(
        slot=slot,
        serial=serial,
        client=LAN,
        server=SERVER,
        sport=40000 + serial,
        opened=1.0,
        lifetime=5.0,
        **more,
    )

"""Schema of one uplink and its health check."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from ecmpd.config.enums import Failback, Mode, OnFailure
from ecmpd.config.fields import (
    Address,
    Bandwidth,
    DataCapField,
    Duration,
    IfName,
    Method,
    Percent,
    ProbeBudget,
    Size,
    Table,
    UplinkName,
    integer_in,
    ipv4_parser,
    ipv6_parser,
    parse_gateway,
    parse_gateway6,
)
from ecmpd.config.section import Section, none_as_empty

MAX_TIER = 16
Rounds = Annotated[int, BeforeValidator(integer_in(1, 100))]


class CheckConfig(Section):
    """How an uplink's health is probed, and when it counts as down or up."""

    targets: tuple[Address, ...] = ()  # empty: the gateway
    method: Method = "icmp"
    # Defaults: a dead uplink leaves service within 0.85 s (health.fsm.detection_time),
    # while 5% random loss on a single target takes it down about once a year of
    # probing (0.05**5 per round) instead of every half hour as with down_after 3.
    interval: Duration = 0.15
    timeout: Duration = 0.25
    down_after: Rounds = 5
    up_after: Rounds = 5
    min_up: Annotated[int, BeforeValidator(integer_in(1, 1000))] = 1
    max_loss: Percent | None = None  # a fraction 0..1
    max_rtt: Duration | None = None
    # Soft limits, below the failure ones: over them the uplink stays in service but is
    # `degraded` (its MPTCP endpoints turn backup). Unset: never degraded.
    degraded_loss: Percent | None = None
    degraded_rtt: Duration | None = None
    # Metered uplinks only: probe bytes per minute (both directions) while standing by.
    standby_budget: ProbeBudget = 1000.0

    @property
    def tcp_port(self) -> int | None:
        """The port of a `tcp:PORT` method, None for icmp."""
        return int(self.method[4:]) if self.method.startswith("tcp:") else None


# The bytes a connection sends first, each way, that `queue` sends ahead of bulk data:
# a handshake, a request, a first flight of data (10 segments are 15 KB). Counted in
# bytes, not packets: a router's GRO merges a bulk sender's segments into packets of up
# to 64 KiB, and 20 of those would be 1.3 MB ahead of everyone.
FIRST_BYTES = 32 * 1024


class QueueConfig(Section):
    """ecmpd's egress queue on the uplink: shaped a little below the line's upload rate, so
    the queue forms here rather than in the modem, with every connection's first bytes
    sent ahead of bulk data (a reconnect after a failover, a handshake, a DNS answer)."""

    rate: Bandwidth  # bits/s; set it a few percent below the line's upload rate
    first_bytes: Size = FIRST_BYTES


class UplinkConfig(Section):
    """One way out: an interface, its gateway(s), its weight and its routing table."""

    name: UplinkName
    interface: IfName
    gateway: Annotated[
        IPv4Address | Literal["dhcp", "bgp"] | None, BeforeValidator(parse_gateway)
    ] = None
    source: Annotated[IPv4Address | None, BeforeValidator(ipv4_parser("source6"))] = None
    gateway6: Annotated[
        IPv6Address | Literal["ra", "bgp"] | None, BeforeValidator(parse_gateway6)
    ] = None
    source6: Annotated[IPv6Address | None, BeforeValidator(ipv6_parser("source"))] = None
    # Always set after loading: derived from `bandwidth` when that was given instead.
    weight: Annotated[int, BeforeValidator(integer_in(1, 256))] = 1
    bandwidth: Bandwidth | None = None  # bits/s
    # Always set after loading; 0 only on a model built by hand, before allocation.
    table: Table = 0
    nat: bool | None = None  # resolved at load: None means "true in router mode"
    # Failover order: the balancer carries the lowest tier with an uplink in service.
    tier: Annotated[int, BeforeValidator(integer_in(1, MAX_TIER))] = 1
    metered: bool = False  # billed by volume: probed sparingly while standing by
    data_cap: DataCapField | None = None  # reached: the uplink becomes the last resort
    # Day of the month (1..31, the month's last day if shorter) or of the week (1 = Monday).
    data_cap_reset_day: Annotated[int, BeforeValidator(integer_in(1, 31))] | None = None
    failback: Failback | None = None  # resolved at load: None means "reset when metered"
    mptcp: bool | None = None  # None: as the global `mptcp`; false opts this uplink out
    on_failure: OnFailure = OnFailure.RESET
    queue: QueueConfig | None = None  # None: the interface's queue is left as it is
    check: Annotated[CheckConfig, BeforeValidator(none_as_empty)] = Field(
        default_factory=CheckConfig
    )

    def failback_mode(self) -> Failback:
        """What happens to this uplink's connections when a lower tier returns."""
        if self.failback is not None:
            return self.failback
        return Failback.RESET if self.metered else Failback.KEEP

    def mptcp_enabled(self, everywhere: bool) -> bool:
        """Whether ecmpd keeps MPTCP endpoints on this uplink (`everywhere`: the global key)."""
        return self.mptcp if self.mptcp is not None else everywhere

    def nat_enabled(self, mode: Mode) -> bool:
        """Whether traffic leaving by this uplink is masqueraded in this mode."""
        return self.nat if self.nat is not None else mode is Mode.ROUTER

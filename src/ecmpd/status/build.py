"""The status' two builders: from the daemon's runtime, and from the kernel alone. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from ecmpd.carrying import carrying, carrying_tiers
from ecmpd.config import Config, UplinkConfig
from ecmpd.connections import rule_name
from ecmpd.export.iptext import op_command, rule_args
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.degraded import Grade
from ecmpd.health.fsm import HealthState, detection_time
from ecmpd.health.window import TargetStats
from ecmpd.kernel.mptcpdiag import Subflow
from ecmpd.model import FAMILY_NAMES, DesiredState, Family, NexthopGroup, nexthop_id
from ecmpd.refusals import Owners, Refusal
from ecmpd.status.types import (
    BalancerStatus,
    DaemonCounters,
    FamilyKey,
    FamilyStatus,
    GroupStatus,
    MptcpFamilyStatus,
    MptcpStatus,
    RefusedOp,
    RuleStatus,
    Status,
    TargetStatus,
    UplinkStatus,
    display_state,
)
from ecmpd.uplinkplan import carries


@dataclass(frozen=True)
class FamilyReport:
    """What the daemon's health tracking knows of one uplink in one family, at one moment."""

    state: HealthState
    since: float  # monotonic seconds
    reason: str
    transitions: int
    targets: tuple[TargetStats, ...]  # empty when the family is not probed (carrier only)
    carrier: bool
    held: str | None = None  # why it cannot be used at all now (no interface, ...)
    grade: Grade | None = None  # against the soft limits; None without any


@dataclass(frozen=True)
class UplinkReport:
    """One uplink as the daemon runs it: its config and each family it carries."""

    config: UplinkConfig
    families: Mapping[Family, FamilyReport]


@dataclass(frozen=True)
class Clock:
    """The two clocks a status is taken at: monotonic (trackers) and wall (`since`)."""

    monotonic: float
    wall: float


def _groups(balancer_table: int, observed: DesiredState) -> dict[Family, NexthopGroup | None]:
    ids = {family: nexthop_id(balancer_table, family) for family in FAMILY_NAMES}
    return {
        family: next((g for g in observed.groups if g.id == gid), None)
        for family, gid in ids.items()
    }


def _learned(iface: InterfaceFacts | None, configured: object, family: Family) -> object:
    """What the kernel taught a `dhcp`/`ra` (a DHCP lease, a router) or `bgp` uplink."""
    if iface is None:
        return None
    v6 = family is Family.INET6
    if configured == "bgp":
        return iface.bgp_gateway6 if v6 else iface.bgp_gateway
    return iface.dhcp_gateway6 if v6 else iface.dhcp_gateway


def _gateway(configured: object, learned: object) -> str | None:
    """The configured gateway; `dhcp`/`ra` with what the kernel learnt, e.g. `ra (fe80::1)`."""
    if configured is None:
        return None
    if configured in ("dhcp", "ra", "bgp"):
        return f"{configured} ({learned or 'none yet'})"
    return str(configured)


def _uplink(
    u: UplinkConfig,
    facts: KernelFacts,
    families: Mapping[FamilyKey, FamilyStatus],
    carrier: bool | None = None,
) -> UplinkStatus:
    """An uplink's entry; `carrier` as the daemon's health heard it, else the kernel's.

    No interface, no carrier to speak of: None, whatever the daemon's trackers assume
    (they start with carrier, so that probing alone decides once the interface comes).
    """
    iface = facts.interfaces.get(u.interface)
    if iface is None:
        carrier = None
    elif carrier is None:
        carrier = iface.carrier
    return UplinkStatus(
        name=u.name,
        interface=u.interface,
        table=u.table,
        carrier=carrier,
        gateway=_gateway(u.gateway, _learned(iface, u.gateway, Family.INET)),
        gateway6=_gateway(u.gateway6, _learned(iface, u.gateway6, Family.INET6)),
        families=families,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _target(s: TargetStats) -> TargetStatus:
    return TargetStatus(
        target=str(s.target),
        rtt_ms=_ms(s.rtt_last),
        rtt_avg_ms=_ms(s.rtt_avg),
        loss=round(s.loss, 4),
        sent=s.sent,
        received=s.received,
    )


def daemon_status(
    balancer_table: int,
    reports: Iterable[UplinkReport],
    observed: DesiredState,
    facts: KernelFacts,
    drained: Collection[str],
    counters: DaemonCounters,
    clock: Clock,
    refused: tuple[RefusedOp, ...] = (),
) -> Status:
    """The status from the daemon's runtime: health per family, membership from the kernel."""
    groups = _groups(balancer_table, observed)
    uplinks = []
    for uplink in reports:
        u = uplink.config
        families: dict[FamilyKey, FamilyStatus] = {}
        for family, report in uplink.families.items():
            group = groups[family]
            in_balancer = group is not None and nexthop_id(u.table, family) in dict(group.members)
            families[FAMILY_NAMES[family]] = FamilyStatus(
                state=display_state(
                    drained=u.name in drained, health=report.state, held=report.held is not None
                ),
                in_balancer=in_balancer,
                weight=u.weight,
                health=report.state,
                since=round(clock.wall - (clock.monotonic - report.since), 3),
                for_s=round(clock.monotonic - report.since, 3),
                reason=report.held or report.reason,
                transitions=report.transitions,
                detection_time_s=round(detection_time(u.check), 3),
                targets=tuple(_target(s) for s in report.targets),
                grade=report.grade,
            )
        heard = [r.carrier for r in uplink.families.values()]
        uplinks.append(_uplink(u, facts, families, carrier=all(heard) if heard else None))
    return Status(source="daemon", uplinks=tuple(uplinks), daemon=counters, refused=refused)


def refused_ops(refusals: Iterable[Refusal], owners: Owners, now: float) -> tuple[RefusedOp, ...]:
    """The refusal book as the status shows it (`now` on the book's clock)."""
    return tuple(
        RefusedOp(
            op=op_command(r.op),
            kind=r.kind,
            error=r.error,
            uplink=owners.of_object(r.op.obj),
            attempts=r.attempts,
            for_s=round(now - r.since, 3),
            retry_in_s=round(max(0.0, r.retry_at - now), 3),
        )
        for r in refusals
    )


def kernel_status(
    config: Config,
    observed: DesiredState,
    facts: KernelFacts,
    rule_names: Iterable[tuple[int, str]],
) -> Status:
    """The status from the kernel alone: membership of each family's group says the state."""
    groups = _groups(config.balancer.table, observed)
    nexthops = {n.id for n in observed.nexthops}
    names = dict(rule_names)
    tiers = carrying_tiers(config, carrying(config, observed, names))
    uplinks = []
    for u in config.uplinks:
        families: dict[FamilyKey, FamilyStatus] = {}
        for family, label in FAMILY_NAMES.items():
            if not carries(u, family):
                continue
            group = groups[family]
            members = dict(group.members) if group else {}
            nhid = nexthop_id(u.table, family)
            # Out of a group that a lower tier fills: standing by, not known to be down.
            lowest = tiers[family]
            standby = lowest is not None and u.tier > lowest
            families[label] = FamilyStatus(
                state=display_state(
                    drained=False,
                    health=None,
                    in_balancer=nhid in members,
                    applied=nhid in nexthops and not standby,
                ),
                in_balancer=nhid in members,
                weight=members.get(nhid, u.weight),
            )
        uplinks.append(_uplink(u, facts, families))
    rules = tuple(
        RuleStatus(
            priority=r.priority,
            name=rule_name(config, r) or names.get(r.priority),
            family=FAMILY_NAMES[r.family],
            rule=rule_args(r),
        )
        for r in sorted(observed.rules, key=lambda r: (r.priority, r.family, r.fwmark or 0))
    )
    v4 = groups[Family.INET]
    balancer = BalancerStatus(
        table=config.balancer.table,
        group=v4.id if v4 else None,
        type=v4.type.value if v4 else None,
        groups={
            FAMILY_NAMES[family]: GroupStatus(group=g.id, type=g.type.value)
            for family, g in groups.items()
            if g is not None
        },
    )
    return Status(source="kernel", uplinks=tuple(uplinks), rules=rules, balancer=balancer)


def with_mptcp(
    status: Status,
    config: Config,
    observed: DesiredState,
    facts: KernelFacts,
    subflows: Iterable[Subflow],
) -> Status:
    """The status with each MPTCP uplink's endpoints, connections and subflows added,
    in all and per family.

    A subflow belongs to the uplink whose interface holds its local address: the first
    subflow of a connection too, which no endpoint opened.
    """
    wanted = {u.name: u for u in config.mptcp_uplinks()}
    subs = list(subflows)
    uplinks = []
    for entry in status.uplinks:
        u = wanted.get(entry.name)
        if u is None:
            uplinks.append(entry)
            continue
        iface = facts.interfaces.get(u.interface)
        own = {a.ip for a in iface.addresses} if iface is not None else set()
        eps = sorted((e for e in observed.endpoints if e.ifname == u.interface), key=str)
        mine = [s for s in subs if s.local in own]
        families = {}
        for family, key in FAMILY_NAMES.items():
            if key not in entry.families:
                continue
            ep = next((e for e in eps if e.family is family), None)
            theirs = [s for s in mine if s.family is family]
            families[key] = MptcpFamilyStatus(
                endpoint=str(ep.address) if ep is not None else None,
                backup=ep is not None and ep.backup,
                connections=len({s.token for s in theirs}),
                subflows=len(theirs),
            )
        mptcp = MptcpStatus(
            endpoints=tuple(str(e.address) for e in eps),
            backup=any(e.backup for e in eps),
            connections=len({s.token for s in mine}),
            subflows=len(mine),
            families=families,
        )
        uplinks.append(entry.model_copy(update={"mptcp": mptcp}))
    return status.model_copy(update={"uplinks": tuple(uplinks)})

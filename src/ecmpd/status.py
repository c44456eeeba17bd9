"""The status contract: frozen types, their two builders, one display-state rule.

Pure (no I/O, no clock). `daemon_status` builds it from the daemon's runtime (health
reports per uplink and family), `kernel_status` from the kernel alone (what `ecmpd
status` shows with no daemon running); both go through `display_state`. Everything
that reads a status — metrics, the live views, `status`, `watch`, the lab and the
benchmarks — takes a `Status`; JSON exists only at the edges (the control socket,
`--json`), through `Status.to_json` and `Status.from_json`.

The JSON keeps the shape of the contract (../shared/spec/config.md): each uplink's
top level repeats its primary family's figures (IPv4 when it carries IPv4), `families`
has each family's, keyed `ipv4` / `ipv6`. A field is added in one place, its model;
a field that only one builder knows is declared with `exclude_if=_unset`: absent from the JSON
while unset, so the kernel's view does not show daemon figures as nulls.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from ecmpd.config import Config, UplinkConfig
from ecmpd.connections import rule_name
from ecmpd.desired import carries
from ecmpd.export.iptext import rule_args
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.fsm import HealthState, detection_time
from ecmpd.health.window import TargetStats
from ecmpd.kernel.mptcpdiag import Subflow
from ecmpd.model import FAMILY_NAMES, DesiredState, Family, NexthopGroup, nexthop_id

FamilyKey = str  # "ipv4" / "ipv6" (model.FAMILY_NAMES): the keys of `families`


class DisplayState(StrEnum):
    """What `status` shows for an uplink in one family (the contract's four states)."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"
    DRAINED = "drained"


def display_state(
    *,
    drained: bool,
    health: HealthState | None,
    in_balancer: bool = False,
    applied: bool = False,
) -> DisplayState:
    """The one rule: drained by hand wins; else the daemon's health, else the kernel's groups.

    `health` None is the kernel's view (no daemon): a member of its group is up, a
    nexthop left out of it down, nothing applied unknown. Falling still carries traffic
    (up), rising does not yet (down).
    """
    if drained:
        return DisplayState.DRAINED
    if health is None:
        if in_balancer:
            return DisplayState.UP
        return DisplayState.DOWN if applied else DisplayState.UNKNOWN
    if health in (HealthState.UP, HealthState.FALLING):
        return DisplayState.UP
    if health is HealthState.UNKNOWN:
        return DisplayState.UNKNOWN
    return DisplayState.DOWN


def _unset(value: object) -> bool:
    """A field only one builder fills is left out of the JSON while unset."""
    return value is None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TargetStatus(_Frozen):
    """One probe target's figures over its window."""

    target: str
    rtt_ms: float | None = None
    rtt_avg_ms: float | None = None
    loss: float = 0.0
    sent: int = 0
    received: int = 0


class FamilyStatus(_Frozen):
    """An uplink in one address family (health is per family)."""

    state: DisplayState
    in_balancer: bool
    # The uplink's weight in this family's group (the kernel's view) or configured.
    weight: int
    # From the daemon only:
    health: HealthState | None = Field(default=None, exclude_if=_unset)
    since: float | None = Field(default=None, exclude_if=_unset)  # wall clock, state entered
    for_s: float | None = Field(default=None, exclude_if=_unset)
    reason: str | None = Field(default=None, exclude_if=_unset)
    transitions: int | None = Field(default=None, exclude_if=_unset)
    detection_time_s: float | None = Field(default=None, exclude_if=_unset)
    targets: tuple[TargetStatus, ...] = ()


# An uplink's top-level JSON repeats these of its primary family.
_PRIMARY_KEYS = (
    "state",
    "weight",
    "health",
    "since",
    "for_s",
    "reason",
    "in_balancer",
    "detection_time_s",
)


class MptcpStatus(_Frozen):
    """This host's Multipath TCP over the uplink, as the kernel shows it (sock_diag)."""

    endpoints: tuple[str, ...]  # ecmpd's endpoint addresses on it (one per family in service)
    backup: bool  # an endpoint is backup (degraded, metered, standby tier)
    connections: int  # MPTCP connections with a subflow from this uplink
    subflows: int


class UplinkStatus(_Frozen):
    """One uplink: its configuration, its interface and each family it carries."""

    name: str
    interface: str
    table: int
    carrier: bool | None = None  # None: the interface does not exist
    gateway: str | None = None  # as configured; `dhcp (…)` / `ra (…)` say what was learnt
    gateway6: str | None = None
    families: Mapping[FamilyKey, FamilyStatus] = Field(min_length=1)
    mptcp: MptcpStatus | None = Field(default=None, exclude_if=_unset)  # `mptcp` on it

    @property
    def primary(self) -> FamilyStatus:
        """IPv4 when the uplink carries it, else IPv6: what the top level shows."""
        return self.families.get("ipv4") or next(iter(self.families.values()))

    # The primary family's figures, as the top level of the JSON repeats them.
    @property
    def state(self) -> DisplayState:
        return self.primary.state

    @property
    def weight(self) -> int:
        return self.primary.weight

    @property
    def health(self) -> HealthState | None:
        return self.primary.health

    @property
    def in_balancer(self) -> bool:
        return self.primary.in_balancer

    @property
    def since(self) -> float | None:
        return self.primary.since

    @property
    def reason(self) -> str | None:
        return self.primary.reason

    @property
    def detection_time_s(self) -> float | None:
        return self.primary.detection_time_s

    @property
    def transitions(self) -> int:
        """Health state changes, all families together."""
        return sum(f.transitions or 0 for f in self.families.values())

    @property
    def targets(self) -> tuple[TargetStatus, ...]:
        """Every family's targets."""
        return tuple(t for f in self.families.values() for t in f.targets)

    @property
    def degraded(self) -> bool:
        """In service in one family and out in another: worth a glance."""
        return len({f.in_balancer for f in self.families.values()}) > 1

    @model_validator(mode="before")
    @classmethod
    def _single_family(cls, data: object) -> object:
        # A document from before IPv6 existed has no `families`: its top level is IPv4.
        if isinstance(data, Mapping) and "families" not in data:
            return {**data, "families": {"ipv4": data}}
        return data

    @model_serializer(mode="wrap")
    def _flatten(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        doc: dict[str, object] = handler(self)
        families = doc.get("families")
        if not isinstance(families, dict):
            return doc
        primary = families.get("ipv4" if "ipv4" in self.families else next(iter(self.families)))
        if isinstance(primary, dict):
            doc.update({k: primary[k] for k in _PRIMARY_KEYS if k in primary})
        if self.primary.health is not None:  # the daemon's figures over all families
            doc["transitions"] = self.transitions
            doc["targets"] = [t for f in families.values() for t in f.get("targets", [])]
            doc["degraded"] = self.degraded
        return doc


class DaemonCounters(_Frozen):
    """What the daemon did since it started."""

    pid: int
    uptime_s: float
    reconciles: int = 0
    ops: int = 0
    failures: int = 0
    resyncs: int = 0


class RuleStatus(_Frozen):
    """One of ecmpd's ip rules, as the kernel holds it."""

    priority: int
    name: str | None
    family: FamilyKey
    rule: str  # what follows `ip rule` / `ip -6 rule`


class GroupStatus(_Frozen):
    """A family's balanced nexthop group."""

    group: int
    type: str


class BalancerStatus(_Frozen):
    """The balancer table and its groups (the IPv4 one at the top level)."""

    table: int
    group: int | None = None
    type: str | None = None
    groups: Mapping[FamilyKey, GroupStatus] = Field(default_factory=dict)


class Status(_Frozen):
    """The whole status document."""

    source: Literal["daemon", "kernel"]
    uplinks: tuple[UplinkStatus, ...]
    daemon: DaemonCounters | None = Field(default=None, exclude_if=_unset)
    rules: tuple[RuleStatus, ...] | None = Field(default=None, exclude_if=_unset)
    balancer: BalancerStatus | None = Field(default=None, exclude_if=_unset)

    def uplink(self, name: str) -> UplinkStatus:
        """The uplink with this name; KeyError if there is none."""
        for u in self.uplinks:
            if u.name == name:
                return u
        raise KeyError(name)

    def interfaces(self) -> list[str]:
        """The uplinks' interfaces, sorted."""
        return sorted({u.interface for u in self.uplinks})

    def to_json(self) -> dict[str, object]:
        """The document as JSON values (for the control socket and `--json`)."""
        doc: dict[str, object] = self.model_dump(mode="json")
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Status:
        """A document read back; pydantic.ValidationError if it is not a status."""
        return cls.model_validate(doc)


# --- builders ------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyReport:
    """What the daemon's health tracking knows of one uplink in one family, at one moment."""

    state: HealthState
    since: float  # monotonic seconds
    reason: str
    transitions: int
    targets: tuple[TargetStats, ...]  # empty when the family is not probed (carrier only)
    carrier: bool


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
    """An uplink's entry; `carrier` as the daemon's health heard it, else the kernel's."""
    iface = facts.interfaces.get(u.interface)
    if carrier is None and iface is not None:
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
                state=display_state(drained=u.name in drained, health=report.state),
                in_balancer=in_balancer,
                weight=u.weight,
                health=report.state,
                since=round(clock.wall - (clock.monotonic - report.since), 3),
                for_s=round(clock.monotonic - report.since, 3),
                reason=report.reason,
                transitions=report.transitions,
                detection_time_s=round(detection_time(u.check), 3),
                targets=tuple(_target(s) for s in report.targets),
            )
        heard = [r.carrier for r in uplink.families.values()]
        uplinks.append(_uplink(u, facts, families, carrier=all(heard) if heard else None))
    return Status(source="daemon", uplinks=tuple(uplinks), daemon=counters)


def kernel_status(
    config: Config,
    observed: DesiredState,
    facts: KernelFacts,
    rule_names: Iterable[tuple[int, str]],
) -> Status:
    """The status from the kernel alone: membership of each family's group says the state."""
    groups = _groups(config.balancer.table, observed)
    nexthops = {n.id for n in observed.nexthops}
    uplinks = []
    for u in config.uplinks:
        families: dict[FamilyKey, FamilyStatus] = {}
        for family, label in FAMILY_NAMES.items():
            if not carries(u, family):
                continue
            group = groups[family]
            members = dict(group.members) if group else {}
            nhid = nexthop_id(u.table, family)
            families[label] = FamilyStatus(
                state=display_state(
                    drained=False,
                    health=None,
                    in_balancer=nhid in members,
                    applied=nhid in nexthops,
                ),
                in_balancer=nhid in members,
                weight=members.get(nhid, u.weight),
            )
        uplinks.append(_uplink(u, facts, families))
    names = dict(rule_names)
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
    """The status with each MPTCP uplink's endpoints, connections and subflows added.

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
        mptcp = MptcpStatus(
            endpoints=tuple(str(e.address) for e in eps),
            backup=any(e.backup for e in eps),
            connections=len({s.token for s in mine}),
            subflows=len(mine),
        )
        uplinks.append(entry.model_copy(update={"mptcp": mptcp}))
    return status.model_copy(update={"uplinks": tuple(uplinks)})

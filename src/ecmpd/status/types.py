"""The status contract's types: frozen models, the one display-state rule, JSON both ways.

The JSON keeps the shape of the contract (../shared/spec/config.md): each uplink's top
level repeats its primary family's figures (IPv4 when it carries IPv4), `families` has
each family's, keyed `ipv4` / `ipv6`. A field is added in one place, its model; a
field that only one builder fills is declared with `exclude_if=_unset`: absent from
the JSON while unset, so the kernel's view does not show daemon figures as nulls.
"""

from __future__ import annotations

from collections.abc import Mapping
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

from ecmpd.health.degraded import Grade
from ecmpd.health.fsm import HealthState
from ecmpd.order import Role
from ecmpd.refusals import RefusalKind

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
    held: bool = False,
) -> DisplayState:
    """The one rule: drained by hand wins; then held down (no interface, no lease yet);
    else the daemon's health; else (no daemon) the kernel's groups.

    `health` None is the kernel's view: a member of its group is up, a nexthop left out
    of it down, nothing applied unknown. Falling still carries traffic (up), rising does
    not yet (down).
    """
    if drained:
        return DisplayState.DRAINED
    if held:
        return DisplayState.DOWN
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
    # Against check.degraded_loss/degraded_rtt (clear, degrading, degraded, recovering);
    # absent without soft limits.
    grade: Grade | None = Field(default=None, exclude_if=_unset)


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


class MptcpFamilyStatus(_Frozen):
    """This host's Multipath TCP over the uplink in one address family."""

    endpoint: str | None = None  # ecmpd's endpoint address (none while out of service)
    backup: bool = False  # the endpoint is backup (degraded, metered, standby tier)
    connections: int = 0  # MPTCP connections with a subflow from this uplink in the family
    subflows: int = 0


class MptcpStatus(_Frozen):
    """This host's Multipath TCP over the uplink, as the kernel shows it (sock_diag)."""

    endpoints: tuple[str, ...]  # ecmpd's endpoint addresses on it (one per family in service)
    backup: bool  # an endpoint is backup (degraded, metered, standby tier)
    connections: int  # MPTCP connections with a subflow from this uplink
    subflows: int
    # The same per family the uplink carries (keys `ipv4`, `ipv6`).
    families: Mapping[FamilyKey, MptcpFamilyStatus] = Field(default_factory=dict)


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
    # The failover order (status/order.py fills these):
    tier: int = 1
    metered: bool = False
    role: Role | None = Field(default=None, exclude_if=_unset)
    bytes_in: int | None = Field(default=None, exclude_if=_unset)  # interface counters
    bytes_out: int | None = Field(default=None, exclude_if=_unset)
    takeover_time_s: float | None = Field(default=None, exclude_if=_unset)  # standing by
    data_used: int | None = Field(default=None, exclude_if=_unset)  # bytes, this cap period
    data_cap: int | None = Field(default=None, exclude_if=_unset)
    last_resort: bool | None = Field(default=None, exclude_if=_unset)  # its cap is reached

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
    failures: int = 0  # reconciles that met a refused operation
    resyncs: int = 0
    refusals: int = 0  # operations the kernel refused (each try counts)


class RefusedOp(_Frozen):
    """A kernel operation the daemon wants and the kernel does not hold (ecmpd.refusals)."""

    op: str  # as the `ip` command it amounts to
    kind: RefusalKind  # refused, conflict (a foreign object holds it) or held back
    error: str
    uplink: str | None = None  # whose object it is (None: the balancer's, shared)
    attempts: int
    for_s: float
    retry_in_s: float


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
    refused: tuple[RefusedOp, ...] | None = Field(default=None, exclude_if=_unset)
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

"""One uplink's probing in one family: tracker, targets, prober and scheduler, and report.

A family is probed from the address the kernel gives it on its interface (its
binding), at its check targets or else the gateway resolved from the kernel (a DHCP
lease, a router advertisement); a family with neither has a placeholder target that
is never probed, so carrier alone decides. `start` opens the prober and runs its
scheduler in the daemon's task group; `stop` ends both. health/supervisor.py decides
when (start, re-aim, rebind, hold) and owns the one path of the changes they report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ecmpd.config import UplinkConfig
from ecmpd.facts import KernelFacts
from ecmpd.health.degraded import GradeChange
from ecmpd.health.fsm import HealthTracker, Target, Transition
from ecmpd.health.probes import Prober
from ecmpd.health.scheduler import ProbeScheduler
from ecmpd.model import FAMILY_NAMES, Family, IPAddress
from ecmpd.status import FamilyReport
from ecmpd.uplinkplan import resolve_uplink, unavailable

log = logging.getLogger("ecmpd.health")

# A tracker needs at least one target; a family that cannot be probed (point-to-point
# without targets) gets a placeholder that is never probed, so carrier alone decides.
PLACEHOLDER: dict[Family, Target] = {
    Family.INET: IPv4Address("0.0.0.0"),
    Family.INET6: IPv6Address("::"),
}

ProberFactory = Callable[[str, str, IPAddress | None, Family], Awaitable[Prober]]
Binding = tuple[int | None, IPAddress | None]  # (interface index, source address)


@dataclass
class FamilyProbe:
    """One uplink's health in one family: tracker, and prober while probed."""

    family: Family
    tracker: HealthTracker
    targets: list[Target]
    hold: str | None = None  # why it cannot be used at all now (no probing meanwhile)
    prober: Prober | None = None
    task: asyncio.Task[None] | None = None
    scheduler: ProbeScheduler | None = None
    transitions: int = 0
    # What the prober's socket is bound to: a re-created interface or a new DHCP/SLAAC
    # address leaves a socket sending into nothing.
    bound: Binding | None = None

    @property
    def in_service(self) -> bool:
        """Health allows traffic and nothing holds the family down."""
        return self.hold is None and self.tracker.in_service

    def report(self) -> FamilyReport:
        """What the status shows of it."""
        tracker = self.tracker
        return FamilyReport(
            state=tracker.state,
            since=tracker.since,
            reason=tracker.reason,
            transitions=self.transitions,
            targets=tuple(tracker.stats()) if self.targets else (),
            carrier=tracker.carrier,
            held=self.hold,
            grade=tracker.grade if tracker.grading else None,
        )


@dataclass
class UplinkProbes:
    """One uplink: its config and each family it carries (IPv4 first)."""

    config: UplinkConfig
    families: dict[Family, FamilyProbe]


# Uplink keys that only say how the uplink is used, not how it is probed: a reload that
# changes nothing else (a new weight, a data cap) keeps the uplink's health and probers.
USE_ONLY_KEYS = frozenset(
    {"weight", "bandwidth", "nat", "data_cap", "data_cap_reset_day", "failback", "mptcp",
     "on_failure"}
)  # fmt: skip


def probed_alike(old: UplinkConfig, new: UplinkConfig) -> bool:
    """Whether `new` probes the uplink exactly as `old` did (they differ in use only)."""
    return old.model_copy(update={k: getattr(new, k) for k in USE_ONLY_KEYS}) == new


def check_targets(config: UplinkConfig, facts: KernelFacts, family: Family) -> list[Target]:
    """The family's check targets, defaulting to its resolved gateway."""
    version = 6 if family is Family.INET6 else 4
    targets: list[Target] = [t for t in config.check.targets if t.version == version]
    if not targets:
        gateway = resolve_uplink(config, facts, True, family).gateway
        if gateway is not None:
            targets = [gateway]
    return targets


def binding(config: UplinkConfig, facts: KernelFacts, family: Family) -> Binding:
    """The interface index and source address a prober of the family binds to now."""
    iface = facts.interfaces.get(config.interface)
    up = resolve_uplink(config, facts, True, family)
    return (iface.index if iface else None, up.source.ip if up.source is not None else None)


def new_family(config: UplinkConfig, facts: KernelFacts, family: Family, now: float) -> FamilyProbe:
    """A fresh tracker (unknown) for the family's targets, held if it cannot be used."""
    targets = check_targets(config, facts, family)
    tracker = HealthTracker(config.name, config.check, targets or [PLACEHOLDER[family]], now)
    hold = unavailable(config, facts, family)
    return FamilyProbe(family=family, tracker=tracker, targets=targets, hold=hold)


@dataclass(frozen=True)
class Probing:
    """What starting a prober needs beyond the family: the factory, the task group, time."""

    open_prober: ProberFactory
    tg: asyncio.TaskGroup
    clock: Callable[[], float]


async def start(
    fam: FamilyProbe,
    config: UplinkConfig,
    facts: KernelFacts,
    probing: Probing,
    on_change: Callable[[Transition], None],
    on_grade: Callable[[GradeChange], None],
    pace: float | None,
) -> None:
    """Probe the family, unless it is carrier-only, held down or already probed.

    A prober that cannot open (the interface just went, an IPv6 source still tentative
    or not yet learnt) is logged and left: the next re-read tries again, and meanwhile
    the family keeps its state.
    """
    if not fam.targets or fam.hold is not None or fam.task is not None:
        return
    fam.bound = binding(config, facts, fam.family)
    try:
        fam.prober = await probing.open_prober(
            config.check.method, config.interface, fam.bound[1], fam.family
        )
    except OSError as exc:
        log.warning(
            "probe.open_failed",
            extra={"uplink": config.name, "family": FAMILY_NAMES[fam.family], "error": str(exc)},
        )
        return
    scheduler = ProbeScheduler(
        fam.tracker,
        fam.prober,
        fam.targets,
        config.check.interval,
        config.check.timeout,
        on_change,
        probing.clock,
        on_grade=on_grade,
    )
    scheduler.set_pace(pace)
    fam.scheduler = scheduler
    fam.task = probing.tg.create_task(scheduler.run())


async def stop(fam: FamilyProbe) -> None:
    """Stop probing the family (its scheduler, then its prober's socket)."""
    if fam.task is not None:
        fam.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fam.task
        fam.task = None
        fam.scheduler = None
    if fam.prober is not None:
        await fam.prober.aclose()
        fam.prober = None

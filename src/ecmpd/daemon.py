"""`ecmpd run`: apply, then keep the kernel in step with uplink health.

Wiring only: health trackers and probe schedulers per uplink and address family
(an uplink can be up in IPv4 and down in IPv6), kernel events first
(carrier loss acts at once), one reconcile path for every change, the control socket,
signals (SIGHUP reload, SIGTERM exit leaving forwarding in place), hooks and
sd_notify. What to put in the kernel is decided by `desired_state()`, what to change
by `diff()`; a health change normally costs one netlink operation (a group replace).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

from ecmpd.announce import announced_families, known_uplinks
from ecmpd.config import (
    Config,
    ConfigError,
    Mode,
    UplinkConfig,
    check_against_kernel,
    load_config,
)
from ecmpd.control import serve
from ecmpd.desired import carries, desired_state, resolve_uplink
from ecmpd.facts import KernelFacts
from ecmpd.health.fsm import HealthState, HealthTracker, Target, Transition
from ecmpd.health.probes import Prober, open_prober
from ecmpd.health.scheduler import ProbeScheduler
from ecmpd.hooks import run_hooks
from ecmpd.kernel.apply import KernelWriter, execute_all
from ecmpd.kernel.conntrack import delete_uplink_flows
from ecmpd.kernel.monitor import KernelMonitor, LinkEvent, NexthopEvent, Resync, RouteEvent
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.metrics import Metrics
from ecmpd.model import (
    FAMILY_NAMES,
    MAIN_TABLE,
    RTPROT_ECMPD,
    DesiredState,
    Family,
    IPAddress,
    nexthop_id,
)
from ecmpd.plan import diff
from ecmpd.sdnotify import notify, watchdog_interval
from ecmpd.status import Clock, DaemonCounters, FamilyReport, Status, UplinkReport, daemon_status

log = logging.getLogger("ecmpd.daemon")
T = TypeVar("T")

# A tracker needs at least one target; an uplink that cannot be probed (point-to-point
# without targets) gets a placeholder that is never probed, so carrier alone decides.
NO_TARGET: Target = IPv4Address("0.0.0.0")
NO_TARGET6: Target = IPv6Address("::")
RESYNC_PERIOD = 30.0  # full re-read against drift nobody told us about
EVENT_DEBOUNCE = 0.01  # coalesce a burst of kernel events into one re-read


class StartupError(Exception):
    """The daemon cannot start (bad config, conflicting kernel state)."""


@dataclass
class FamilyHealth:
    """One uplink's live health in one address family: tracker, prober, probing task."""

    family: Family
    tracker: HealthTracker
    targets: list[Target]
    prober: Prober | None = None
    task: asyncio.Task[None] | None = None
    scheduler: ProbeScheduler | None = None
    transitions: int = 0
    # (interface index, source address) the prober's socket is bound to: a re-created
    # interface or a new DHCP/SLAAC address leaves that socket sending into nothing.
    bound: tuple[int | None, IPAddress | None] | None = None


@dataclass
class UplinkRuntime:
    """One uplink's live health, per address family it carries (IPv4 first)."""

    config: UplinkConfig
    families: dict[Family, FamilyHealth]

    @property
    def primary(self) -> FamilyHealth:
        """IPv4 when the uplink carries it, else IPv6: what the top-level status shows."""
        return next(iter(self.families.values()))

    @property
    def carrier(self) -> bool:
        """The last carrier reported (every family's tracker hears the same)."""
        return self.primary.tracker.carrier

    @property
    def transitions(self) -> int:
        """Health state changes, all families together."""
        return sum(f.transitions for f in self.families.values())


@dataclass
class Counters:
    """What the daemon did, for status and tests."""

    reconciles: int = 0
    ops: int = 0
    failures: int = 0
    resyncs: int = 0
    last_ops: list[str] = field(default_factory=list)


class Daemon:
    """The running daemon for one config and run dir (one per network namespace)."""

    def __init__(self, config_path: Path, run_dir: Path) -> None:
        self.config_path = config_path
        self.run_dir = run_dir
        self.ipr: Any = None
        self.writer: KernelWriter | None = None
        self.config: Config | None = None
        self.observed = DesiredState()
        self._facts = KernelFacts()
        self.uplinks: dict[str, UplinkRuntime] = {}
        self.drained: set[str] = set()
        self._announce_adopted: set[Family] = set()
        self.counters = Counters()
        self.started = time.time()
        # pyroute2's sync IPRoute runs an event loop of its own, which cannot run on a
        # thread that already runs ours: every netlink call happens on this one thread
        # (one thread also keeps kernel operations in order).
        self._kernel = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecmpd-kernel")
        self._lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._resync_handle: asyncio.TimerHandle | None = None
        self._in_service: dict[str, bool] = {}

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then leave the forwarding state in place."""
        config = self._load()
        self.ipr = await self._k(open_iproute)
        self.writer = KernelWriter.for_config(self.ipr, Record(self.run_dir), config)
        try:
            await self._observe(check=config)
            issues = check_against_kernel(config, self._facts)
            if issues:
                raise StartupError("\n".join(str(i) for i in issues))
            self.config = config
            self._adopt_announce(config)
            server = await serve(self.run_dir, self._control)
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            async with server, asyncio.TaskGroup() as tg:
                self._tg = tg
                for uplink in config.uplinks:
                    self.uplinks[uplink.name] = self._adopt(uplink)
                await self._reconcile("start")
                for runtime in self.uplinks.values():
                    await self._start_probing(runtime)
                tg.create_task(self._watch_kernel())
                tg.create_task(self._periodic_resync())
                tg.create_task(self._watchdog())
                if config.metrics is not None:
                    tg.create_task(Metrics(config.metrics).run(self.status))
                notify("READY=1\nSTATUS=probing uplinks")
                log.info("daemon.ready", extra={"uplinks": list(self.uplinks)})
                await self._stop.wait()
                log.info("daemon.stop", extra={"note": "forwarding state left in place"})
                notify("STOPPING=1")
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()
        finally:
            for runtime in self.uplinks.values():
                for fam in runtime.families.values():
                    if fam.prober is not None:
                        await fam.prober.aclose()
            await self._k(self.ipr.close)
            self._kernel.shutdown()

    def _load(self) -> Config:
        try:
            return load_config(self.config_path)
        except ConfigError as err:
            raise StartupError(str(err)) from err

    async def _k(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a netlink call on the kernel thread."""
        return await asyncio.get_running_loop().run_in_executor(self._kernel, fn, *args)

    async def _observe(self, check: Config | None = None) -> None:
        """Re-read the kernel; with `check`, also look for foreign routes in its tables."""
        assert self.writer is not None
        self.observed, self._facts = await self._k(self.writer.observe, check)

    def _adopt(self, uplink: UplinkConfig, keep: UplinkRuntime | None = None) -> UplinkRuntime:
        """A runtime for an uplink, starting from what the kernel shows.

        A restart must change nothing while uplinks stay healthy: a family whose
        nexthop exists but is out of that family's balancer starts down, every other
        one starts unknown (which counts as in service) until probing says otherwise.
        """
        if keep is not None and keep.config == uplink:
            return keep
        families = {
            family: self._adopt_family(uplink, family)
            for family in (Family.INET, Family.INET6)
            if carries(uplink, family)
        }
        return UplinkRuntime(config=uplink, families=families)

    def _adopt_family(
        self, uplink: UplinkConfig, family: Family, adopt: bool = True
    ) -> FamilyHealth:
        """One family's tracker for an uplink, adopting the kernel's verdict if `adopt`."""
        assert self.config is not None
        targets = self._targets(uplink, family)
        placeholder = NO_TARGET6 if family is Family.INET6 else NO_TARGET
        now = time.monotonic()
        tracker = HealthTracker(uplink.name, uplink.check, targets or [placeholder], now)
        group_id = nexthop_id(self.config.balancer.table, family)
        group = next((g for g in self.observed.groups if g.id == group_id), None)
        nh = nexthop_id(uplink.table, family)
        if (
            adopt
            and group is not None
            and any(n.id == nh for n in self.observed.nexthops)
            and nh not in dict(group.members)
        ):
            tracker.force(now, HealthState.DOWN, "adopted: out of the balancer")
        iface = self._facts.interfaces.get(uplink.interface)
        if iface is not None and not iface.carrier:
            tracker.on_carrier(now, False)
        return FamilyHealth(family=family, tracker=tracker, targets=targets)

    def _targets(self, uplink: UplinkConfig, family: Family = Family.INET) -> list[Target]:
        """The check targets of one family, defaulting to that family's resolved gateway."""
        version = 6 if family is Family.INET6 else 4
        targets: list[Target] = [t for t in uplink.check.targets if t.version == version]
        if not targets:
            resolved = resolve_uplink(uplink, self._facts, True, family)
            if resolved.gateway is not None:
                targets = [resolved.gateway]
        return targets

    async def _start_probing(self, runtime: UplinkRuntime) -> None:
        for fam in runtime.families.values():
            await self._start_family(runtime, fam)

    async def _start_family(self, runtime: UplinkRuntime, fam: FamilyHealth) -> None:
        if not fam.targets or self._tg is None or fam.task is not None:
            return  # point-to-point without targets: carrier is all we know
        fam.bound = bound = self._bound(runtime.config, fam.family)
        _, source = bound
        try:
            fam.prober = await open_prober(
                runtime.config.check.method, runtime.config.interface, source, fam.family
            )
        except OSError as exc:
            if fam.family is Family.INET:
                raise  # as ever: an IPv4 uplink that cannot be probed stops the start
            # An IPv6 source may still be tentative (DAD) or not yet learnt (SLAAC):
            # the next resync tries again; until then the family keeps its state.
            log.warning(
                "probe.open_failed",
                extra={"uplink": runtime.config.name, "family": "ipv6", "error": str(exc)},
            )
            return
        fam.scheduler = ProbeScheduler(
            fam.tracker,
            fam.prober,
            fam.targets,
            runtime.config.check.interval,
            runtime.config.check.timeout,
            functools.partial(self._on_transition, family=fam.family),
        )
        fam.task = self._tg.create_task(fam.scheduler.run())

    def _bound(self, uplink: UplinkConfig, family: Family) -> tuple[int | None, IPAddress | None]:
        """What a prober of this uplink and family binds to now: interface index, source."""
        iface = self._facts.interfaces.get(uplink.interface)
        up = resolve_uplink(uplink, self._facts, True, family)
        return (iface.index if iface else None, up.source.ip if up.source is not None else None)

    async def _stop_probing(self, runtime: UplinkRuntime) -> None:
        for fam in runtime.families.values():
            await self._stop_family(fam)

    async def _stop_family(self, fam: FamilyHealth) -> None:
        if fam.task is not None:
            fam.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fam.task
            fam.task = None
        if fam.prober is not None:
            await fam.prober.aclose()
            fam.prober = None

    async def _follow_kernel(self, runtime: UplinkRuntime) -> bool:
        """Re-aim probing after the kernel moved under an uplink; True if health was reset.

        A DHCP lease or a router advertisement may name a new gateway (the default
        probe target), an address may change, an interface may be re-created.
        """
        reset = False
        for family, fam in list(runtime.families.items()):
            targets = self._targets(runtime.config, family)
            if targets != fam.targets:
                # The old verdict was about the old gateway: the new one starts unknown.
                await self._stop_family(fam)
                fresh = self._adopt_family(runtime.config, family, adopt=False)
                fresh.tracker.on_carrier(time.monotonic(), fam.tracker.carrier)
                fresh.transitions = fam.transitions
                runtime.families[family] = fresh
                log.info(
                    "probe.retarget",
                    extra={
                        "uplink": runtime.config.name,
                        "family": FAMILY_NAMES[family],
                        "targets": [str(t) for t in targets],
                    },
                )
                await self._start_family(runtime, fresh)
                reset = True
            elif fam.task is not None and fam.bound != self._bound(runtime.config, family):
                log.info(
                    "probe.rebind",
                    extra={"uplink": runtime.config.name, "family": FAMILY_NAMES[family]},
                )
                await self._stop_family(fam)
                await self._start_family(runtime, fam)
            elif fam.family is Family.INET6 and fam.task is None and fam.targets:
                # An IPv6 prober that could not open (its source not there yet) retries.
                await self._start_family(runtime, fam)
        return reset

    # --- the one reconcile path ---------------------------------------------------

    def health(self, family: Family = Family.INET) -> dict[str, bool]:
        """Which uplinks may carry traffic of a family: healthy (or not yet known), not drained.

        An uplink that does not carry the family counts as healthy in it: nothing of
        it exists there, and desired_state() never asks.
        """
        return {
            name: name not in self.drained
            and (family not in rt.families or rt.families[family].tracker.in_service)
            for name, rt in self.uplinks.items()
        }

    def _adopt_announce(self, config: Config) -> None:
        """The families whose announce route a start (or reload) finds in the kernel."""
        self._announce_adopted = announced_families(self.observed.routes, config)

    def _announce_known(self) -> dict[Family, set[str]]:
        """Per family, the uplinks whose verdict counts for `announce` (see ecmpd.announce)."""
        verdicts: dict[tuple[str, Family], bool | None] = {}
        for name, rt in self.uplinks.items():
            for family, fam in rt.families.items():
                unknown = fam.tracker.state is HealthState.UNKNOWN
                verdicts[(name, family)] = (
                    False if name in self.drained else None if unknown else fam.tracker.in_service
                )
        return known_uplinks(verdicts, self._announce_adopted)

    def _desired(self) -> DesiredState:
        assert self.config is not None
        health6 = self.health(Family.INET6)
        known = self._announce_known()
        return desired_state(self.config, self.health(), self._facts, health6, known=known)

    async def _reconcile(self, reason: str) -> int:
        """Make the kernel match config + health; returns the operations executed.

        Serialised: each run computes the desired state from the health at that
        moment, so a burst of changes converges on the latest one.
        """
        async with self._lock:
            return await self._reconcile_locked(reason)

    async def _reconcile_locked(self, reason: str) -> int:
        assert self.writer is not None and self.config is not None
        desired = self._desired()
        ops = diff(desired, self.observed)
        if not ops:
            return 0
        started = time.perf_counter()
        try:
            await self._k(execute_all, self.writer, ops)
        except Exception as exc:  # the kernel moved under us: re-read and retry once
            self.counters.failures += 1
            log.warning("reconcile.retry", extra={"reason": reason, "error": str(exc)})
            await self._observe()
            desired = self._desired()
            ops = diff(desired, self.observed)
            try:
                await self._k(execute_all, self.writer, ops)
            except Exception as exc2:
                log.error("reconcile.failed", extra={"reason": reason, "error": str(exc2)})
                await self._observe()
                self._schedule_resync(1.0)
                return 0
        self.observed = desired
        await self._forget_flows_of_departed()
        self.counters.reconciles += 1
        self.counters.ops += len(ops)
        self.counters.last_ops = [str(op) for op in ops]
        log.info(
            "kernel.updated",
            extra={
                "reason": reason,
                "ops": len(ops),
                "ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
        return len(ops)

    async def _forget_flows_of_departed(self) -> None:
        """Router mode: delete the conntrack entries of uplinks that just left service.

        Their flows now hash to other uplinks, where the old NAT binding is useless:
        without its entry a connection is reset at once and reconnects, instead of
        hanging until it times out. Only these uplinks' entries go, never the table.
        IPv4 alone: ecmpd never NATs IPv6, so no IPv6 entry holds a binding to forget.
        """
        health = self.health()
        departed = [n for n, ok in health.items() if not ok and self._in_service.get(n, True)]
        self._in_service = health
        assert self.config is not None
        if self.config.mode is not Mode.ROUTER:
            return
        for name in departed:
            runtime = self.uplinks[name]
            if not runtime.config.nat_enabled(self.config.mode):
                continue
            up = resolve_uplink(runtime.config, self._facts, False)
            if up.source is None:
                continue
            try:
                count = await self._k(delete_uplink_flows, up.source.ip, up.source.ip)
            except OSError as exc:
                log.warning("conntrack.failed", extra={"uplink": name, "error": str(exc)})
                continue
            log.info("conntrack.flushed", extra={"uplink": name, "entries": count})

    def _spawn(self, coro: Any) -> None:
        """Run a coroutine in the daemon's task group (never fire-and-forget)."""
        assert self._tg is not None
        self._tg.create_task(coro)

    def _on_transition(self, t: Transition, family: Family = Family.INET) -> None:
        runtime = self.uplinks.get(t.uplink)
        if runtime is None or family not in runtime.families:
            return
        runtime.families[family].transitions += 1
        changed = t.old.in_service != t.new.in_service
        event = ("uplink.up" if t.new.in_service else "uplink.down") if changed else "uplink.state"
        log.info(
            event,
            extra={
                "uplink": t.uplink,
                "family": FAMILY_NAMES[family],
                "old": t.old.value,
                "new": t.new.value,
                "reason": t.reason,
            },
        )
        # Leaving unknown changes nothing in service, but the first verdict is what
        # makes an uplink count for `announce`.
        settled = t.old is HealthState.UNKNOWN and self.config is not None and self.config.announce
        if changed or settled:
            what = f"{t.uplink}{' ipv6' if family is Family.INET6 else ''}"
            self._spawn(self._reconcile(f"{what} {t.old.value}->{t.new.value}"))
        self._run_hooks(t, family)

    def _run_hooks(self, t: Transition, family: Family) -> None:
        if self.config is not None and self.config.hooks is not None:
            # in_service says whether the uplink may carry traffic of the family that
            # moved (ECMPD_FAMILY says which one; the tracker's transition does not).
            in_service = t.new.in_service and t.uplink not in self.drained
            self._spawn(run_hooks(self.config.hooks, _for_hooks(t, family), family, in_service))

    # --- kernel events --------------------------------------------------------------

    async def _watch_kernel(self) -> None:
        async with KernelMonitor() as monitor:
            async for event in monitor.events():
                await self._on_kernel_event(event)

    async def _on_kernel_event(self, event: object) -> None:
        uplink_ifs = {rt.config.interface: rt for rt in self.uplinks.values()}
        if isinstance(event, LinkEvent) and event.ifname in uplink_ifs:
            runtime = uplink_ifs[event.ifname]
            carrier = event.carrier and event.up and not event.deleted
            if carrier != runtime.carrier:
                # Carrier first: no probe round needed to know a dead link is dead. The
                # kernel has already dropped the link's nexthops (silently): re-read.
                moved: list[tuple[Transition, Family]] = []
                for family, fam in runtime.families.items():
                    t = fam.tracker.on_carrier(time.monotonic(), carrier)
                    if t is None:
                        continue
                    fam.transitions += 1
                    moved.append((t, family))
                    log.info(
                        "uplink.down" if not carrier else "uplink.state",
                        extra={
                            "uplink": t.uplink,
                            "family": FAMILY_NAMES[family],
                            "old": t.old.value,
                            "new": t.new.value,
                            "reason": t.reason,
                        },
                    )
                async with self._lock:
                    # Links and nexthops only: no walk of a full routing table on the
                    # way to taking the uplink out. The full re-read follows at once.
                    assert self.writer is not None
                    self.observed, self._facts = await self._k(
                        self.writer.observe_links, self.observed, self._facts
                    )
                    await self._reconcile_locked(
                        f"{event.ifname} carrier {'up' if carrier else 'lost'}"
                    )
                self._schedule_resync(EVENT_DEBOUNCE)
                for t, family in moved:
                    self._run_hooks(t, family)
            else:
                self._schedule_resync(EVENT_DEBOUNCE)
        elif isinstance(event, NexthopEvent):
            if event.deleted and event.protocol == RTPROT_ECMPD:
                # The kernel deletes nexthops of a device that lost carrier and never
                # re-creates them; a re-read notices and reconcile puts them back.
                self._schedule_resync(EVENT_DEBOUNCE)
        elif isinstance(event, RouteEvent):
            if event.table == MAIN_TABLE and event.dst.prefixlen == 0:
                self._schedule_resync(EVENT_DEBOUNCE)  # a DHCP client moved the gateway
        elif isinstance(event, Resync):
            self._schedule_resync(0)
        else:  # addresses on uplinks change sources and connected routes
            self._schedule_resync(EVENT_DEBOUNCE)

    def _schedule_resync(self, delay: float) -> None:
        if self._resync_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._resync_handle = loop.call_later(delay, self._resync)

    def _resync(self) -> None:
        self._resync_handle = None
        self._spawn(self._resync_now())

    async def _resync_now(self) -> None:
        self.counters.resyncs += 1
        async with self._lock:
            await self._observe()
            await self._reconcile_locked("resync")
        reset = False
        for runtime in list(self.uplinks.values()):
            reset |= await self._follow_kernel(runtime)
        if reset:
            await self._reconcile("probe targets changed")

    async def _periodic_resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_PERIOD)
            await self._resync_now()

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # --- reload, drain, status ---------------------------------------------------------

    def _on_sighup(self) -> None:
        if self._tg is not None:
            self._spawn(self.reload())

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; a bad one is reported and the old one kept."""
        try:
            config = load_config(self.config_path)
            # The new config's tables may hold foreign routes, its uplinks follow DHCP/RA
            # gateways the old one did not read: look (observe(check=)) before checking.
            assert self.writer is not None
            async with self._lock:
                await self._observe(check=config)
            issues = check_against_kernel(config, self._facts)
            if issues:
                raise ConfigError(issues)
        except ConfigError as err:
            log.error("config.reload_failed", extra={"errors": str(err).splitlines()})
            return {"ok": False, "error": str(err)}
        old = self.uplinks
        self.config = config
        self._adopt_announce(config)
        self.writer.use_config(config)
        self.uplinks = {}
        for uplink in config.uplinks:
            keep = old.get(uplink.name)
            runtime = self._adopt(uplink, keep)
            self.uplinks[uplink.name] = runtime
            if runtime is not keep:
                if keep is not None:
                    await self._stop_probing(keep)
                await self._start_probing(runtime)
        for name, runtime in old.items():
            if name not in self.uplinks:
                await self._stop_probing(runtime)
        self.drained &= set(self.uplinks)
        async with self._lock:
            await self._observe()
            ops = await self._reconcile_locked("reload")
        log.info("config.reload", extra={"uplinks": list(self.uplinks), "ops": ops})
        return {"ok": True, "ops": ops}

    async def drain(self, name: str, drained: bool) -> dict[str, Any]:
        """Take an uplink out of service by hand (or put it back)."""
        if name not in self.uplinks:
            return {"ok": False, "error": f"no uplink {name!r}; uplinks: {', '.join(self.uplinks)}"}
        if drained:
            self.drained.add(name)
        else:
            self.drained.discard(name)
        log.info("uplink.drain" if drained else "uplink.undrain", extra={"uplink": name})
        ops = await self._reconcile(f"{'drain' if drained else 'undrain'} {name}")
        return {"ok": True, "ops": ops}

    def status(self) -> Status:
        """The status: health per uplink and family, membership from the kernel."""
        assert self.config is not None
        counters = DaemonCounters(
            pid=os.getpid(),
            uptime_s=round(time.time() - self.started, 1),
            reconciles=self.counters.reconciles,
            ops=self.counters.ops,
            failures=self.counters.failures,
            resyncs=self.counters.resyncs,
        )
        reports = [
            UplinkReport(
                config=rt.config,
                families={family: _report(fam) for family, fam in rt.families.items()},
            )
            for rt in self.uplinks.values()
        ]
        clock = Clock(monotonic=time.monotonic(), wall=time.time())
        return daemon_status(
            self.config.balancer.table,
            reports,
            self.observed,
            self._facts,
            self.drained,
            counters,
            clock,
        )

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status().to_json()}
        if cmd == "reload":
            return await self.reload()
        if cmd in ("drain", "undrain"):
            return await self.drain(str(request.get("uplink")), cmd == "drain")
        if cmd == "health":
            return {"ok": True, "health": self.health(), "health6": self.health(Family.INET6)}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


def _report(fam: FamilyHealth) -> FamilyReport:
    """One family's health as the status shows it."""
    tracker = fam.tracker
    return FamilyReport(
        state=tracker.state,
        since=tracker.since,
        reason=tracker.reason,
        transitions=fam.transitions,
        targets=tuple(tracker.stats()) if fam.targets else (),
        carrier=tracker.carrier,
    )


def _for_hooks(t: Transition, family: Family) -> Transition:
    """The transition as hooks hear it: an IPv6 one also says so at the start of its reason.

    (ECMPD_FAMILY says it too; the prefix stays for hooks that only read the reason.)
    """
    return replace(t, reason=f"ipv6: {t.reason}") if family is Family.INET6 else t

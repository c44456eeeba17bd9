"""`ecmpd run`: apply, then keep the kernel in step with uplink health.

Wiring only. Health (trackers, probers, holds) lives in health/supervisor.py, which
reports every change through `_on_health`; who serves and the desired state that makes
in serving.py; the kernel side (one netlink thread, what it last saw, reconciles under
the policy of ecmpd.refusals: apply what can, report and retry the rest) in
reconciler.py; the failover order (metering, tiers, failback) in orderwatch.py; the
status in daemonstatus.py; the control socket's commands in control.py. This module
runs the loop: the one reconcile path and what follows it, a typed `match` over kernel
events (carrier first: a dead link acts at once), reload, drain, signals (SIGHUP
reload, SIGTERM exit leaving forwarding in place) and sd_notify.
A health change normally costs one netlink operation (a group replace).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ecmpd.config import (
    Config,
    ConfigError,
    check_against_kernel,
    load_config,
    queue_conflicts,
    warnings_against_kernel,
)
from ecmpd.connections import renamed, resetting, resetting_pins
from ecmpd.control import serve
from ecmpd.daemonstatus import runtime_status
from ecmpd.ending import EndingWatch, end_all
from ecmpd.health.degraded import GradeChange
from ecmpd.health.fsm import HealthState
from ecmpd.health.probes import open_prober
from ecmpd.health.probing import ProberFactory
from ecmpd.health.supervisor import HealthChange, Supervisor
from ecmpd.hooks import run_health_hooks, run_with
from ecmpd.kernel.monitor import (
    AddressEvent,
    KernelEvent,
    KernelMonitor,
    LinkEvent,
    NexthopEvent,
    Resync,
    RouteEvent,
)
from ecmpd.metrics import Metrics
from ecmpd.model import MAIN_TABLE, RTPROT_ECMPD, DesiredState, Family
from ecmpd.orderwatch import OrderWatch
from ecmpd.reconciler import Reconciler
from ecmpd.sdnotify import notify, watchdog
from ecmpd.serving import Serving
from ecmpd.status import Clock, Status
from ecmpd.subflows import SubflowReader
from ecmpd.uplinkplan import FAMILIES

log = logging.getLogger("ecmpd.daemon")

RESYNC_PERIOD = 30.0  # full re-read against drift nobody told us about
EVENT_DEBOUNCE = 0.01  # coalesce a burst of kernel events into one re-read


class StartupError(Exception):
    """The daemon cannot start (bad config, conflicting kernel state)."""


class Daemon:
    """The running daemon for one config and run dir (one per network namespace)."""

    def __init__(
        self, config_path: Path, run_dir: Path, prober_factory: ProberFactory = open_prober
    ) -> None:
        self.config_path = config_path
        self.run_dir = run_dir
        self.config: Config | None = None
        self.kernel = Reconciler(run_dir, self._on_retry)
        self.supervisor = Supervisor(prober_factory, self._on_health, on_grade=self._on_grade)
        self.serving = Serving(self.supervisor)
        self.started = time.time()
        # Wall-clock times are shown as monotonic ones plus this offset, taken once, so a
        # `since` never wobbles from one status to the next.
        self._wall_offset = self.started - time.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._resync_handle: asyncio.TimerHandle | None = None
        self.endings = EndingWatch()  # whose connections the last reconcile ends
        # Metering, standing-by probes, tier changes and failback (ecmpd.orderwatch).
        self.order = OrderWatch.in_run_dir(run_dir, self._on_order_change)
        self.subflows = SubflowReader(self.kernel.subflows)  # MPTCP, for the status

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then leave the forwarding state in place."""
        config = self._load()
        await self.kernel.open(config)
        try:
            # Listening before the first read: a change made between the two (a VPN
            # client creating its device as ecmpd starts) comes as an event, never unseen.
            async with KernelMonitor() as monitor:
                await self.kernel.observe(check=config)
                self._check(config)
                self.config = config
                self.order.meter.use_config(config)
                await self._serve(config, monitor)
        finally:
            await self.supervisor.close()
            await self.kernel.close()

    async def _serve(self, config: Config, monitor: KernelMonitor) -> None:
        """The control socket and every task, from the first reconcile until told to stop."""
        server = await serve(self.run_dir, self)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        async with server, asyncio.TaskGroup() as tg:
            self._tg = tg
            self.supervisor.adopt(
                config.uplinks, self.kernel.observed, self.kernel.facts, config.balancer.table
            )
            self.serving.follow_config(config, self.kernel.observed)
            await self._reconcile("start")
            await self.supervisor.start(tg)
            tg.create_task(self._watch_kernel(monitor))
            tg.create_task(self._periodic_resync())
            tg.create_task(watchdog())
            tg.create_task(
                self.order.meter.run(lambda: self.order.spill_tiers(self.serving.in_service()))
            )
            tg.create_task(self.subflows.run(self._mptcp_on))
            if config.metrics is not None:
                tg.create_task(Metrics(config.metrics).run(self.status))
            notify("READY=1\nSTATUS=probing uplinks")
            log.info("daemon.ready", extra={"uplinks": list(self.supervisor.uplinks)})
            await self._stop.wait()
            log.info("daemon.stop", extra={"note": "forwarding state left in place"})
            notify("STOPPING=1")
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    def _load(self) -> Config:
        try:
            return load_config(self.config_path)
        except ConfigError as err:
            raise StartupError(str(err)) from err

    def _check(self, config: Config) -> None:
        """Refuse a config that conflicts with the kernel; log what is only not there yet."""
        issues = check_against_kernel(config, self.kernel.facts, queues=False)
        if issues:
            raise ConfigError(issues)
        later = warnings_against_kernel(config, self.kernel.facts)
        # Someone else's qdisc where a `queue` goes: served anyway, a conflict in `status`.
        for warning in [*later, *queue_conflicts(config, self.kernel.facts)]:
            log.warning("config.warning", extra={"warning": str(warning)})

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the daemon's task group (never fire-and-forget)."""
        assert self._tg is not None
        self._tg.create_task(coro)

    # --- the one reconcile path ---------------------------------------------------

    def service(self, family: Family = Family.INET) -> dict[str, bool]:
        """Which uplinks may carry traffic of a family (ecmpd.serving)."""
        return self.serving.service(family)

    def _desired(self) -> DesiredState:
        """What the kernel should hold now (ecmpd.serving), read at each pass; a reload's
        removed uplinks join its reset sets (ecmpd.ending)."""
        assert self.config is not None
        serving = self.serving.desired(self.config, self.kernel.facts, self.order)
        return self.endings.desired(serving)

    async def _reconcile(self, reason: str) -> int:
        """Make the kernel match config + health; returns the operations executed.

        Serialised: each run computes the desired state from the health at that
        moment, so a burst of changes converges on the latest one.
        """
        async with self.kernel.lock:
            return await self._reconcile_locked(reason)

    async def _reconcile_locked(self, reason: str) -> int:
        """One reconcile (the kernel's lock held), then its service changes."""
        ops = await self.kernel.reconcile_locked(self._desired, reason)
        await self._on_service_changes()
        await self._on_order_applied()
        return ops

    async def _on_order_applied(self) -> None:
        """After a reconcile: tier-change hooks, failback resets, probe paces (orderwatch)."""
        assert self.config is not None
        hooks = self.config.hooks
        for env in await self.order.after_reconcile(
            self.config, self.kernel.facts, self.kernel.call
        ):
            if hooks is not None and self._tg is not None:
                self._spawn(run_with(hooks, env))
        self._set_paces()

    def _set_paces(self) -> None:
        assert self.config is not None
        sup, serving = self.supervisor, self.serving
        paces = self.order.paces(
            self.config, sup.states(), sup.target_counts(), serving.in_service(), serving.drained
        )
        sup.set_paces(paces)

    def _on_order_change(self, reason: str) -> None:
        """The meter says a cap or a tier's load changed the order: reconcile."""
        if self._tg is not None:
            self._spawn(self._reconcile(reason))

    def _on_retry(self) -> None:
        if self._tg is not None:
            self._spawn(self._reconcile("retry refused"))

    async def _on_service_changes(self) -> None:
        """The one place for what follows uplinks leaving or rejoining service.

        An uplink whose mark the reconcile put in the table's reset set (out by health,
        not drained: a drain is graceful; `on_failure: reset`), or that a reload removed,
        has its connections ended at once, in a task of their own (ecmpd.ending), which
        then follows their clients' reconnects for a while (ecmpd.reconnects).
        Rejoining needs nothing here: the reset set lets go of it in the same reconcile.
        """
        assert self.config is not None
        in_service = {f: self.supervisor.in_service(f) for f in FAMILIES}
        drained, facts = self.serving.drained, self.kernel.facts
        held = self.kernel.observed  # the table as the kernel holds it now
        wanted = self.endings.after(
            self.config, in_service, drained, facts, resetting(held), resetting_pins(held)
        )
        if not wanted:
            return
        # Not under the kernel's lock: the probes' grace would hold up the next reconcile,
        # such as the other family's failover (its probe rounds keep a phase of their
        # own), by 0.1-0.3 s. Their calls queue on the kernel thread among the others'.
        ending = end_all(self.kernel.call, wanted, follow=self._tg is not None)
        if self._tg is None:
            await ending
        else:
            self._spawn(ending)

    # --- health changes ---------------------------------------------------------------

    def _on_grade(self, change: GradeChange, family: Family) -> None:
        """An uplink became degraded or clear: its MPTCP endpoints flip backup."""
        if self.config is not None and self.config.mptcp_uplinks() and self._tg is not None:
            self._spawn(self._reconcile(f"grade {change.old.value}->{change.new.value}"))

    def _on_health(self, change: HealthChange) -> None:
        """Every health change (probe round, carrier, hold released) comes here."""
        t = change.transition
        # Leaving unknown changes nothing in service, but the first verdict is what
        # makes an uplink count for `announce`.
        settled = t.old is HealthState.UNKNOWN and self.config is not None and self.config.announce
        if (change.service_moved or settled) and self._tg is not None:
            ipv6 = " ipv6" if change.family is Family.INET6 else ""
            self._spawn(self._reconcile(f"{t.uplink}{ipv6} {t.old.value}->{t.new.value}"))
        elif self.config is not None:
            # A carrying uplink starting to fail wakes a standing-by metered one at once.
            self._set_paces()
        if self.config is not None and self.config.hooks is not None and self._tg is not None:
            drained = t.uplink in self.serving.drained
            self._spawn(run_health_hooks(self.config.hooks, t, change.family, drained))

    # --- kernel events --------------------------------------------------------------

    async def _watch_kernel(self, monitor: KernelMonitor) -> None:
        async for event in monitor.events():
            await self._on_kernel_event(event)

    async def _on_kernel_event(self, event: KernelEvent) -> None:
        interfaces = {u.config.interface for u in self.supervisor.uplinks.values()}
        match event:
            case LinkEvent(ifname=ifname) if ifname in interfaces:
                carrier = event.carrier and event.up and not event.deleted
                if self.supervisor.on_carrier(ifname, carrier):
                    await self._carrier_changed(ifname, carrier)
                self._schedule_resync(EVENT_DEBOUNCE)
            case NexthopEvent(deleted=True, protocol=protocol) if protocol == RTPROT_ECMPD:
                # The kernel deletes nexthops of a device that lost carrier and never
                # re-creates them; a re-read notices and reconcile puts them back.
                self._schedule_resync(EVENT_DEBOUNCE)
            case RouteEvent(table=table, dst=dst) if table == MAIN_TABLE and dst.prefixlen == 0:
                self._schedule_resync(EVENT_DEBOUNCE)  # a DHCP client moved the gateway
            case Resync():
                self._schedule_resync(0)
            case LinkEvent() | AddressEvent():
                # A new interface may be an uplink's; addresses change sources.
                self._schedule_resync(EVENT_DEBOUNCE)
            case NexthopEvent() | RouteEvent():
                pass

    async def _carrier_changed(self, ifname: str, carrier: bool) -> None:
        """Take the uplink out (or let it back) now: links and nexthops only, then reconcile.

        The supervisor already moved health through the usual path; this reconcile
        does not wait for the full re-read (a walk of a full routing table) that follows.
        """
        async with self.kernel.lock:
            # The kernel has already dropped the link's nexthops (silently): re-read them.
            await self.kernel.observe_links()
            await self._reconcile_locked(f"{ifname} carrier {'up' if carrier else 'lost'}")

    def _schedule_resync(self, delay: float) -> None:
        if self._resync_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._resync_handle = loop.call_later(delay, self._resync)

    def _resync(self) -> None:
        self._resync_handle = None
        self._spawn(self._resync_now())

    async def _resync_now(self) -> None:
        self.kernel.counters.resyncs += 1
        async with self.kernel.lock:
            await self.kernel.observe()
            # Probing and holds follow the kernel first (a new gateway, an interface or
            # lease come or gone), so this reconcile already applies what they say.
            await self.supervisor.follow(self.kernel.facts)
            await self._reconcile_locked("resync")

    async def _periodic_resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_PERIOD)
            await self._resync_now()

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
            async with self.kernel.lock:
                await self.kernel.observe(check=config)
            self._check(config)
        except ConfigError as err:
            log.error("config.reload_failed", extra={"errors": str(err).splitlines()})
            return {"ok": False, "error": str(err)}
        old, self.config = self.config, config
        assert old is not None
        self.order.meter.use_config(config)
        self.kernel.use_config(config)
        await self.supervisor.reload(
            config.uplinks, self.kernel.observed, self.kernel.facts, config.balancer.table
        )
        self.serving.follow_config(config, self.kernel.observed)
        # Removed uplinks' connections end; a renamed one keeps its mark (ecmpd.ending).
        self.endings.reload(old, config, self.kernel.facts)
        self.kernel.rename_marks(renamed(old, config))
        async with self.kernel.lock:
            await self.kernel.observe()
            ops = await self._reconcile_locked("reload")
        log.info("config.reload", extra={"uplinks": list(self.supervisor.uplinks), "ops": ops})
        return {"ok": True, "ops": ops, "refused": len(self.kernel.refused)}

    async def drain(self, name: str, drained: bool) -> dict[str, Any]:
        """Take an uplink out of service by hand (or put it back)."""
        if name not in self.supervisor.uplinks:
            names = ", ".join(self.supervisor.uplinks)
            return {"ok": False, "error": f"no uplink {name!r}; uplinks: {names}"}
        self.serving.drain(name, drained)
        log.info("uplink.drain" if drained else "uplink.undrain", extra={"uplink": name})
        ops = await self._reconcile(f"{'drain' if drained else 'undrain'} {name}")
        return {"ok": True, "ops": ops}

    def status(self) -> Status:
        """The status now (ecmpd.daemonstatus)."""
        assert self.config is not None
        now = time.monotonic()
        clock = Clock(monotonic=now, wall=now + self._wall_offset)
        return runtime_status(
            self.config,
            self.serving,
            self.kernel,
            self.order,
            clock,
            self.started,
            self.subflows.latest,
        )

    def _mptcp_on(self) -> bool:
        return self.config is not None and bool(self.config.mptcp_uplinks())

"""The demo's scenario: steady traffic, a gray failure and the restore, the heal and the
recovery, each step waited for and marked; and the live snapshot of it (lab.demo runs
it). What it waits for is computed in lab.milestones, the view's rows in lab.demoview."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from ecmpd.control import DaemonNotRunning
from ecmpd.lab import faults
from ecmpd.lab.demoparts import DemoDaemon, DemoError, StatusPoller, inject
from ecmpd.lab.demoview import HISTORY_POINTS, HISTORY_STEP_S, caption, ipv6_group, uplink_views
from ecmpd.lab.groups import GroupHistory
from ecmpd.lab.layout import IspInfo, Lab
from ecmpd.lab.milestones import first_change, rebalanced, restore
from ecmpd.lab.samples import window
from ecmpd.lab.sinks import STALL_S
from ecmpd.lab.summary import PHASES, Marks
from ecmpd.lab.traffic import Traffic
from ecmpd.lab.traffic6 import Traffic6
from ecmpd.live import Snapshot, UplinkView, target_shares
from ecmpd.model import Family
from ecmpd.status import UplinkStatus

PHASE_SPLIT = (0.3, 0.3, 0.4)  # of --duration
MIN_STEADY_S = 3.0
AFTER_RESTORE_S = 3.0  # the failure phase lasts at least this long after the restore
AFTER_BACK_S = 3.0  # and the recovery phase this long after the uplink is back
REMOVAL_TIMEOUT_S = 10.0
RESTORE_TIMEOUT_S = 20.0
RECOVERY_TIMEOUT_S = 20.0
PROGRESS_EVERY_S = 2.0
BACKUP_HOLD_S = 4.0  # the backup carries this long before tier 1 heals
AFTER_FAILBACK_S = 2.0  # then, this long after the failback, no flow may be on it
Progress = Callable[[str], None]


@dataclass
class Demo:
    """One run: the parts, what happened when, and the live snapshot of it."""

    lab: Lab
    daemon: DemoDaemon
    watch: GroupHistory
    poller: StatusPoller
    traffic: Traffic
    traffic6: Traffic6
    fail: IspInfo
    progress: Progress
    live: bool
    t0: float = field(default_factory=time.monotonic)
    phase: str = PHASES[0]
    marks: Marks = field(default_factory=Marks)
    events: list[dict[str, Any]] = field(default_factory=list)
    affected: set[int] = field(default_factory=set)
    interrupted: int = 0
    resumed: tuple[float, ...] = ()  # per interrupted slot, after the fault
    # Per interrupted, established slot: fault -> its connection ended (reset), and ->
    # its next connection established (by a healthy uplink).
    reset: tuple[float, ...] = ()
    reconnected: tuple[float, ...] = ()
    last_established: bool | None = None  # milestones.Restore.last_established
    reasons: dict[str, str] = field(default_factory=dict)
    ipv6_flows: dict[str, Any] = field(default_factory=dict)  # Traffic6.finish()
    backup: str | None = None  # the tier-2 ISP, whose phase follows the recovery
    on_backup_after: int | None = None
    _next_progress: float = 0.0

    def event(self, kind: str, text: str, at: float | None = None) -> None:
        """Records (and, without the live view, prints) something that happened."""
        t = (at if at is not None else time.monotonic()) - self.t0
        self.events.append({"t": round(t, 3), "kind": kind, "text": text})
        if not self.live:
            self.progress(f"{t:6.1f} s  {_plain(text)}")

    # --- waiting, with the checks that keep a broken run from hanging ---

    def tick(self) -> None:
        """Checks every part is alive; prints a progress line now and then (no live view)."""
        self.traffic.check()
        self.traffic6.check()
        try:
            self.watch.check()
        except RuntimeError as exc:
            raise DemoError(str(exc)) from exc
        self.daemon.alive()
        now = time.monotonic()
        if not self.live and now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY_S
            recent = window(self.traffic.all_samples(), now - 1.0, now)
            if recent.seconds:
                rates = "  ".join(f"{n} {v:4.0f}" for n, v in recent.tx_mbit.items())
                self.progress(
                    f"{now - self.t0:6.1f} s  {self.phase:<8}  {rates}  "
                    f"= {recent.total_mbit:4.0f} Mbit/s"
                )

    def sleep_until(self, deadline: float) -> None:
        """Waits until deadline, ticking."""
        while (now := time.monotonic()) < deadline:
            self.tick()
            time.sleep(min(0.05, deadline - now))

    def wait_for(self, check: Callable[[], float | None], timeout: float, what: str) -> float:
        """Ticks until check() returns a time; raises DemoError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            found = check()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.01)

    # --- the phases ---

    def run(self, duration_s: float) -> None:
        """Steady traffic, the gray failure and the restore, the heal and the recovery."""
        steady_s, failure_s, recovery_s = (duration_s * f for f in PHASE_SPLIT)
        name = self.fail.name
        self.event(
            "start",
            f"{self.traffic.flows} TCP flows start from the LAN "
            f"(and {self.traffic6.n} light IPv6 ones, for the steady phase)",
        )
        self.sleep_until(self.t0 + max(MIN_STEADY_S, steady_s))

        self.phase = PHASES[1]
        # The IPv6 flows measure the steady split only: their replies all come back
        # through ISP a (the LAN's prefix is its), which a failure of ISP a would cut.
        self.ipv6_flows = self.traffic6.finish()
        self.affected = self.traffic.slots_on(name)
        fault = self.marks.fault = time.monotonic()
        inject(faults.gray_failure, self.fail.ns)  # both families (neighbour discovery too)
        self.event(
            "fault",
            f"gray failure on [bold]{name}[/]: it drops everything, link and ARP stay up "
            f"({len(self.affected)} flows on it)",
            at=fault,
        )
        removed = self.marks.removed = self.wait_for(
            lambda: self._left(name), REMOVAL_TIMEOUT_S, f"{name} to leave the group"
        )
        removed6 = self.marks.removed6 = self.wait_for(
            lambda: self._left(name, Family.INET6),
            REMOVAL_TIMEOUT_S,
            f"{name} to leave the IPv6 group",
        )
        self.reasons["down"] = self._reason(name)
        self.reasons["down6"] = self._reason(name, "ipv6")
        self.event(
            "removed",
            f"{name} out of the group [bold]{(removed - fault) * 1000:.0f} ms[/] after the fault"
            + (f" ({self.reasons['down']})" if self.reasons["down"] else "")
            + f", out of the IPv6 group after [bold]{(removed6 - fault) * 1000:.0f} ms[/]",
            at=removed,
        )
        restored = self.marks.restored = self.wait_for(
            self._restored, RESTORE_TIMEOUT_S, f"the flows of {name} to deliver again"
        )
        median = fault + statistics.median(self.resumed) if self.resumed else restored
        self.event(
            "restored",
            f"all {self.interrupted} interrupted flows deliver again, on the other uplinks: "
            f"[bold]{(restored - removed) * 1000:.0f} ms[/] after {name} left the group "
            f"(median {(median - removed) * 1000:.0f} ms), {(restored - fault) * 1000:.0f} ms "
            "after the fault",
            at=restored,
        )
        self.sleep_until(max(fault + failure_s, restored + AFTER_RESTORE_S))

        self.phase = PHASES[2]
        heal = self.marks.heal = time.monotonic()
        inject(faults.heal, self.fail.ns)
        self.event("heal", f"{name} heals", at=heal)
        back = self.marks.back = self.wait_for(
            lambda: self._joined(name), RECOVERY_TIMEOUT_S, f"{name} to rejoin the group"
        )
        back6 = self.marks.back6 = self.wait_for(
            lambda: self._joined(name, Family.INET6),
            RECOVERY_TIMEOUT_S,
            f"{name} to rejoin the IPv6 group",
        )
        self.reasons["up"] = self._reason(name)
        self.reasons["up6"] = self._reason(name, "ipv6")
        self.event(
            "back",
            f"{name} back in the group [bold]{(back - heal) * 1000:.0f} ms[/] after the heal, "
            f"in the IPv6 group after [bold]{(back6 - heal) * 1000:.0f} ms[/]",
            at=back,
        )
        end = max(heal + recovery_s, back + AFTER_BACK_S)
        with contextlib.suppress(DemoError):
            rebalanced = self.marks.rebalanced = self.wait_for(
                self._rebalanced, max(0.0, end - time.monotonic()), f"{name} to take its share"
            )
            self.event(
                "rebalanced",
                f"{name} carries its share again: {(rebalanced - back) * 1000:.0f} ms after "
                "rejoining (new flows; running flows stay where they are)",
                at=rebalanced,
            )
        self.sleep_until(end)
        self.marks.end = time.monotonic()
        if self.backup is not None:
            self._backup_phase(self.backup)
        self.phase = "summary"

    def _backup_phase(self, backup: str) -> None:
        """Every tier-1 ISP fails: the standing-by backup takes over; they heal: failback."""
        self.phase = PHASES[3]
        primaries = [isp for isp in self.lab.isps if isp.name != backup]
        tier1 = frozenset(isp.name for isp in primaries)
        fault = self.marks.tier_fault = time.monotonic()
        for isp in primaries:
            inject(faults.gray_failure, isp.ns)
        self.event("tier-fault", "gray failure on every tier-1 ISP at once", at=fault)
        takeover = self.marks.takeover = self.wait_for(
            lambda: self._group_is(frozenset({backup}), fault),
            REMOVAL_TIMEOUT_S,
            f"{backup} to take over",
        )
        self.event(
            "takeover",
            f"[bold]{backup}[/] (tier 2, metered, probed sparingly until now) carries "
            f"everything [bold]{(takeover - fault) * 1000:.0f} ms[/] after the faults",
            at=takeover,
        )
        self.sleep_until(takeover + BACKUP_HOLD_S)
        heal = self.marks.tier_heal = time.monotonic()
        for isp in primaries:
            inject(faults.heal, isp.ns)
        self.event("tier-heal", "the tier-1 ISPs heal", at=heal)
        failback = self.marks.failback = self.wait_for(
            lambda: self._group_is(tier1, heal), RECOVERY_TIMEOUT_S, "tier 1 to return"
        )
        self.event(
            "failback",
            f"tier 1 back {(failback - heal) * 1000:.0f} ms after the heal: {backup}'s "
            "connections are reset and reconnect by tier 1 (failback: reset)",
            at=failback,
        )
        self.sleep_until(failback + AFTER_FAILBACK_S)
        # Where each open connection is now: the NAT address its server sees, and the
        # router's latest lookup (not the lookup when it opened: a SYN sent while the
        # backup carried, retried after the failback, connects by tier 1).
        self.on_backup_after = sum(
            1 for c in self.traffic.live() if backup in (c.nat_uplink, c.path)
        )
        self.event("left", f"{self.on_backup_after} flows on {backup} now")
        self.marks.backup_end = time.monotonic()

    def _group_is(self, names: frozenset[str], since: float) -> float | None:
        """When the IPv4 group first held exactly these uplinks after since."""
        return first_change(self.watch.history[Family.INET], since, names.__eq__)

    def _reason(self, name: str, family: str | None = None) -> str:
        """The daemon's reason for the uplink's state (in one family: "ipv4", "ipv6"),
        asked now (the poller's may be stale)."""

        def of(uplink: UplinkStatus | None) -> str:
            entry = None if uplink is None else uplink.families[family] if family else uplink
            return (entry.reason if entry else None) or ""

        with contextlib.suppress(DaemonNotRunning, OSError, ValueError, KeyError):
            return of(self.daemon.status(timeout=2.0).uplink(name))
        with contextlib.suppress(KeyError):
            return of(self.poller.uplink(name))
        return ""

    def _left(self, name: str, family: Family = Family.INET) -> float | None:
        fault = self.marks.fault or 0.0
        return first_change(self.watch.history[family], fault, lambda m: name not in m)

    def _joined(self, name: str, family: Family = Family.INET) -> float | None:
        heal = self.marks.heal or 0.0
        return first_change(self.watch.history[family], heal, lambda m: name in m)

    def _restored(self) -> float | None:
        """When the last flow slot hit by the fault delivered again (None: not yet)."""
        fault, removed = self.marks.fault, self.marks.removed
        assert fault is not None and removed is not None
        if time.monotonic() < removed + STALL_S:
            return None  # a slot stalled by the fault must show as stalled first
        resumed = self.traffic.resumed(self.affected, fault, removed)
        found = restore(resumed, self.traffic.all_conns(), fault, removed)
        if found is None:
            return None
        self.resumed, self.reset, self.reconnected = found.resumed, found.reset, found.reconnected
        self.last_established = found.last_established
        self.interrupted = len(found.resumed)
        return found.at

    def _rebalanced(self) -> float | None:
        name = self.fail.name
        target = target_shares(self._views(with_history=False))[name]
        now = time.monotonic()
        return now if rebalanced(self.traffic.all_samples(), name, target, now) else None

    # --- the live view ---

    def snapshot(self) -> Snapshot:
        """What the live view shows now."""
        names = [isp.name for isp in self.lab.isps]
        return Snapshot(
            title=f"ecmpd lab demo · {len(names)} ISPs · {self.traffic.flows} TCP flows",
            uplinks=tuple(self._views(with_history=True)),
            elapsed_s=time.monotonic() - self.t0,
            phase=self.phase,
            phases=(*PHASES, "summary"),
            events=tuple((e["t"], e["text"]) for e in self.events),
            history_step_s=HISTORY_STEP_S,
            caption=caption(self.marks, self.fail.name, self.backup),
            note=f"{ipv6_group(self.lab.isps, self.watch.now.get(Family.INET6, frozenset()))} · "
            f"namespace {self.lab.router} · Ctrl-C stops and removes the lab",
        )

    def _views(self, *, with_history: bool) -> list[UplinkView]:
        samples = self.traffic.recent(HISTORY_STEP_S * HISTORY_POINTS if with_history else 1.0)
        return uplink_views(
            self.lab.isps,
            self.poller.uplink,
            self.watch.current,
            samples,
            with_history=with_history,
        )


def _plain(text: str) -> str:
    """Text without rich markup."""
    return Text.from_markup(text).plain

"""`ecmpd lab demo`: a router with three ISPs under real traffic, a gray failure, recovery.

Builds the lab (router, a LAN with clients, 3 ISPs shaped to 100/200/50 Mbit/s, an
internet with servers; dual-stack), starts the real `ecmpd run` in the router's namespace
with every uplink carrying IPv4 and IPv6, drives bulk TCP flows from the LAN to the
internet (and, in the steady phase, a few light IPv6 ones) and shows what the kernel and
the daemon report. Then one ISP silently drops everything, both families (link and ARP
stay up): the daemon's probes notice, the uplink leaves both nexthop groups, the flows it
carried come back on the others; the ISP heals and takes its share again. Every figure
is measured in the run (interface counters, kernel route lookups and nexthop groups, the
sinks' clocks, the daemon's status), none is taken from the plan.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from rich.text import Text

from ecmpd.control import DaemonNotRunning
from ecmpd.lab import faults, netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.summary import PHASES, DemoRun, Marks, summarize
from ecmpd.lab.topology import IspInfo, Lab, lab_session
from ecmpd.lab.traffic import STALL_S, Sample, Traffic, window
from ecmpd.lab.traffic6 import Traffic6
from ecmpd.live import Snapshot, UplinkView, family_views, health_figures, target_shares
from ecmpd.model import Family
from ecmpd.status import Status, UplinkStatus

DEFAULT_DURATION_S = 60.0
PHASE_SPLIT = (0.3, 0.3, 0.4)  # of --duration
MIN_STEADY_S = 3.0
AFTER_RESTORE_S = 3.0  # the failure phase lasts at least this long after the restore
AFTER_BACK_S = 3.0  # and the recovery phase this long after the uplink is back
REBALANCED_FRACTION = 0.8  # the recovered uplink's share, of its weight's, that counts
REMOVAL_TIMEOUT_S = 10.0
RESTORE_TIMEOUT_S = 20.0
RECOVERY_TIMEOUT_S = 20.0
DAEMON_READY_TIMEOUT_S = 30.0
GROUP_POLL_S = 0.005
STATUS_POLL_S = 0.25
SAMPLE_S = 0.2
VIEW_WINDOW_S = 0.6  # the live figures average the last few samples
HISTORY_STEP_S = 0.5
HISTORY_POINTS = 240
PROGRESS_EVERY_S = 2.0
FLOWS = 48
LAN_CLIENTS = 16
LIFETIME_S = (3.0, 8.0)
# The demo's config beside the lab's defaults; each key says why:
#  hash: the lab's LAN clients are sockets in another namespace, and veth hands the
#   socket's random hash to the router, which policy l4 would use as is (and TCP re-draws
#   it after a timeout, moving the flow); a real NIC hashes the headers. A custom field
#   list makes the router hash the 5-tuple itself, as it does for a real LAN.
#  idle_timer: a recovered uplink gets back the buckets idle this long; at 2 s it takes
#   new flows within seconds, and flows that are sending are never moved.
DEMO_CONFIG: dict[str, Any] = {
    "hash": ["src-ip", "dst-ip", "ip-proto", "src-port", "dst-port"],
    "balancer": {"idle_timer": 2},
}


class DemoError(RuntimeError):
    """The demo could not show what it set out to (a step timed out, a part died)."""


Progress = Callable[[str], None]


# --- the parts ----------------------------------------------------------------------


class DemoDaemon(LabDaemon):
    """`ecmpd run` in the router's namespace: started, asked for status, always stopped."""

    def __init__(self, lab: Lab, config: Path, run_dir: Path, log: Path) -> None:
        super().__init__(lab.router, config, run_dir, log)
        self.lab = lab

    def __enter__(self) -> Self:
        try:
            return super().__enter__()
        except (RuntimeError, TimeoutError) as exc:
            raise DemoError(str(exc)) from exc

    def alive(self) -> None:
        """Raises DemoError if the daemon has exited."""
        try:
            super().alive()
        except RuntimeError as exc:
            raise DemoError(str(exc)) from exc

    def wait_all_up(self, timeout: float) -> None:
        """Waits until every uplink is up (not merely unknown) and in the balancer, in
        every family it carries."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            with contextlib.suppress(DaemonNotRunning, OSError):
                if self.every_family_in_service():
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the uplinks were not all up after {timeout:g} s")
            time.sleep(0.05)


class GroupHistory:
    """The router's balancer groups (IPv4 and IPv6) polled often in a thread: what they
    hold now and when they changed."""

    def __init__(self, lab: Lab, families: tuple[Family, ...] = (Family.INET,)) -> None:
        self.watch = GroupWatch(lab, families)
        self.now: dict[Family, frozenset[str]] = dict.fromkeys(families, frozenset())
        self.history: dict[Family, list[tuple[float, frozenset[str]]]] = {f: [] for f in families}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def current(self) -> frozenset[str]:
        """The IPv4 group's uplinks at the last poll."""
        return self.now[Family.INET]

    @property
    def changes(self) -> list[tuple[float, frozenset[str]]]:
        """When the IPv4 group changed, and to what."""
        return self.history[Family.INET]

    def members(self, family: Family = Family.INET) -> frozenset[str]:
        """The uplinks in the family's group now (a fresh read; any thread)."""
        return self.watch.members(family)

    def __enter__(self) -> GroupHistory:
        self._poll()
        self._thread = threading.Thread(target=self._run, name="group-watch", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        for family in self.watch.families:
            members = self.members(family)
            if members != self.now[family] or not self.history[family]:
                self.history[family].append((time.monotonic(), members))
                self.now[family] = members

    def _run(self) -> None:
        try:
            while not self._stop.wait(GROUP_POLL_S):
                self._poll()
        except BaseException as exc:  # reported by check() in the demo's thread
            self.error = exc

    def check(self) -> None:
        """Raises DemoError if polling failed."""
        if self.error is not None:
            raise DemoError(f"reading the nexthop group failed: {self.error!r}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.watch.close()


class StatusPoller:
    """The daemon's latest status, fetched a few times a second in a thread."""

    def __init__(self, daemon: DemoDaemon) -> None:
        self.daemon = daemon
        self.latest: Status | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StatusPoller:
        self._thread = threading.Thread(target=self._run, name="status-poll", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            # A status that does not come keeps the last one: a slow answer on a busy
            # machine is not a reason to blank the view.
            with contextlib.suppress(DaemonNotRunning, OSError, ValueError, KeyError):
                self.latest = self.daemon.status(timeout=1.0)
            if self._stop.wait(STATUS_POLL_S):
                return

    def uplink(self, name: str) -> UplinkStatus | None:
        """The latest status entry of an uplink."""
        with contextlib.suppress(KeyError):
            return self.latest.uplink(name) if self.latest else None
        return None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def inject(action: Callable[[str], float], ns: str) -> None:
    """A fault or its heal (faults.gray_failure, faults.heal) in a lab namespace."""
    try:
        action(ns)
    except faults.NftError as exc:
        raise DemoError(str(exc)) from exc


# --- the run ------------------------------------------------------------------------


@dataclass
class DemoOptions:
    """What `ecmpd lab demo` was asked for."""

    duration_s: float = DEFAULT_DURATION_S
    fail: str | None = None  # the ISP to fail; default: the heaviest
    flows: int = FLOWS
    prefix: str | None = None
    seed: int = 1


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
    resumed: list[float] = field(default_factory=list)  # per interrupted slot, after the fault
    reasons: dict[str, str] = field(default_factory=dict)
    ipv6_flows: dict[str, Any] = field(default_factory=dict)  # Traffic6.finish()
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
        self.watch.check()
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
        median = statistics.median(self.resumed) if self.resumed else 0.0
        self.event(
            "restored",
            f"all {self.interrupted} interrupted flows deliver again, on the other uplinks: "
            f"[bold]{(restored - fault) * 1000:.0f} ms[/] after the fault (median "
            f"{median * 1000:.0f} ms; TCP's retransmission backoff decides when each retries)",
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
        self.phase = "summary"

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
        return next(
            (t for t, m in self.watch.history[family] if t >= fault and name not in m), None
        )

    def _joined(self, name: str, family: Family = Family.INET) -> float | None:
        heal = self.marks.heal or 0.0
        return next((t for t, m in self.watch.history[family] if t >= heal and name in m), None)

    def _restored(self) -> float | None:
        """When the last flow slot hit by the fault delivered again (None: not yet)."""
        fault, removed = self.marks.fault, self.marks.removed
        assert fault is not None and removed is not None
        if time.monotonic() < removed + STALL_S:
            return None  # a slot stalled by the fault must show as stalled first
        resumed = self.traffic.resumed(self.affected, fault, removed)
        if any(t == math.inf for t in resumed.values()):
            return None
        self.resumed = sorted(t - fault for t in resumed.values() if t is not None)
        self.interrupted = len(self.resumed)
        return fault + self.resumed[-1] if self.resumed else removed

    def _rebalanced(self) -> float | None:
        name = self.fail.name
        target = target_shares(self._views(with_history=False))[name]
        now = time.monotonic()
        recent = window(self.traffic.all_samples(), now - 1.0, now)
        if recent.seconds and target > 0 and recent.share(name) >= REBALANCED_FRACTION * target:
            return now
        return None

    def record(self, options: DemoOptions) -> DemoRun:
        """What the run recorded, for the summary (after run())."""
        return DemoRun(
            lab=self.lab,
            failed=self.fail.name,
            duration_s=options.duration_s,
            t0=self.t0,
            marks=self.marks,
            samples=self.traffic.all_samples(),
            conns=self.traffic.all_conns(),
            moves=list(self.traffic.moves),
            flows=self.traffic.flows,
            lan_clients=LAN_CLIENTS,
            lifetime_s=LIFETIME_S,
            hash_fields=DEMO_CONFIG["hash"],
            idle_timer_s=DEMO_CONFIG["balancer"]["idle_timer"],
            affected=len(self.affected),
            interrupted=self.interrupted,
            resumed=self.resumed,
            reasons=self.reasons,
            ipv6_flows=self.ipv6_flows,
            events=self.events,
        )

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
            caption=self._caption(),
            note=f"{self._ipv6_group()} · namespace {self.lab.router} · "
            "Ctrl-C stops and removes the lab",
        )

    def _ipv6_group(self) -> str:
        """Who is out of the kernel's IPv6 group: the table's per-family states are the
        daemon's, this is the kernel's measure (as the share column's is for IPv4)."""
        members = self.watch.now.get(Family.INET6, frozenset())
        out = [isp.name for isp in self.lab.isps if isp.name not in members]
        return "IPv6 group: " + (f"{', '.join(out)} out" if out else "all in")

    def _caption(self) -> str:
        """What to look at in the current phase."""
        name, m = self.fail.name, self.marks
        if m.fault is None:
            return "every uplink is full, and carries its weight's share (┃ on the share bar)"
        if m.removed is None:
            return f"{name} silently drops everything: ecmpd's probes through it go unanswered"
        if m.heal is None:
            return f"{name} is out of the group: its flows come back on the others, by weight"
        if m.back is None:
            return f"{name} heals: ecmpd waits for good probe rounds before taking it back"
        return f"{name} is back: new flows fill it, running flows stay where they are"

    def _views(self, *, with_history: bool) -> list[UplinkView]:
        samples = self.traffic.recent(HISTORY_STEP_S * HISTORY_POINTS if with_history else 1.0)
        now = samples[-1].t if samples else time.monotonic()
        recent = window(samples, now - VIEW_WINDOW_S, now)
        flows = samples[-1].flows if samples else {}
        members = self.watch.current
        views = []
        for isp in self.lab.isps:
            status = self.poller.uplink(isp.name)
            rtt, loss = health_figures(status) if status else (None, None)
            views.append(
                UplinkView(
                    name=isp.name,
                    interface=isp.uplink_if,
                    state=status.state.value if status else "unknown",
                    health=status.health.value if status and status.health else None,
                    weight=isp.weight,
                    in_balancer=isp.name in members,
                    mbit=recent.tx_mbit.get(isp.name, 0.0),
                    capacity_mbit=float(isp.rate_mbit),
                    rtt_ms=rtt,
                    loss=loss,
                    flows=flows.get(isp.name),
                    history=_history(samples, isp.name) if with_history else (),
                    families=family_views(status) if status else (),
                )
            )
        return views


def _history(samples: list[Sample], name: str) -> tuple[float, ...]:
    """The uplink's throughput binned by HISTORY_STEP_S, oldest first."""
    if not samples:
        return ()
    bins: dict[int, list[float]] = {}
    for s in samples:
        bins.setdefault(int(s.t // HISTORY_STEP_S), []).append(s.tx_mbit.get(name, 0.0))
    return tuple(sum(v) / len(v) for _, v in sorted(bins.items()))


def _plain(text: str) -> str:
    """Text without rich markup."""
    return Text.from_markup(text).plain


# --- the whole demo ---------------------------------------------------------------


def preflight() -> None:
    """Raises DemoError when something the demo needs is missing."""
    reason = netns.unavailable_reason()
    if reason is not None:
        raise DemoError(f"the lab needs network namespaces: {reason}")
    if shutil.which("nft") is None:
        raise DemoError("the demo injects its failure with nftables: install the 'nft' command")


def run_demo(
    workdir: Path,
    options: DemoOptions,
    *,
    progress: Progress,
    live: Callable[[Callable[[], Snapshot]], contextlib.AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """Runs the demo in a fresh lab (always removed, also on Ctrl-C); returns its figures.

    live: given the snapshot callable, a context manager that shows it (LiveView);
    None prints progress lines instead.
    """
    preflight()
    started = time.monotonic()
    progress(
        "building the lab: router, LAN, 3 ISPs (100/200/50 Mbit/s TBF), internet; IPv4 and IPv6 ..."
    )
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(
            lab_session(workdir=workdir / "lab", isps=3, lan=True, prefix=options.prefix)
        )
        fail = _pick(lab, options.fail)
        built = time.monotonic()
        progress(f"lab up in {built - started:.1f} s: {' '.join(lab.namespaces())}")
        config = write_lab_config(lab, workdir / "demo.yaml", extra=DEMO_CONFIG, ipv6=True)
        progress("starting `ecmpd run` in the router namespace ...")
        daemon = stack.enter_context(
            DemoDaemon(lab, config, workdir / "run", workdir / "daemon.log")
        )
        daemon.wait_all_up(DAEMON_READY_TIMEOUT_S)
        ready = time.monotonic()
        uplinks = daemon.status(timeout=2.0).uplinks
        detection = {u.name: u.primary.detection_time_s for u in uplinks}
        progress(
            f"ecmpd: all {len(lab.isps)} uplinks up and balanced, IPv4 and IPv6, "
            f"after {ready - built:.1f} s"
        )
        watch = stack.enter_context(GroupHistory(lab, (Family.INET, Family.INET6)))
        poller = stack.enter_context(StatusPoller(daemon))
        traffic = stack.enter_context(
            Traffic(
                lab,
                flows=options.flows,
                clients=LAN_CLIENTS,
                lifetime_s=LIFETIME_S,
                interval_s=SAMPLE_S,
                members=watch.members,
                seed=options.seed,
            )
        )
        traffic6 = stack.enter_context(Traffic6(lab))
        demo = Demo(lab, daemon, watch, poller, traffic, traffic6, fail, progress, live is not None)
        if live is not None:
            stack.enter_context(live(demo.snapshot))
        demo.run(options.duration_s)
        traffic.stop()
        result = summarize(demo.record(options))
        result["lab"]["namespaces"] = lab.namespaces()
        result["workdir"] = str(workdir)
        result["build_s"] = round(built - started, 2)
        result["daemon_ready_s"] = round(ready - built, 2)
        result["config"]["detection_time_s"] = detection
        progress("removing the lab ...")
    return result


def _pick(lab: Lab, name: str | None) -> IspInfo:
    if name is None:
        return max(lab.isps, key=lambda isp: isp.weight)
    try:
        return lab.isp(name)
    except KeyError:
        names = ", ".join(isp.name for isp in lab.isps)
        raise DemoError(f"no ISP {name!r} in the lab (there are {names})") from None

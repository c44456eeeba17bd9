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
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ecmpd import __version__
from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.control import DaemonNotRunning
from ecmpd.desired import nexthop_id
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.faults import HEAL_RULESET, gray_failure_ruleset
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.topology import IspInfo, Lab, lab_session
from ecmpd.lab.traffic import STALL_S, Sample, Traffic, Window, window
from ecmpd.lab.traffic6 import Traffic6
from ecmpd.live import Snapshot, UplinkView, family_views, health_figures, target_shares
from ecmpd.model import Family
from ecmpd.status import Status, UplinkStatus

DEFAULT_DURATION_S = 60.0
PHASES = ("steady", "failure", "recovery")
PHASE_SPLIT = (0.3, 0.3, 0.4)  # of --duration
MIN_STEADY_S = 3.0
WARMUP_S = 2.0  # TCP ramping up: not part of the steady figures (at most half the phase)
AFTER_RESTORE_S = 3.0  # the failure phase lasts at least this long after the restore
AFTER_BACK_S = 3.0  # and the recovery phase this long after the uplink is back
SETTLE_S = 1.0  # skipped after a restore or a rebalance before shares are averaged
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
BALANCER_TABLE = 200
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

    def __enter__(self) -> DemoDaemon:
        try:
            self.start()
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise DemoError(str(exc)) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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


class GroupWatch:
    """The router's balancer groups (IPv4 and IPv6) as the kernel holds them, polled often."""

    def __init__(self, lab: Lab, families: tuple[Family, ...] = (Family.INET,)) -> None:
        self.groups = {f: nexthop_id(BALANCER_TABLE, f) for f in families}
        self.names = {
            nexthop_id(FIRST_UPLINK_TABLE + i, f): isp.name
            for f in families
            for i, isp in enumerate(lab.isps)
        }
        self.sock = netns.call_in(lab.router, NetlinkSocket.open)
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
        group = nl.get_nexthop(self.sock, self.groups[family])
        if group is None or group.members is None:
            return frozenset()
        return frozenset(self.names.get(m, str(m)) for m, _ in group.members)

    def __enter__(self) -> GroupWatch:
        self._poll()
        self._thread = threading.Thread(target=self._run, name="group-watch", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        for family in self.groups:
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
        self.sock.close()


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


def nft(ns: str, script: str) -> None:
    """Loads an nftables script atomically in a lab namespace (`nft -f -` from a thread there)."""

    def load() -> None:
        done = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
        if done.returncode != 0:
            raise DemoError(f"nft failed in {ns}: {done.stderr.strip()}")

    netns.call_in(ns, load)


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
class Marks:
    """When things happened (monotonic seconds), None until they did."""

    fault: float | None = None
    removed: float | None = None
    removed6: float | None = None  # out of the IPv6 group
    restored: float | None = None
    heal: float | None = None
    back: float | None = None
    back6: float | None = None
    rebalanced: float | None = None
    end: float | None = None


@dataclass
class Demo:
    """One run: the parts, what happened when, and the live snapshot of it."""

    lab: Lab
    daemon: DemoDaemon
    watch: GroupWatch
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
        nft(self.fail.ns, gray_failure_ruleset())  # both families (neighbour discovery too)
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
        nft(self.fail.ns, HEAL_RULESET)
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
        watch = stack.enter_context(GroupWatch(lab, (Family.INET, Family.INET6)))
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
        result = summarize(demo, options)
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


# --- the figures --------------------------------------------------------------------


def summarize(demo: Demo, options: DemoOptions) -> dict[str, Any]:
    """The run's figures as a JSON-ready document."""
    m, lab, traffic, name = demo.marks, demo.lab, demo.traffic, demo.fail.name
    assert m.fault and m.removed and m.restored and m.heal and m.back and m.end, "run() first"
    assert m.removed6 and m.back6, "run() first"
    samples = traffic.all_samples()
    everyone = [isp.name for isp in lab.isps]
    others = [n for n in everyone if n != name]
    steady_from = demo.t0 + min(WARMUP_S, (m.fault - demo.t0) / 2)
    recovery_from = (m.rebalanced or m.back) + SETTLE_S
    # Each phase's figures average its settled part only: after TCP's ramp-up, after the
    # failed uplink's flows came back, after the recovered uplink took its share.
    spans = {
        "steady": (steady_from, m.fault, everyone),
        "failure": (m.restored + SETTLE_S, m.heal, others),
        "recovery": (recovery_from, m.end, everyone),
    }
    phases = {
        phase: {
            **_phase(lab, window(samples, start, end), names),
            "from_s": round(start - demo.t0, 2),
            "to_s": round(end - demo.t0, 2),
        }
        for phase, (start, end, names) in spans.items()
    }
    conns = traffic.all_conns()
    errors = [c for c in conns if c.error is not None]
    expected = [c for c in errors if name in c.uplinks() and (c.closed or m.end) >= m.fault]
    healthy_errors = [c for c in errors if c not in expected]
    moves = list(traffic.moves)
    steady = phases["steady"]
    best = max(isp.rate_mbit for isp in lab.isps)
    return {
        "demo": "ecmpd lab demo",
        "version": __version__,
        "duration_s": options.duration_s,
        "elapsed_s": round(m.end - demo.t0, 2),
        "lab": {
            "prefix": lab.prefix,
            "router": lab.router,
            "isps": [
                {
                    "name": isp.name,
                    "interface": isp.uplink_if,
                    "rate_mbit": isp.rate_mbit,
                    "weight": isp.weight,
                    "gateway6": str(isp.gateway6),
                    "address6": str(isp.address6),
                }
                for isp in lab.isps
            ],
            "lan_clients": LAN_CLIENTS,
        },
        "config": {
            "check": "defaults",
            "hash": DEMO_CONFIG["hash"],
            "idle_timer_s": DEMO_CONFIG["balancer"]["idle_timer"],
        },
        "traffic": {
            "flows": traffic.flows,
            "lifetime_s": list(LIFETIME_S),
            "connections": len(conns),
            "direction": "LAN clients -> internet sinks (upload through the router, NAT)",
        },
        "aggregate_fraction": steady["aggregate_fraction"],
        "aggregate_mbit": steady["aggregate_mbit"],
        "capacity_mbit": steady["capacity_mbit"],
        "vs_best_single_uplink": round(steady["aggregate_mbit"] / best, 3),
        "phases": phases,
        "failover": {
            "uplink": name,
            "flows_on_it": len(demo.affected),
            "interrupted_flows": demo.interrupted,
            "removal_ms": _ms(m.removed - m.fault),
            "restore_ms": _ms(m.restored - m.fault),
            "restore_median_ms": _ms(statistics.median(demo.resumed)) if demo.resumed else None,
            "reason": demo.reasons.get("down", ""),
        },
        "recovery": {
            "back_in_group_ms": _ms(m.back - m.heal),
            "rebalanced_ms": _ms(m.rebalanced - m.back) if m.rebalanced else None,
            "reason": demo.reasons.get("up", ""),
        },
        # The failed uplink's IPv6 nexthop, timed from the kernel's IPv6 group as the IPv4
        # one is from its group; and the steady phase's light IPv6 flows.
        "ipv6": {
            "removal_ms": _ms(m.removed6 - m.fault),
            "back_in_group_ms": _ms(m.back6 - m.heal),
            "reason_down": demo.reasons.get("down6", ""),
            "reason_up": demo.reasons.get("up6", ""),
            "steady_flows": demo.ipv6_flows,
        },
        "flows_moved": {
            # Connections on the failed uplink when it failed or opened onto it before it
            # left the group: all had to leave. The kernel lookups, 5 a second, catch most
            # of them re-routed before their reset.
            "off_failed_uplink": sum(
                1
                for c in conns
                if name in c.uplinks()
                and c.opened <= m.removed
                and (c.closed is None or c.closed >= m.fault)
            ),
            "rerouted_seen": len(
                {(mv.slot, mv.serial) for mv in moves if not mv.healthy and mv.old == name}
            ),
            "healthy": sum(1 for mv in moves if mv.healthy),
            "healthy_moves": [
                {"t": round(mv.t - demo.t0, 3), "from": mv.old, "to": mv.new}
                for mv in moves
                if mv.healthy
            ],
        },
        "errors": {
            "total": len(errors),
            "healthy": len(healthy_errors),
            "on_failed_uplink": len(expected),
            "kinds": dict(Counter(str(c.error) for c in errors)),
            "healthy_detail": [
                {
                    "t": round((c.closed or m.end) - demo.t0, 3),
                    "error": c.error,
                    "uplinks": sorted(c.uplinks()),
                }
                for c in healthy_errors
            ],
        },
        "events": demo.events,
        "timeline": _timeline(samples, demo.t0, everyone),
    }


def _phase(lab: Lab, w: Window, names: list[str]) -> dict[str, Any]:
    """Aggregate and per-uplink shares over a window, against the weights of names."""
    isps = [isp for isp in lab.isps if isp.name in names]
    capacity = sum(isp.rate_mbit for isp in isps)
    weights = sum(isp.weight for isp in isps)
    total = w.total_mbit
    uplinks: dict[str, Any] = {}
    for isp in lab.isps:
        target = isp.weight / weights if isp.name in names else 0.0
        share = w.share(isp.name)
        uplinks[isp.name] = {
            "mbit": round(w.tx_mbit.get(isp.name, 0.0), 2),
            "delivered_mbit": round(w.delivered_mbit.get(isp.name, 0.0), 2),
            "share": round(share, 4),
            "target_share": round(target, 4),
            "error_pp": round((share - target) * 100, 2),
        }
    return {
        "aggregate_mbit": round(total, 2),
        "delivered_mbit": round(sum(w.delivered_mbit.values()), 2),
        "capacity_mbit": capacity,
        "aggregate_fraction": round(total / capacity, 4) if capacity else None,
        "max_error_pp": round(max((abs(u["error_pp"]) for u in uplinks.values()), default=0), 2),
        "uplinks": uplinks,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _timeline(samples: list[Sample], t0: float, names: list[str]) -> dict[str, Any]:
    """Every sample, for plots: seconds since the traffic started and Mbit/s per uplink."""
    return {
        "t": [round(s.t - t0, 3) for s in samples],
        "tx_mbit": {n: [round(s.tx_mbit.get(n, 0.0), 2) for s in samples] for n in names},
        "delivered_mbit": {
            n: [round(s.delivered_mbit.get(n, 0.0), 2) for s in samples] for n in names
        },
        "in_group": {
            n: [None if s.members is None else n in s.members for s in samples] for n in names
        },
    }


# --- the summary ----------------------------------------------------------------------


def render_summary(result: dict[str, Any]) -> RenderableType:
    """The run's figures for a terminal: one line per claim, each measured in the run."""
    table = Table(
        title="ecmpd lab demo: summary (every figure measured in this run)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_header=False,
        padding=(0, 1),
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    steady, failure, recovery = (result["phases"][p] for p in PHASES)
    fo, rec = result["failover"], result["recovery"]
    name = fo["uplink"]
    table.add_row(
        "aggregate",
        f"[cyan]{steady['aggregate_mbit']:.0f} Mbit/s[/] of {steady['capacity_mbit']} summed "
        f"capacity ([bold]{steady['aggregate_fraction']:.0%}[/]), "
        f"{result['vs_best_single_uplink']:.2f}x the fastest uplink alone",
    )
    table.add_row("split by weight", _split(steady))
    table.add_row(
        "failover",
        f"gray failure on {name} ({fo['flows_on_it']} flows on it): out of the group after "
        f"[bold]{fo['removal_ms']:.0f} ms[/]; its flows deliver again on the others after "
        f"[bold]{fo['restore_median_ms']:.0f} ms[/] (median), all of them after "
        f"[bold]{fo['restore_ms']:.0f} ms[/] (each TCP flow retries on its own backoff)",
    )
    table.add_row(
        "during the failure",
        f"{failure['aggregate_mbit']:.0f} Mbit/s of the {failure['capacity_mbit']} left "
        f"({failure['aggregate_fraction']:.0%}); {_split(failure)}",
    )
    moved = result["flows_moved"]
    table.add_row(
        "flows moved",
        f"{moved['off_failed_uplink']} connections had to leave {name} "
        f"({moved['rerouted_seen']} of them caught by a kernel lookup being re-routed before "
        "their reset); " + _count(moved["healthy"], "healthy flows moved", zero_good=True),
    )
    rebalanced = (
        f", its share back {rec['rebalanced_ms'] / 1000:.1f} s later"
        if rec["rebalanced_ms"] is not None
        else ", its share not back within the phase"
    )
    table.add_row(
        "recovery",
        f"{name} back in the group {rec['back_in_group_ms'] / 1000:.1f} s after the heal"
        f"{rebalanced}; then {_split(recovery)}",
    )
    table.add_row("IPv6", _ipv6(result["ipv6"], name))
    errors = result["errors"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(errors["kinds"].items()))
    table.add_row(
        "errors",
        f"{errors['on_failed_uplink']} connections on {name} ended by the failure"
        + (f" ({kinds})" if kinds else "")
        + "; "
        + _count(errors["healthy"], "errors on healthy flows", zero_good=True),
    )
    table.add_row(
        "traffic",
        f"{result['traffic']['flows']} concurrent TCP flows, {result['traffic']['connections']} "
        f"connections in {result['elapsed_s']:.0f} s; lab built in {result['build_s']:.1f} s, "
        "removed",
    )
    return table


def _ipv6(v6: dict[str, Any], name: str) -> str:
    """The summary's IPv6 line: the failed uplink's IPv6 nexthop, the light flows' split."""
    flows = v6["steady_flows"]
    targets = flows["target_share"]
    by_isp = " · ".join(f"{n} {k}" for n, k in flows["by_isp"].items())
    shares = " · ".join(
        f"{n} {share:.0%} [magenta]({targets[n]:.0%})[/]" for n, share in flows["out_share"].items()
    )
    style = "green" if flows["delivered"] == flows["flows"] else "red"
    delivered = f"[{style}]{flows['delivered']} delivered[/]"
    return (
        f"{name} out of the IPv6 group after [bold]{v6['removal_ms']:.0f} ms[/], back "
        f"{v6['back_in_group_ms'] / 1000:.1f} s after the heal; steady phase: "
        f"{flows['flows']} light flows from {flows['client']} (no NAT), {delivered}, "
        f"forwarded by {by_isp}; IPv6 bytes out {shares}"
    )


def _split(phase: dict[str, Any]) -> str:
    parts = [
        f"{n} {u['share']:.1%} [magenta]({u['target_share']:.1%})[/]"
        for n, u in phase["uplinks"].items()
        if u["target_share"] > 0
    ]
    return " · ".join(parts) + f", off by at most {phase['max_error_pp']:.1f} pp"


def _count(n: int, what: str, *, zero_good: bool) -> str:
    style = "green" if (n == 0) == zero_good else "red"
    return f"[{style}]{n} {what}[/]"

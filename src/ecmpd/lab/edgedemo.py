"""`ecmpd lab demo --edges N`: several edge routers with FRR under the LAN's traffic.

Builds the scale-out lab (LAN -> core -> N edges, each running ecmpd and FRR from
Debian, -> 2 ISPs each -> internet; dual-stack), drives the LAN's traffic through it
(lab.edgetraffic: ping streams, busy and idle TCP connections, NATed at the edges) and
shows the core's view live: each edge as the core's uplink, its state from the core's
ecmpd, its traffic from the core's interface counters (lab's `ecmpd watch` feed), the
core's BGP paths and every edge's ISPs. Then every ISP of one edge fails (gray): the
edge leaves the core's balancer (ecmpd's probes through it) and BGP (its ecmpd withdraws
the announce), the LAN's traffic moves to the other edges, the ISPs heal and the edge
returns, moving no connection. Then another edge forwards nothing while its BGP and BFD
stay up: only ecmpd on the core catches it. The summary's every figure is measured.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ecmpd.control import DaemonNotRunning
from ecmpd.kernel.netdev import read_interface_counters
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import edgefigures, edgerun, netns
from ecmpd.lab.demoparts import DemoError, StatusPoller
from ecmpd.lab.edgefigures import Seen
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.edges import EdgeRouters, bgp_gateways, edge_lab
from ecmpd.lab.edgesummary import PHASES, EdgeDemoRun, summarize
from ecmpd.lab.edgetraffic import BUSY, IDLE, EdgeTraffic
from ecmpd.lab.peers.frr import frr_available
from ecmpd.live import Snapshot
from ecmpd.livefeed import Feed
from ecmpd.model import Family

DEFAULT_DURATION_S = 40.0
MIN_STEADY_S = 3.0
SAMPLE_S = 0.25
Progress = Callable[[str], None]
# A scenario step's event text ({ms}: since its fault, or its heal for AFTER_HEAL), the
# phase and the caption it sets (None: unchanged).
Step = tuple[str, str | None, str | None]
AFTER_HEAL = frozenset({"announced", "back"})
Live = Callable[[Callable[[], Snapshot]], contextlib.AbstractContextManager[Any]]


@dataclass
class EdgeDemoOptions:
    """What `ecmpd lab demo --edges N` was asked for."""

    edges: int = 2
    duration_s: float = DEFAULT_DURATION_S
    fail: str = "edge1"  # the edge whose ISPs fail; the next one forwards nothing
    busy: int = BUSY  # busy connections per family
    prefix: str | None = None


def preflight(options: EdgeDemoOptions) -> None:
    """Raises DemoError when something the demo needs is missing or asked wrongly."""
    reason = netns.unavailable_reason() or frr_available()
    if reason is not None:
        raise DemoError(reason)
    if not 2 <= options.edges <= 4:
        raise DemoError(
            f"--edges must be 2..4 (one fails, another forwards nothing), got {options.edges}"
        )
    names = [f"edge{k}" for k in range(1, options.edges + 1)]
    if options.fail not in names:
        raise DemoError(f"no edge {options.fail!r} (there are {', '.join(names)})")


@dataclass
class EdgeView:
    """The live view's data: the core's feed, its BGP paths, the edges' ISPs, the events."""

    lab: EdgeLab
    routers: EdgeRouters
    progress: Progress
    live: bool
    traffic: EdgeTraffic | None = None  # each scenario's own: fresh connections over every edge
    t0: float = field(default_factory=time.monotonic)
    phase: str = PHASES[0]
    caption: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    paths: tuple[int, int] = (0, 0)
    paths4: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        core = self.routers.ecmpd["core"]
        ns = self.lab.core
        self.feed = Feed(
            lambda: core.status(timeout=1.0),
            lambda names: netns.call_in(ns, lambda: read_interface_counters(names)),
        )
        self.pollers = {e.name: StatusPoller(self.routers.ecmpd[e.name]) for e in self.lab.edges}
        self.gateways = {str(e.address.ip): e.name for e in self.lab.edges}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-view", daemon=True)

    def __enter__(self) -> EdgeView:
        for poller in self.pollers.values():
            poller.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for poller in self.pollers.values():
            poller.__exit__()

    def _run(self) -> None:
        sock = netns.call_in(self.lab.core, NetlinkSocket.open)
        try:
            while not self._stop.wait(SAMPLE_S):
                # A late answer on a busy machine keeps the last figures: not a reason to stop.
                with contextlib.suppress(DaemonNotRunning, OSError, ValueError, KeyError):
                    self.feed.sample()
                with contextlib.suppress(OSError):
                    v4, v6 = (bgp_gateways(sock, f) for f in (Family.INET, Family.INET6))
                    self.paths = (len(v4), len(v6))
                    self.paths4 = tuple(sorted(self.gateways.get(str(g), str(g)) for g in v4))
        finally:
            sock.close()

    def event(self, kind: str, text: str, at: float | None = None) -> None:
        """Records (and, without the live view, prints) something that happened."""
        t = (time.monotonic() if at is None else at) - self.t0
        self.events.append({"t": round(t, 3), "kind": kind, "text": text})
        if not self.live:
            self.progress(f"{t:6.1f} s  {text}")

    def narrate(self, steps: Mapping[str, Step]) -> edgerun.Notify:
        """A scenario's notify: each step an event (timed since its fault or heal), and
        the phase and caption it sets."""
        marks: dict[str, float] = {}

        def notify(kind: str, at: float) -> None:
            text, phase, caption = steps[kind]
            if kind in ("fault", "heal"):
                marks[kind] = at
            since = marks.get("heal" if kind in AFTER_HEAL else "fault", at)
            self.phase, self.caption = phase or self.phase, caption or self.caption
            self.event(kind, text.format(ms=_ms(at - since)), at)

        return notify

    def snapshot(self) -> Snapshot:
        """What the live view shows now: the core's uplinks (the edges) and the rest."""
        frame, traffic = self.feed.snapshot(), self.traffic
        flows = {e.name: traffic.on_edge(e.name) if traffic else 0 for e in self.lab.edges}
        busy = 2 * traffic.busy if traffic else 0
        isps = " · ".join(
            f"{e.name}: " + ", ".join(self._isp_state(e.name, i.name) for i in e.isps)
            for e in self.lab.edges
        )
        return replace(
            frame,
            title=f"ecmpd lab demo --edges {len(self.lab.edges)} · the core's view · "
            f"{busy} busy TCP connections",
            uplinks=tuple(replace(u, flows=flows.get(u.name)) for u in frame.uplinks),
            elapsed_s=time.monotonic() - self.t0,
            phase=self.phase,
            phases=(*PHASES, "summary"),
            events=tuple((e["t"], e["text"]) for e in self.events),
            caption=self.caption,
            note=f"BGP at the core: 0.0.0.0/0 via {', '.join(self.paths4) or 'none'}, ::/0 "
            f"{self.paths[1]} paths · {isps} · Ctrl-C stops and removes the lab",
        )

    def _isp_state(self, edge: str, isp: str) -> str:
        uplink = self.pollers[edge].uplink(isp)
        return f"{isp} {uplink.state.value if uplink else '?'}"


def run_edge_demo(
    workdir: Path, options: EdgeDemoOptions, *, progress: Progress, live: Live | None = None
) -> dict[str, Any]:
    """Runs the demo in a fresh lab (always removed, also on Ctrl-C); returns its figures."""
    preflight(options)
    started = time.monotonic()
    n = options.edges
    progress(
        f"building the scale-out lab: LAN, core, {n} edges (ecmpd + FRR each), {2 * n} ISPs,"
        " internet; IPv4 and IPv6 ..."
    )
    names = [f"edge{k}" for k in range(1, n + 1)]
    black = names[(names.index(options.fail) + 1) % n]
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(edge_lab(n, options.prefix or netns.new_prefix(), workdir))
        built = time.monotonic()
        progress(f"lab up in {built - started:.1f} s; starting FRR and ecmpd on every router ...")
        routers = stack.enter_context(EdgeRouters(lab))
        try:
            edgerun.whole(routers)
        except TimeoutError as exc:
            raise DemoError(str(exc)) from exc
        ready = time.monotonic()
        progress(f"every edge announced and balanced at the core after {ready - built:.1f} s")
        view = stack.enter_context(EdgeView(lab, routers, progress, live is not None))
        if live is not None:
            stack.enter_context(live(view.snapshot))
        failed, blackholed = _scenario(view, options, black, stack)
        view.phase = "summary"
        run = EdgeDemoRun(
            lab=lab,
            duration_s=options.duration_s,
            failed=failed[0],
            blackholed=blackholed[0],
            failure=failed[1],
            blackhole=blackholed[1],
            busy=options.busy,
            idle=IDLE,
            events=tuple(view.events),
            elapsed_s=time.monotonic() - view.t0,
            build_s=built - started,
            ready_s=ready - built,
        )
        result = summarize(run)
        result["workdir"] = str(workdir)
        result["lab"]["frr_dirs"] = [str(r.dir) for r in routers.frr.values()]
        progress("removing the lab ...")
    return result


def _scenario(
    view: EdgeView, options: EdgeDemoOptions, black: str, stack: contextlib.ExitStack
) -> tuple[tuple[edgerun.Failed, dict[str, Seen]], tuple[edgerun.Blackholed, dict[str, Seen]]]:
    """Steady traffic; the failure of `options.fail`'s ISPs and its return; fresh traffic,
    `black` forwarding nothing and its repair. Each with what its traffic saw."""
    edge, steady_s = options.fail, max(MIN_STEADY_S, options.duration_s / 4)
    isps = ", ".join(i.name for i in view.lab.edge(edge).isps)
    view.caption = "the core balances the LAN over every edge: ecmpd's group, BGP's paths"
    traffic = view.traffic = stack.enter_context(EdgeTraffic(view.lab, busy=options.busy))
    view.event("start", "LAN traffic starts: ping streams, busy and idle TCP connections, "
               "IPv4 and IPv6, NATed at the edges")  # fmt: skip
    time.sleep(steady_s)
    failure: dict[str, Step] = {
        "fault": (
            f"gray failure on every ISP of {edge} ({isps}): they drop everything",
            PHASES[1],
            f"{edge}'s ISPs drop everything: ecmpd probes through them on {edge} and on the core",
        ),
        "out": (
            f"{edge} out of the core's balancer {{ms}} after the fault (the core's probes"
            " through it): the LAN's traffic moves to the other edges",
            None,
            f"{edge}'s connections are reset and reconnect by the other edges; theirs stay",
        ),
        "withdrawn": (
            f"BGP withdrew {edge}'s default at the core {{ms}} after the fault ({edge}'s"
            " ecmpd took its announce away)",
            None,
            None,
        ),
        "heal": (
            f"{edge}'s ISPs heal",
            PHASES[2],
            f"{edge}'s ISPs heal: its ecmpd announces it again once its probes pass",
        ),
        "announced": (f"{edge} announced again at the core {{ms}} after the heal", None, None),
        "back": (
            f"{edge} back in the core's balancer {{ms}} after the heal",
            None,
            f"{edge} takes new connections again; running ones stay where they are (marks)",
        ),
    }
    hold = max(edgerun.HOLD_S, steady_s)
    failed = _step(lambda: edgerun.isps_fail(view.routers, edge, hold, view.narrate(failure)))
    failure_seen = edgefigures.seen(traffic.stop(), failed.window)
    # The connections that moved stay where they are (their marks): the next scenario's
    # connections are new ones, spread over every edge again.
    traffic = view.traffic = stack.enter_context(EdgeTraffic(view.lab, busy=options.busy))
    view.event("fresh", "the LAN opens fresh connections: new ones spread over every edge")
    time.sleep(steady_s / 2)
    blackhole: dict[str, Step] = {
        "fault": (
            f"{black} forwards nothing: it drops what it should route, its BGP and BFD stay up",
            PHASES[3],
            f"{black} forwards nothing: BGP and BFD cannot tell; ecmpd's probes through it can",
        ),
        "out": (
            f"{black} out of the core's balancer {{ms}} after the fault (BGP still has every path)",
            None,
            f"the core's ecmpd took {black} out: BGP would have kept it, and its traffic lost",
        ),
        "heal": (f"{black} forwards again", None, None),
        "back": (f"{black} back in the core's balancer {{ms}} after the repair", None, None),
    }
    narrate = view.narrate(blackhole)
    blackholed = _step(
        lambda: edgerun.forwards_nothing(view.routers, black, hold_s=steady_s, notify=narrate)
    )
    return (failed, failure_seen), (blackholed, edgefigures.seen(traffic.stop(), blackholed.window))


def _step(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except TimeoutError as exc:
        raise DemoError(str(exc)) from exc


def _ms(seconds: float) -> str:
    return f"[bold]{seconds * 1000:.0f} ms[/]"

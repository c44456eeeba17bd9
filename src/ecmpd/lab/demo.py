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

Here: the options, the set-up and the run; lab.scenario holds the phases and the live
snapshot (lab.milestones what they wait for, lab.demoview the rows), lab.demoparts the
daemon, its status poller and the faults, lab.summary the figures and lab.summarytext
their rendering (pure).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecmpd.lab import netns
from ecmpd.lab.demoparts import DemoDaemon, DemoError, StatusPoller
from ecmpd.lab.groups import GroupHistory
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import IspInfo, Lab, isp_name
from ecmpd.lab.scenario import Demo, Progress
from ecmpd.lab.summary import DemoRun, summarize
from ecmpd.lab.topology import lab_session
from ecmpd.lab.traffic import Traffic
from ecmpd.lab.traffic6 import Traffic6
from ecmpd.live import Snapshot
from ecmpd.model import Family

DEFAULT_DURATION_S = 60.0
DAEMON_READY_TIMEOUT_S = 30.0
GROUP_POLL_S = 0.005
SAMPLE_S = 0.2
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
# Three ISPs balanced by weight, and an LTE backup (isp-d, 20 Mbit/s): tier 2, metered,
# so it stands by probed sparingly and its connections are reset on failback.
RATES_MBIT = (100, 200, 50, 20)
WEIGHTS = (2, 4, 1, 1)
BACKUP = "isp-d"
# Every uplink's upload queue in the router (`queue`, ecmpd.queues), a little below the
# line's rate, as an SD-WAN edge runs: without it the lab's modems queue the uploads in
# a drop-tail FIFO, where a failover's reconnects lose their first packets.
QUEUE_SHARE = 0.95
BACKUP_KEYS = {"tier": 2, "metered": True}


def uplink_keys(queues: bool) -> dict[str, dict[str, Any]]:
    """The demo's per-uplink keys: the backup's, and each uplink's queue if asked."""
    keys: dict[str, dict[str, Any]] = {BACKUP: dict(BACKUP_KEYS)}
    if queues:
        for i, rate in enumerate(RATES_MBIT):
            queue = {"rate": f"{int(rate * QUEUE_SHARE)}Mbit"}
            keys.setdefault(isp_name(i), {})["queue"] = queue
    return keys


DEMO_CONFIG: dict[str, Any] = {
    "hash": ["src-ip", "dst-ip", "ip-proto", "src-port", "dst-port"],
    "balancer": {"idle_timer": 2},
}


@dataclass
class DemoOptions:
    """What `ecmpd lab demo` was asked for."""

    duration_s: float = DEFAULT_DURATION_S
    fail: str | None = None  # the ISP to fail; default: the heaviest
    flows: int = FLOWS
    prefix: str | None = None
    seed: int = 1
    queues: bool = True  # False: no `queue` on the uplinks (uploads wait in the modems)


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
    queued = "ecmpd queues uploads at 95% of each line" if options.queues else "no `queue`"
    progress(
        "building the lab: router, LAN, 3 ISPs (100/200/50 Mbit/s TBF) and an LTE backup"
        f" (20 Mbit/s, tier 2, metered), internet; IPv4 and IPv6; {queued} ..."
    )
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(
            lab_session(
                workdir=workdir / "lab",
                isps=4,
                rates_mbit=RATES_MBIT,
                weights=WEIGHTS,
                lan=True,
                prefix=options.prefix,
            )
        )
        fail = _pick(lab, options.fail)
        built = time.monotonic()
        progress(f"lab up in {built - started:.1f} s: {' '.join(lab.namespaces())}")
        keys = uplink_keys(options.queues)
        config = write_lab_config(
            lab, workdir / "demo.yaml", extra=DEMO_CONFIG, ipv6=True, per_uplink=keys
        )
        progress("starting `ecmpd run` in the router namespace ...")
        daemon = stack.enter_context(
            DemoDaemon(lab, config, workdir / "run", workdir / "daemon.log")
        )
        daemon.wait_all_up(DAEMON_READY_TIMEOUT_S)
        ready = time.monotonic()
        uplinks = daemon.status(timeout=2.0).uplinks
        detection = {u.name: u.primary.detection_time_s for u in uplinks}
        progress(
            f"ecmpd: all {len(lab.isps)} uplinks up (isp-d standing by), IPv4 and IPv6, "
            f"after {ready - built:.1f} s"
        )
        families = (Family.INET, Family.INET6)
        watch = stack.enter_context(GroupHistory(lab, families, GROUP_POLL_S))
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
        demo.backup = BACKUP
        if live is not None:
            stack.enter_context(live(demo.snapshot))
        demo.run(options.duration_s)
        traffic.stop()
        result = summarize(record(demo, options))
        result["lab"]["namespaces"] = lab.namespaces()
        result["workdir"] = str(workdir)
        result["build_s"] = round(built - started, 2)
        result["daemon_ready_s"] = round(ready - built, 2)
        result["config"]["detection_time_s"] = detection
        result["config"]["queues"] = options.queues
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


def record(demo: Demo, options: DemoOptions) -> DemoRun:
    """What the run recorded, for the summary (after run())."""
    return DemoRun(
        lab=demo.lab,
        failed=demo.fail.name,
        duration_s=options.duration_s,
        t0=demo.t0,
        marks=demo.marks,
        samples=demo.traffic.all_samples(),
        conns=demo.traffic.all_conns(),
        moves=list(demo.traffic.moves),
        flows=demo.traffic.flows,
        lan_clients=LAN_CLIENTS,
        lifetime_s=LIFETIME_S,
        hash_fields=DEMO_CONFIG["hash"],
        idle_timer_s=DEMO_CONFIG["balancer"]["idle_timer"],
        affected=len(demo.affected),
        interrupted=demo.interrupted,
        resumed=demo.resumed,
        reset=demo.reset,
        reconnected=demo.reconnected,
        last_established=demo.last_established,
        reasons=demo.reasons,
        ipv6_flows=demo.ipv6_flows,
        events=demo.events,
        backup=demo.backup,
        on_backup_after=demo.on_backup_after,
    )

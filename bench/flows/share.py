"""recovered_share: how long a recovered uplink takes to get its weighted share of new flows."""

from __future__ import annotations

import contextlib
import json
import math
import random
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import progress, thread_in
from bench.flows.labs import (
    ECHO_TIMEOUT,
    FAILED,
    GROUP_TIMEOUT,
    daemon_session,
    nat_lab,
    router_config,
)
from bench.flows.lookups import fib_uplinks, forwarded_flows
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.netlink import open_iproute
from ecmpd.lab import netns
from ecmpd.lab.chat import chat, chat_specs
from ecmpd.lab.chatpool import ClientPool
from ecmpd.lab.faults import gray_failure, heal_gray_failure
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.layout import FIRST_LAN_CLIENT, ROUTER_LAN_IF, Lab
from ecmpd.model import Family

BUCKETS = 512
# ecmpd's default before connection marks kept established connections (now 0): the
# anchor the runs with short timers are scaled to.
DEFAULT_IDLE_TIMER = 60
# Sustained new-flow load in the recovered-share runs: each bucket is hit this many
# times per idle_timer on average (a per-bucket gap >= idle_timer then has e^-2 odds).
SUSTAINED_HITS_PER_IDLE = 2.0


class NewFlows:
    """New one-packet flows through the router's FIB (route lookups, random 5-tuples).

    A lookup marks its bucket used, as a forwarded packet does. rate None: as fast as
    one thread goes (every bucket hit many times a second); else about rate per second.
    """

    def __init__(self, lab: Lab, seed: int) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.count = 0
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._rate: float | None = None

    def start(self) -> None:
        """Starts at full speed."""
        self._thread = thread_in(self.lab.router, self._loop, "new-flows")

    def set_rate(self, rate: float | None) -> None:
        """Changes the rate (None: full speed)."""
        self._rate = rate

    def stop(self) -> None:
        """Stops; raises what the thread died of."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._errors:
            raise self._errors[0]

    def _loop(self) -> None:
        try:
            ipr = open_iproute()
            try:
                lan = ipr.link_lookup(ifname=ROUTER_LAN_IF)[0]
                destinations = [*self.lab.servers, *self.lab.alt_servers]
                started, done = time.monotonic(), 0
                while not self._stop.is_set():
                    rate = self._rate
                    if rate is not None:
                        # Paced against the clock since the last rate change would be
                        # exact; against the start is close enough and never bursts.
                        ahead = done / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(min(ahead, 0.01))
                            continue
                    nl.route_get(
                        ipr,
                        self.rng.choice(destinations),
                        src=FIRST_LAN_CLIENT + self.rng.randrange(250),
                        iif=lan,
                        ip_proto=socket.IPPROTO_UDP,
                        sport=self.rng.randint(1024, 65535),
                        dport=self.rng.randint(1, 65535),
                    )
                    done += 1
                    self.count += 1
                    if rate is None:
                        started, done = time.monotonic(), 0
            finally:
                ipr.close()
        except BaseException as exc:  # reported by stop()
            self._errors.append(exc)


def bucket_counts(lab: Lab, watch: GroupWatch) -> Counter[str]:
    """How many of the resilient group's buckets each uplink holds (read-only dump)."""
    group = watch.groups[Family.INET]

    def dump() -> str:
        # The child inherits this thread's namespace; `ip netns exec` would cost more.
        argv = ["ip", "-j", "nexthop", "bucket", "show", "id", str(group)]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    buckets = json.loads(netns.call_in(lab.router, dump) or "[]")
    return Counter(watch.names.get(b["bucket"]["nhid"], "?") for b in buckets)


def wants(lab: Lab, name: str, buckets: int = BUCKETS) -> int:
    """The kernel's bucket target for an uplink (nh_res_group_rebalance's rounding)."""
    total = sum(isp.weight for isp in lab.isps)
    cumulative, previous = 0, 0
    for isp in lab.isps:
        cumulative += isp.weight
        upper = (buckets * cumulative + total // 2) // total
        if isp.name == name:
            return upper - previous
        previous = upper
    raise KeyError(name)


def share_run(
    lab: Lab,
    watch: GroupWatch,
    pool: ClientPool,
    idle_timer: int,
    load: str,
    seed: int,
) -> dict[str, Any]:
    """One failure and recovery; the recovered uplink's bucket count over time."""
    # idle_timer 0 (ecmpd's default): the share is due at the group replace itself.
    timeout = idle_timer + 3.0 if load == "stops" or not idle_timer else 6.0 * idle_timer + 2
    everyone = frozenset(isp.name for isp in lab.isps)
    target = wants(lab, FAILED)
    flows = NewFlows(lab, seed)
    flows.start()
    try:
        time.sleep(0.5)  # every bucket has been hit
        gray_failure(lab.isp(FAILED).ns)
        watch.wait(lambda m: FAILED not in m, GROUP_TIMEOUT, f"{FAILED} out")
        # Heal only once every connection of the failed uplink has seen its reset and
        # reconnected elsewhere: a reset noticed after the heal is the failure's, and
        # must not be counted as a connection broken by the recovery.
        dead = str(lab.isp(FAILED).address.ip)
        deadline = time.monotonic() + 15.0
        while any(slot.public in (None, dead) for slot in pool.snapshot()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections still on {FAILED} or reconnecting")
            time.sleep(0.05)
        heal = time.monotonic()
        heal_gray_failure(lab.ns(FAILED))
        back = watch.wait(lambda m: m == everyone, GROUP_TIMEOUT, f"{FAILED} back")
        if load == "stops":
            flows.stop()
        elif idle_timer:
            flows.set_rate(SUSTAINED_HITS_PER_IDLE * BUCKETS / idle_timer)
        # else: idle_timer 0 under sustained load keeps the flows at full speed (every
        # bucket busy all the time): the harshest load there is.
        samples: list[tuple[float, int]] = []
        t_half = t_share = None
        while time.monotonic() - back < timeout:
            held = bucket_counts(lab, watch)[FAILED]
            now = time.monotonic() - back
            samples.append((round(now, 3), held))
            if t_half is None and held >= target / 2:
                t_half = now
            if held >= target:
                t_share = now
                break
            time.sleep(0.05)
    finally:
        flows.stop()
    final = bucket_counts(lab, watch)
    return {
        "idle_timer_s": idle_timer,
        "load": load,
        "new_flows_per_s_after": (
            0
            if load == "stops"
            else round(SUSTAINED_HITS_PER_IDLE * BUCKETS / idle_timer, 1)
            if idle_timer
            else "full speed"
        ),
        "wanted_buckets": target,
        "t_half_s": round(t_half, 3) if t_half is not None else None,
        "t_share_s": round(t_share, 3) if t_share is not None else None,
        "timeout_s": timeout,
        "buckets_at_end": dict(sorted(final.items())),
        "buckets_at_return": samples[0][1] if samples else None,
        "trace": _thin(samples),
        "long_lived_broken_at_recovery": sum(1 for s in pool.snapshot() if s.errors_since(heal)),
        "new_flow_share_after": new_flow_share(lab, 6000, seed + 1),
    }


def _thin(samples: list[tuple[float, int]], keep: int = 12) -> list[tuple[float, int]]:
    """At most `keep` samples: the changes of count first, then evenly spread."""
    changes = [s for k, s in enumerate(samples) if k == 0 or s[1] != samples[k - 1][1]]
    if len(changes) <= keep:
        return changes
    step = len(changes) / keep
    return [changes[math.floor(k * step)] for k in range(keep)] + [changes[-1]]


def new_flow_share(lab: Lab, n: int, seed: int) -> float:
    """The recovered uplink's share of n fresh forwarded flows (kernel lookups)."""
    uplinks = fib_uplinks(lab, forwarded_flows(lab, n, random.Random(seed)))
    return round(sum(1 for u in uplinks if u == FAILED) / n, 4)


def bench_share(
    prefix: str, workdir: Path, idle_timers: Sequence[int], connections: int, seed: int
) -> dict[str, Any]:
    """Part (c): time to the weighted share, per idle timer and load."""
    runs = []
    with nat_lab(prefix, workdir / "lab", isps=3, shaping=False) as lab:
        for idle_timer in idle_timers:
            where = workdir / f"t{idle_timer}"
            config = router_config(lab, where / "ecmpd.yaml", balancer={"idle_timer": idle_timer})
            with contextlib.ExitStack() as stack:
                watch = stack.enter_context(GroupWatch(lab))
                stack.enter_context(daemon_session(lab, config, where))
                specs = chat_specs(lab, connections)
                _, pool = stack.enter_context(chat(lab, specs, echo_timeout=ECHO_TIMEOUT))
                pool.wait_ready(30)
                for load in ("stops", "sustained"):
                    progress(f"recovered_share: idle_timer {idle_timer} s, load {load}")
                    runs.append(share_run(lab, watch, pool, idle_timer, load, seed))
        weights = [isp.weight for isp in lab.isps]
        share = lab.isp(FAILED).weight / sum(weights)
    return {
        "buckets": BUCKETS,
        "weights": weights,
        "recovered": FAILED,
        "weighted_share": round(share, 4),
        "long_lived_connections": connections,
        "runs": runs,
        "default_idle_timer_s": DEFAULT_IDLE_TIMER,
        "extrapolated_default": _extrapolate(runs),
    }


def _extrapolate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the runs predict for the default idle timer (see NOTES for the model)."""
    timed = [r for r in runs if r["t_share_s"] is not None and r["idle_timer_s"]]
    stops = [r for r in timed if r["load"] == "stops"]
    sustained = [r for r in timed if r["load"] == "sustained"]
    # Load that stops: the idle timer plus the kernel's upkeep delay (additive).
    overhead = max((r["t_share_s"] - r["idle_timer_s"] for r in stops), default=None)
    # Sustained load: the same lambda*T per bucket takes T/T_run times as long.
    scaled = max((r["t_share_s"] / r["idle_timer_s"] for r in sustained), default=None)
    return {
        "load_stops_t_share_s": (
            round(DEFAULT_IDLE_TIMER + overhead, 1) if overhead is not None else None
        ),
        "load_sustained_t_share_s": (
            round(scaled * DEFAULT_IDLE_TIMER, 1) if scaled is not None else None
        ),
        "load_sustained_new_flows_per_s": round(
            SUSTAINED_HITS_PER_IDLE * BUCKETS / DEFAULT_IDLE_TIMER, 1
        ),
    }

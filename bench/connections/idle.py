"""idle: idle NATed connections across another uplink's failure and recovery."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import progress
from bench.flows.labs import (
    FAILED,
    GROUP_TIMEOUT,
    L4_FIELDS,
    anchor_route,
    anchor_setup,
    anchor_teardown,
    daemon_session,
    nat_lab,
    router_config,
)
from ecmpd.lab import netns
from ecmpd.lab.chat import ChatServer
from ecmpd.lab.faults import gray_failure, heal_gray_failure
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.idleconns import IdleConns
from ecmpd.lab.layout import Lab
from ecmpd.lab.sources import validate_sources

BUCKETS = 512
ANCHOR_IDLE_TIMER = 2  # the resilient anchor's timer: short, so a run takes seconds
ANCHOR_GROUP = 900  # the anchor's nexthop ids: 900 the group, 901.. its nexthops


def idle_run(
    lab: Lab,
    before: int,
    during: int,
    silent_s: float,
    fail: Callable[[], object],
    restore: Callable[[], object],
) -> dict[str, Any]:
    """Connections opened before and during the failure, silent across the recovery."""
    public = {str(isp.address.ip): isp.name for isp in lab.isps}
    assert lab.lan is not None
    with ChatServer(lab.internet), IdleConns(lab.lan) as conns:
        conns.open(lab.pairs(before))
        fail()
        conns.open(lab.pairs(during, 7))
        restore()
        conns.watch(silent_s)
        broken = {id(c) for c in conns.check()}
        healthy = [c for c in conns.conns if public.get(c.public) != FAILED]
        lost = [c for c in healthy if id(c) in broken]
        opened_during = conns.conns[before:]
    return {
        "connections": len(conns.conns),
        "on_healthy_uplinks": len(healthy),
        "opened_during_failure": len(opened_during),
        "healthy_broken": len(lost),
        "healthy_broken_fraction": round(len(lost) / max(len(healthy), 1), 4),
        "broken_opened_during": sum(1 for c in opened_during if id(c) in broken),
        "how": dict(Counter(c.how or "no echo" for c in lost)),
    }


def anchor_group(lab: Lab, members: set[str]) -> None:
    """A resilient group alone (no marks), with ANCHOR_IDLE_TIMER, as the default route."""
    ids = []
    for k, isp in enumerate(lab.isps):
        nhid = ANCHOR_GROUP + 1 + k
        # Added once (a failure keeps the link, so the nexthop stays): replacing a member
        # of a resilient group is a change the group answers by moving buckets.
        argv = ["ip", "nexthop", "add", "id", str(nhid), "via", str(isp.gateway)]
        netns.run_in(lab.router, [*argv, "dev", isp.uplink_if], capture_output=True)
        if isp.name in members:
            ids.append(f"{nhid},{isp.weight}")
    argv = ["ip", "nexthop", "replace", "id", str(ANCHOR_GROUP), "group", "/".join(ids)]
    argv += ["type", "resilient", "idle_timer", str(ANCHOR_IDLE_TIMER)]
    exists = netns.run_in(lab.router, ["ip", "nexthop", "get", "id", str(ANCHOR_GROUP)],
                          capture_output=True).returncode == 0  # fmt: skip
    if not exists:
        argv += ["buckets", str(BUCKETS)]
    netns.run_in(lab.router, argv, check=True)
    netns.run_in(lab.router, ["ip", "route", "replace", "default", "nhid", str(ANCHOR_GROUP)],
                 check=True)  # fmt: skip


def bench_idle(prefix: str, workdir: Path, before: int, during: int) -> dict[str, Any]:
    """ecmpd against the resilient group alone and the classic route, in one lab."""
    silent = ANCHOR_IDLE_TIMER + 1.0  # longer than every variant's idle timer
    variants: dict[str, Any] = {}
    with nat_lab(prefix, workdir / "lab", isps=3, shaping=False) as lab:
        everyone = {isp.name for isp in lab.isps}
        dead = lab.isp(FAILED)
        validate_sources(lab)

        def run(switch: Callable[[set[str]], object]) -> dict[str, Any]:
            def fail() -> None:
                gray_failure(dead.ns)
                switch(everyone - {FAILED})

            def restore() -> None:
                heal_gray_failure(dead.ns)
                switch(everyone)

            return idle_run(lab, before, during, silent, fail, restore)

        progress(f"idle: ecmpd, {before} + {during} idle connections")
        config = router_config(lab, workdir / "ecmpd.yaml", hash_spec=L4_FIELDS)
        watch = GroupWatch(lab)
        try:
            with daemon_session(lab, config, workdir):  # the daemon does the switching
                variants["ecmpd"] = run(
                    lambda members: watch.wait(lambda m: m == members, GROUP_TIMEOUT, "group")
                )
        finally:
            watch.close()
        progress("idle: anchor resilient group alone")
        anchor_setup(lab, nat=True, hash_spec=L4_FIELDS)
        try:
            anchor_group(lab, everyone)
            variants["anchor_resilient_group"] = run(lambda members: anchor_group(lab, members))
            progress("idle: anchor multipath route")
            anchor_route(lab, everyone)
            variants["anchor_multipath_route"] = run(lambda members: anchor_route(lab, members))
        finally:
            anchor_teardown(lab)
            for nhid in range(ANCHOR_GROUP, ANCHOR_GROUP + 1 + len(lab.isps)):
                netns.run_in(lab.router, ["ip", "nexthop", "del", "id", str(nhid)],
                             capture_output=True)  # fmt: skip
    return {
        "buckets": BUCKETS,
        "failed": FAILED,
        "silent_s": silent,
        "anchor_idle_timer_s": ANCHOR_IDLE_TIMER,
        "variants": variants,
    }

"""False transitions: 5% random loss on every ISP, uplinks leaving service counted."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.common import (
    progress,
)
from bench.failover.cron import CronMonitor
from bench.failover.runs import Side
from ecmpd.config import CheckConfig
from ecmpd.lab.faults import heal, random_loss

LOSS_POLL = 0.05
LOSS_PERCENT = 5


def expected_false_downs(check: CheckConfig, loss: float, uplinks: int, seconds: float) -> float:
    """Rough expectation of downs: rounds x P(down_after bad rounds in a row), 2 targets.

    A round is bad only if both targets fail: the gateway's echo is dropped once (ISP
    input), the server's twice as likely (request and reply are forwarded by the ISP).
    """
    bad = loss * (1 - (1 - loss) ** 2)
    rounds = seconds / check.interval
    return uplinks * rounds * bad**check.down_after * (1 - bad)


def loss_phase(sides: Sequence[Side], cron: CronMonitor | None, seconds: float) -> dict[str, Any]:
    """5% loss on every ISP of every lab at once; counts uplinks leaving service."""
    for side in sides:
        side.settle()
    before = {s.name: (s.daemon.count_events("uplink.down"), s.daemon.uplinks()) for s in sides}
    cron_events = len(cron.events) if cron is not None else 0
    cron_ticks = cron.ticks if cron is not None else 0
    labs = [s.lab for s in sides] + ([cron.lab] if cron is not None else [])
    for lab in labs:
        for isp in lab.isps:
            random_loss(isp.ns, LOSS_PERCENT)
    departures = dict.fromkeys((s.name for s in sides), 0)
    previous = {s.name: s.all_names() for s in sides}
    try:
        start = time.monotonic()
        reported = start
        while (now := time.monotonic()) < start + seconds:
            for side in sides:
                members = side.watch.members()
                departures[side.name] += len(previous[side.name] - members)
                previous[side.name] = members
            if now - reported >= 60:
                reported = now
                progress(f"loss: {now - start:.0f}/{seconds:.0f} s, departures {departures}")
            time.sleep(LOSS_POLL)
    finally:
        for lab in labs:
            for isp in lab.isps:
                heal(isp.ns)
    per_config: dict[str, Any] = {}
    for side in sides:
        downs_before, uplinks_before = before[side.name]
        uplinks = side.daemon.uplinks()
        downs = side.daemon.count_events("uplink.down") - downs_before
        lost = sum(t.sent - t.received for u in uplinks.values() for t in u.targets)
        sent = sum(t.sent for u in uplinks.values() for t in u.targets)
        check = side.config.uplinks[0].check
        expected = expected_false_downs(check, LOSS_PERCENT / 100, len(uplinks), seconds)
        per_config[side.name] = {
            "count": max(downs, departures[side.name]),
            "down_events": downs,
            "group_departures": departures[side.name],
            "transitions": sum(
                uplinks[n].transitions - uplinks_before[n].transitions for n in uplinks
            ),
            "expected_count": float(f"{expected:.3g}"),
            "probe_loss_observed": round(lost / sent, 4) if sent else None,
        }
    result: dict[str, Any] = {
        "duration_s": seconds,
        "loss": LOSS_PERCENT / 100,
        "count": sum(c["count"] for c in per_config.values()),
        "per_config": per_config,
    }
    if cron is not None:
        ticks = cron.ticks - cron_ticks
        removals = sum(1 for e in cron.events[cron_events:] if len(e.members) < len(cron.lab.isps))
        result["anchor_cron"] = {
            "period_s": cron.period,
            "ticks": ticks,
            "false_removals": removals,
            "per_tick": round(removals / ticks, 4) if ticks else None,
        }
    return result

"""The demo's figures from what a run recorded. Pure.

summarize() turns a DemoRun (the marks, samples, connections and moves the scenario
in lab.demo recorded) into the JSON document `ecmpd lab demo --json` prints;
lab.summarytext's render_summary() writes that document's claims for a terminal.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ecmpd import __version__
from ecmpd.lab.layout import Lab
from ecmpd.lab.samples import Conn, Move, Sample, Window, window

PHASES = ("steady", "failure", "recovery", "backup")
WARMUP_S = 2.0  # TCP ramping up: not part of the steady figures (at most half the phase)
SETTLE_S = 1.0  # skipped after a restore or a rebalance before shares are averaged


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
    end: float | None = None  # of the recovery phase
    # The backup tier's phase: every tier-1 ISP fails, the backup takes over, they heal.
    tier_fault: float | None = None
    takeover: float | None = None
    tier_heal: float | None = None
    failback: float | None = None
    backup_end: float | None = None


@dataclass(frozen=True)
class DemoRun:
    """What one demo run recorded (monotonic seconds): the summary's only input."""

    lab: Lab
    failed: str  # the ISP that failed
    duration_s: float  # as asked
    t0: float  # when the traffic started
    marks: Marks
    samples: Sequence[Sample]
    conns: Sequence[Conn]
    moves: Sequence[Move]
    flows: int  # concurrent TCP flows
    lan_clients: int
    lifetime_s: tuple[float, float]
    hash_fields: Sequence[str]
    idle_timer_s: float
    affected: int  # flows on the failed uplink at the fault
    interrupted: int  # of those, the ones that stalled
    resumed: Sequence[float]  # per interrupted flow, fault -> delivering again (sorted)
    # per interrupted, established flow: fault -> its connection ended, and -> its next
    # connection established (each sorted)
    reset: Sequence[float]
    reconnected: Sequence[float]
    last_established: bool | None  # the last flow back: established at the fault, or opening
    reasons: Mapping[str, str]  # the daemon's: down, down6, up, up6
    ipv6_flows: Mapping[str, Any]  # the steady phase's light IPv6 flows (Traffic6.finish)
    events: Sequence[Mapping[str, Any]]
    backup: str | None = None  # the tier-2 (metered) ISP, standing by until its phase
    on_backup_after: int | None = None  # its flows AFTER_FAILBACK_S after the failback


def summarize(demo: DemoRun) -> dict[str, Any]:
    """The run's figures as a JSON-ready document."""
    m, lab, name, samples = demo.marks, demo.lab, demo.failed, demo.samples
    assert m.fault and m.removed and m.restored and m.heal and m.back and m.end, "run() first"
    assert m.removed6 and m.back6, "run() first"
    # The backup tier carries nothing until its phase: the shares are tier 1's.
    everyone = [isp.name for isp in lab.isps if isp.name != demo.backup]
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
    conns = demo.conns
    errors = [c for c in conns if c.error is not None]
    expected = [
        c
        for c in errors
        if (name in c.uplinks() and (c.closed or m.end) >= m.fault)
        # The backup phase fails every tier-1 uplink, and failback resets the backup's.
        or (m.tier_fault is not None and (c.closed or m.end) >= m.tier_fault)
    ]
    healthy_errors = [c for c in errors if c not in expected]
    moves = demo.moves
    steady = phases["steady"]
    best = max(isp.rate_mbit for isp in lab.isps)
    return {
        "demo": "ecmpd lab demo",
        "version": __version__,
        "duration_s": demo.duration_s,
        "elapsed_s": round((m.backup_end or m.end) - demo.t0, 2),
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
            "lan_clients": demo.lan_clients,
        },
        "config": {
            "check": "defaults",
            "hash": list(demo.hash_fields),
            "idle_timer_s": demo.idle_timer_s,
        },
        "traffic": {
            "flows": demo.flows,
            "lifetime_s": list(demo.lifetime_s),
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
            "flows_on_it": demo.affected,
            "interrupted_flows": demo.interrupted,
            "removal_ms": _ms(m.removed - m.fault),
            "restore_ms": _ms(m.restored - m.fault),
            "restore_median_ms": _ms(statistics.median(demo.resumed)) if demo.resumed else None,
            # The measure: every interrupted flow delivering again, from the moment
            # the uplink left the group (its connections are reset then: on_failure); the
            # median of the same.
            "restore_after_removal_ms": _ms(m.restored - m.removed),
            "restore_median_after_removal_ms": (
                _ms(m.fault + statistics.median(demo.resumed) - m.removed) if demo.resumed else None
            ),
            # After the uplink left the group: every established flow on it reset (the
            # worst), and reconnected by the others (the median; its data then meets the
            # loaded remaining uplinks, whose queues decide when it delivers).
            "reset_after_removal_ms": (
                _ms(m.fault + demo.reset[-1] - m.removed) if demo.reset else None
            ),
            "reconnected_after_removal_ms": (
                _ms(m.fault + statistics.median(demo.reconnected) - m.removed)
                if demo.reconnected
                else None
            ),
            # ... and the last of them (a SYN lost in those queues is kicked: ecmpd.reconnects).
            "reconnected_last_after_removal_ms": (
                _ms(m.fault + demo.reconnected[-1] - m.removed) if demo.reconnected else None
            ),
            # Whether the last flow back had its connection established at the fault (it
            # was reset) or still opening (it came back on its SYN's retransmission).
            "last_flow_established_at_fault": demo.last_established,
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
            "steady_flows": dict(demo.ipv6_flows),
        },
        "backup": _backup(demo),
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
                {
                    (mv.slot, mv.serial)
                    for mv in moves
                    if not mv.healthy and mv.old == name and mv.t <= m.heal
                }
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
        "events": [dict(e) for e in demo.events],
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


def _timeline(samples: Sequence[Sample], t0: float, names: list[str]) -> dict[str, Any]:
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


def _backup(demo: DemoRun) -> dict[str, Any] | None:
    """The backup tier's phase: takeover after the faults, failback after the heal."""
    m = demo.marks
    if demo.backup is None or not (m.tier_fault and m.takeover and m.tier_heal and m.failback):
        return None
    return {
        "uplink": demo.backup,
        "takeover_ms": _ms(m.takeover - m.tier_fault),
        "failback_ms": _ms(m.failback - m.tier_heal),
        "flows_on_it_after_failback": demo.on_backup_after,
    }

"""The demo's live view, pure: the per-uplink rows, the caption of the phase and the IPv6
group line that ecmpd.live's frame shows of a running scenario (lab.scenario builds the
snapshot from them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ecmpd.lab.layout import IspInfo
from ecmpd.lab.samples import Sample, window
from ecmpd.lab.summary import Marks
from ecmpd.live import UplinkView
from ecmpd.livecells import family_views, health_figures, order_cell
from ecmpd.status import UplinkStatus

VIEW_WINDOW_S = 0.6  # the live figures average the last few samples
HISTORY_STEP_S = 0.5
HISTORY_POINTS = 240


def uplink_views(
    isps: Sequence[IspInfo],
    status_of: Callable[[str], UplinkStatus | None],
    members: frozenset[str],
    samples: Sequence[Sample],
    *,
    with_history: bool,
) -> list[UplinkView]:
    """One row per ISP: the daemon's status, the group's membership (members), the rates
    of the last VIEW_WINDOW_S of samples, and with_history their throughput over time."""
    now = samples[-1].t if samples else 0.0
    recent = window(samples, now - VIEW_WINDOW_S, now)
    flows = samples[-1].flows if samples else {}
    views = []
    for isp in isps:
        status = status_of(isp.name)
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
                history=history(samples, isp.name) if with_history else (),
                families=family_views(status) if status else (),
                order=order_cell(status),
            )
        )
    return views


def history(samples: Sequence[Sample], name: str) -> tuple[float, ...]:
    """The uplink's throughput binned by HISTORY_STEP_S, oldest first."""
    if not samples:
        return ()
    bins: dict[int, list[float]] = {}
    for s in samples:
        bins.setdefault(int(s.t // HISTORY_STEP_S), []).append(s.tx_mbit.get(name, 0.0))
    return tuple(sum(v) / len(v) for _, v in sorted(bins.items()))


def caption(marks: Marks, name: str, backup: str | None) -> str:
    """What to look at in the current phase (name: the ISP that fails first)."""
    m = marks
    if m.fault is None:
        return "every uplink is full, and carries its weight's share (┃ on the share bar)"
    if m.removed is None:
        return f"{name} silently drops everything: ecmpd's probes through it go unanswered"
    if m.heal is None:
        return f"{name} is out of the group: its flows come back on the others, by weight"
    if m.back is None:
        return f"{name} heals: ecmpd waits for good probe rounds before taking it back"
    backup = backup or "the backup"
    if m.tier_fault is None:
        return f"{name} is back: new flows fill it, running flows stay where they are"
    if m.takeover is None:
        return f"every tier-1 ISP drops everything: {backup} stands by, ready"
    if m.tier_heal is None:
        return f"{backup} (tier 2) carries everything, within the same failover time"
    if m.failback is None:
        return "tier 1 heals: ecmpd waits for good probe rounds before it carries again"
    return f"tier 1 carries again; {backup}'s connections were reset: it carries nothing"


def ipv6_group(isps: Sequence[IspInfo], members6: frozenset[str]) -> str:
    """Who is out of the kernel's IPv6 group: the table's per-family states are the
    daemon's, this is the kernel's measure (as the share column's is for IPv4)."""
    out = [isp.name for isp in isps if isp.name not in members6]
    return "IPv6 group: " + (f"{', '.join(out)} out" if out else "all in")

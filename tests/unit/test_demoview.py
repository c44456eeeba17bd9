"""lab.demoview: the demo's live rows, its caption phase by phase and the IPv6 group line,
from hand-made samples, marks and statuses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ecmpd.lab.demoview import HISTORY_STEP_S, caption, history, ipv6_group, uplink_views
from ecmpd.lab.layout import plan_lab
from ecmpd.lab.samples import Sample
from ecmpd.lab.summary import Marks
from ecmpd.status import UplinkStatus
from tests.unit.fixtures import uplink

LAB = plan_lab(workdir=Path("/nonexistent"), prefix="ecmpd-unit-")  # no namespace made
NAMES = [isp.name for isp in LAB.isps]


def sample(t: float, mbit: float) -> Sample:
    tx = dict.fromkeys(NAMES, mbit)
    return Sample(t, tx, tx, tx, dict.fromkeys(NAMES, 2), None)


def test_caption_follows_the_marks_phase_by_phase() -> None:
    steps = ["fault", "removed", "heal", "back", "tier_fault", "takeover", "tier_heal", "failback"]
    marks, seen = Marks(), [caption(Marks(), "isp-b", "isp-d")]
    for step in steps:
        marks = replace(marks, **{step: 1.0})
        seen.append(caption(marks, "isp-b", "isp-d"))
    assert len(set(seen)) == len(seen)  # every phase has its own
    assert "every uplink is full" in seen[0]
    assert seen[1].startswith("isp-b silently drops")
    assert "isp-d stands by" in seen[5]
    assert seen[-1].endswith("it carries nothing") and "isp-d's connections" in seen[-1]
    before_takeover = replace(Marks(), fault=1.0, removed=1.0, heal=1.0, back=1.0, tier_fault=1.0)
    assert "the backup stands by" in caption(before_takeover, "isp-b", None)


def test_history_bins_by_the_step_oldest_first() -> None:
    step = HISTORY_STEP_S
    samples = [sample(10 * step + k * step / 4, float(k)) for k in range(8)]
    assert history(samples, NAMES[0]) == pytest.approx((1.5, 5.5))  # (0+1+2+3)/4, (4+..+7)/4
    assert history(samples, "isp-z") == pytest.approx((0.0, 0.0))
    assert history([], NAMES[0]) == ()


def test_ipv6_group_names_who_is_out() -> None:
    assert ipv6_group(LAB.isps, frozenset(NAMES)) == "IPv6 group: all in"
    assert ipv6_group(LAB.isps, frozenset(NAMES[1:])) == f"IPv6 group: {NAMES[0]} out"


def test_uplink_views_join_status_group_and_rates() -> None:
    first = NAMES[0]
    statuses = {first: uplink(first, LAB.isps[0].uplink_if, "up", "up")}

    def status_of(name: str) -> UplinkStatus | None:
        return statuses.get(name)

    samples = [sample(100.0 + k * 0.2, 40.0) for k in range(10)]
    views = uplink_views(LAB.isps, status_of, frozenset({first}), samples, with_history=True)
    assert [v.name for v in views] == NAMES
    one, other = views[0], views[1]
    assert (one.state, one.in_balancer, one.mbit, one.flows) == ("up", True, 40.0, 2)
    assert one.health == "up" and one.families and one.order.tier == 1
    assert (other.state, other.in_balancer, other.health, other.families) == (
        "unknown",
        False,
        None,
        (),
    )
    assert one.capacity_mbit == float(LAB.isps[0].rate_mbit) and one.history
    plain = uplink_views(LAB.isps, status_of, frozenset(), samples, with_history=False)
    assert all(v.history == () and not v.in_balancer for v in plain)
    empty = uplink_views(LAB.isps, status_of, frozenset(), [], with_history=True)
    assert all(v.mbit == 0.0 and v.flows is None and v.history == () for v in empty)

"""The demo's summary from a hand-made run record: phases, failover, flows moved, errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from ecmpd.lab.layout import plan_lab
from ecmpd.lab.samples import Conn, Move, Sample
from ecmpd.lab.summary import DemoRun, Marks, summarize
from ecmpd.lab.summarytext import render_summary

T0 = 100.0
LAB = plan_lab(workdir=Path("/nonexistent"), prefix="ecmpd-unit-")  # no namespace made
MARKS = Marks(
    fault=110.0,
    removed=110.5,
    removed6=110.8,
    restored=112.0,
    heal=118.0,
    back=120.0,
    back6=120.4,
    rebalanced=122.0,
    end=130.0,
)
FULL = {"isp-a": 100.0, "isp-b": 200.0, "isp-c": 50.0}  # the lab's rates: weights 2/4/1
WITHOUT_B = {"isp-a": 100.0, "isp-b": 0.0, "isp-c": 50.0}
IPV6_FLOWS = {
    "flows": 6,
    "delivered": 6,
    "client": "2001:db8:200::2",
    "by_isp": {"isp-a": 2, "isp-b": 3, "isp-c": 1},
    "out_share": {"isp-a": 0.3, "isp-b": 0.55, "isp-c": 0.15},
    "target_share": {"isp-a": 2 / 7, "isp-b": 4 / 7, "isp-c": 1 / 7},
}


def sample(t: float) -> Sample:
    """isp-b carries nothing from the fault to the heal; all three carry their rate else."""
    tx = WITHOUT_B if 110.0 < t <= 120.0 else FULL
    return Sample(t, dict(tx), dict(tx), dict(tx), {"isp-a": 2, "isp-b": 4, "isp-c": 1}, None)


def conn(slot: int, uplink: str, **more: Any) -> Conn:
    """A connection from the LAN, opened at 105 s."""
    fields: dict[str, Any] = {
        "slot": slot,
        "serial": 1,
        "client": LAB.servers[0],
        "server": LAB.servers[1],
        "sport": 40000 + slot,
        "opened": 105.0,
        "lifetime": 5.0,
        "uplink": uplink,
    }
    fields.update(more)
    return Conn(**fields)


def record(**changes: Any) -> DemoRun:
    fields: dict[str, Any] = {
        "lab": LAB,
        "failed": "isp-b",
        "duration_s": 30.0,
        "t0": T0,
        "marks": MARKS,
        "samples": [sample(T0 + k * 0.5) for k in range(61)],
        "conns": [
            conn(0, "isp-b", closed=110.2, error="reset"),  # ended by the failure
            conn(1, "isp-a", closed=115.0, error="timeout"),  # a healthy flow's error
            conn(2, "isp-c"),
        ],
        "moves": [
            Move(110.6, 0, 1, "isp-b", "isp-a", healthy=False),
            Move(125.0, 2, 1, "isp-c", "isp-a", healthy=True),
        ],
        "flows": 3,
        "lan_clients": 16,
        "lifetime_s": (3.0, 8.0),
        "hash_fields": ["src-ip", "dst-ip"],
        "idle_timer_s": 2,
        "affected": 1,
        "interrupted": 2,
        "resumed": [0.5, 2.0],
        "reset": [0.52, 0.55],  # fault -> reset; removal is 0.5 s after it
        "reconnected": [0.6, 0.65],
        "last_established": True,
        "reasons": {"down": "3/3 probes lost", "up": "probes answered", "down6": "", "up6": ""},
        "ipv6_flows": IPV6_FLOWS,
        "events": [{"t": 10.0, "kind": "fault", "text": "gray failure"}],
    }
    fields.update(changes)
    return DemoRun(**fields)


def test_phases_average_their_settled_part_against_the_weights() -> None:
    result = summarize(record())
    steady, failure, recovery = (result["phases"][p] for p in ("steady", "failure", "recovery"))
    assert (steady["from_s"], steady["to_s"]) == (2.0, 10.0)  # after TCP's ramp-up
    assert (failure["from_s"], failure["to_s"]) == (13.0, 18.0)  # restored + settle .. heal
    assert (recovery["from_s"], recovery["to_s"]) == (23.0, 30.0)  # rebalanced + settle .. end
    assert steady["aggregate_mbit"] == 350.0 and steady["capacity_mbit"] == 350
    assert steady["uplinks"]["isp-b"]["target_share"] == pytest.approx(4 / 7, abs=1e-4)
    assert steady["max_error_pp"] == 0.0
    # During the failure only the other two count, by their own weights.
    assert failure["capacity_mbit"] == 150 and failure["aggregate_fraction"] == 1.0
    assert failure["uplinks"]["isp-b"]["target_share"] == 0.0
    assert failure["uplinks"]["isp-a"]["target_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert recovery["max_error_pp"] == 0.0
    assert result["vs_best_single_uplink"] == 1.75  # 350 of the fastest uplink's 200
    assert result["aggregate_fraction"] == 1.0


def test_failover_and_recovery_are_timed_from_the_marks() -> None:
    result = summarize(record())
    assert result["failover"] == {
        "uplink": "isp-b",
        "flows_on_it": 1,
        "interrupted_flows": 2,
        "removal_ms": 500.0,
        "restore_ms": 2000.0,
        "restore_median_ms": 1250.0,
        "restore_after_removal_ms": 1500.0,
        "restore_median_after_removal_ms": 750.0,
        "reset_after_removal_ms": 50.0,
        "reconnected_after_removal_ms": 125.0,
        "reconnected_last_after_removal_ms": 150.0,
        "last_flow_established_at_fault": True,
        "reason": "3/3 probes lost",
    }
    assert result["recovery"] == {
        "back_in_group_ms": 2000.0,
        "rebalanced_ms": 2000.0,
        "reason": "probes answered",
    }
    assert (result["ipv6"]["removal_ms"], result["ipv6"]["back_in_group_ms"]) == (800.0, 2400.0)
    assert result["elapsed_s"] == 30.0


def test_a_recovery_that_never_rebalanced_has_no_rebalance_time() -> None:
    marks = Marks(**{**MARKS.__dict__, "rebalanced": None})
    result = summarize(record(marks=marks))
    assert result["recovery"]["rebalanced_ms"] is None
    assert result["phases"]["recovery"]["from_s"] == 21.0  # back + settle


def test_flows_moved_and_errors_tell_the_failed_uplink_from_healthy_ones() -> None:
    result = summarize(record())
    moved = result["flows_moved"]
    assert (moved["off_failed_uplink"], moved["rerouted_seen"], moved["healthy"]) == (1, 1, 1)
    assert moved["healthy_moves"] == [{"t": 25.0, "from": "isp-c", "to": "isp-a"}]
    errors = result["errors"]
    assert (errors["total"], errors["on_failed_uplink"], errors["healthy"]) == (2, 1, 1)
    assert errors["kinds"] == {"reset": 1, "timeout": 1}
    assert errors["healthy_detail"] == [{"t": 15.0, "error": "timeout", "uplinks": ["isp-a"]}]


def test_the_timeline_has_every_sample_per_uplink() -> None:
    timeline = summarize(record())["timeline"]
    assert len(timeline["t"]) == 61 and timeline["t"][0] == 0.0
    assert timeline["tx_mbit"]["isp-b"][25] == 0.0  # t = 12.5 s: in the failure
    assert timeline["in_group"]["isp-a"][0] is None  # the samples read no group


def test_summary_needs_a_finished_run() -> None:
    with pytest.raises(AssertionError, match="run"):
        summarize(record(marks=Marks(fault=110.0)))


def test_the_rendered_summary_states_the_measured_figures() -> None:
    result = summarize(record())
    result["build_s"] = 4.2
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(render_summary(result))
    text = out.getvalue()
    assert "350 Mbit/s of 350 summed capacity (100%), 1.75x the fastest uplink alone" in text
    assert "out of the group after 500 ms" in text
    assert "connections reset within 50 ms of that, interrupted flows back" in text
    assert "(reconnected by the others) within 125 ms (median; the last 150 ms)" in text
    assert "delivering again within 750 ms (median) and 1500 ms (all) of it leaving" in text
    assert "1250 ms (median) and 2000 ms (all) after the fault" in text
    assert "1 healthy flows moved" in text and "1 errors on healthy flows" in text
    assert "isp-b out of the IPv6 group after 800 ms" in text
    assert "lab built in 4.2 s" in text

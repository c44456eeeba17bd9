"""One ecmpd config in its own lab: gray failure and carrier runs under traffic."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    BenchError,
    progress,
    summary,
)
from bench.failover.timing import (
    FAULT_JITTER,
    RECOVERY_TIMEOUT,
    REMOVAL_TIMEOUT,
    settle_after_removal,
)
from bench.failover.traffic import pick_isp, restore_times, traffic
from ecmpd.config import CheckConfig, Config, parse_config
from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import ISP_CUSTOMER_IF, IspInfo, Lab
from ecmpd.lab.wait import wait_until


@dataclass
class Side:
    """One ecmpd config in its own lab: the daemon, the group watch and the samples."""

    name: str
    lab: Lab
    config: Config
    daemon: LabDaemon
    watch: GroupWatch
    runs: list[dict[str, Any]] = field(default_factory=list)
    carrier_runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def all_names(self) -> frozenset[str]:
        """Every uplink of the lab."""
        return frozenset(isp.name for isp in self.lab.isps)

    def settle(self) -> None:
        """Waits until every uplink is up and in the group (after a fault or at start)."""
        wait_until(self.daemon.all_in_service, RECOVERY_TIMEOUT, f"{self.name}: all up", 0.02)
        if self.watch.members() != self.all_names():
            raise BenchError(f"{self.name}: group {sorted(self.watch.members())} after settling")


def gray_run(side: Side, turn: int, port_base: int, rng: random.Random) -> dict[str, Any]:
    """Gray failure on an ISP carrying flows, under traffic; then heal and time recovery."""
    side.settle()
    with traffic(side.lab, port_base) as flows:
        isp = pick_isp(side.lab, flows, turn)
        carried = flows.flows_on()[isp.name]
        time.sleep(rng.uniform(0, FAULT_JITTER))
        t_fault = time.monotonic()
        nft_s = gray_failure(isp.ns)
        t_removed, t_end = settle_after_removal(
            lambda: side.watch.wait(
                lambda m: isp.name not in m, REMOVAL_TIMEOUT, f"{isp.name} out of the group"
            ),
            lambda t: t,
            lambda: heal(isp.ns),
        )
    restored = restore_times(flows, t_fault, t_end)
    t_heal = time.monotonic()
    heal(isp.ns)
    if restored.flows_hit == 0:
        raise BenchError(f"the gray failure of {isp.name} interrupted no UDP flow")
    t_back = side.watch.wait(lambda m: isp.name in m, RECOVERY_TIMEOUT, f"{isp.name} back")
    return {
        "isp": isp.name,
        "flows_on_isp": carried,
        "flows_hit": restored.flows_hit,
        "fault_nft_ms": round(nft_s * 1000, 2),
        "removal_s": round(t_removed - t_fault, 4),
        "restore_udp_s": round(restored.udp_s, 4),
        "restore_tcp_s": round(restored.tcp_s, 4),
        "tcp_failed_attempts": restored.tcp_failed,
        "recovery_s": round(t_back - t_heal, 4),
        "udp_send_errors": flows.send_errors,
    }


def set_port(isp: IspInfo, up: bool) -> float:
    """Sets the ISP's router-facing port up or down; returns the time just before the request."""
    with netns.iproute(isp.ns) as ipr:
        index = ipr.link_lookup(ifname=ISP_CUSTOMER_IF)[0]
        start = time.monotonic()
        ipr.link("set", index=index, state="up" if up else "down")
    return start


def carrier_run(side: Side, turn: int, port_base: int) -> dict[str, Any]:
    """The ISP's port goes down (carrier loss on the router's uplink), under traffic; then up."""
    side.settle()
    with traffic(side.lab, port_base) as flows:
        isp = pick_isp(side.lab, flows, turn)
        t_fault = set_port(isp, up=False)
        t_removed, t_end = settle_after_removal(
            lambda: side.watch.wait(
                lambda m: isp.name not in m, REMOVAL_TIMEOUT, f"{isp.name} out (carrier)"
            ),
            lambda t: t,
            lambda: set_port(isp, up=True),
        )
    restored = restore_times(flows, t_fault, t_end)
    t_up = set_port(isp, up=True)
    t_back = side.watch.wait(lambda m: isp.name in m, RECOVERY_TIMEOUT, f"{isp.name} back")
    return {
        "isp": isp.name,
        "removal_ms": round((t_removed - t_fault) * 1000, 3),
        "restore_udp_s": round(restored.udp_s, 4),
        "recovery_s": round(t_back - t_up, 4),
    }


def side_result(side: Side) -> dict[str, Any]:
    """One config's samples, summarised."""
    check = side.config.uplinks[0].check
    runs, carrier = side.runs, side.carrier_runs

    def of(rows: list[dict[str, Any]], key: str) -> dict[str, float] | None:
        return summary([r[key] for r in rows]) if rows else None

    return {
        "check": check_summary(check),
        "detection_bound_s": round(detection_time(check), 4),
        "recovery_bound_s": round(recovery_time(check), 4),
        "restore_udp_s": of(runs, "restore_udp_s"),
        "restore_tcp_s": of(runs, "restore_tcp_s"),
        "removal_s": of(runs, "removal_s"),
        "recovery_s": of(runs, "recovery_s"),
        "carrier_removal_ms": of(carrier, "removal_ms"),
        "carrier_restore_udp_s": of(carrier, "restore_udp_s"),
        "carrier_recovery_s": of(carrier, "recovery_s"),
        "fault_nft_ms": of(runs, "fault_nft_ms"),
        "flows_hit": of(runs, "flows_hit"),
        "tcp_interrupted_runs": sum(1 for r in runs if r["tcp_failed_attempts"] > 0),
        "failed_runs": side.failures,
        "runs": runs,
        "carrier_runs": carrier,
    }


def check_summary(check: CheckConfig) -> dict[str, Any]:
    """A check's timing keys, as the document shows them."""
    return {
        "interval_s": check.interval,
        "timeout_s": check.timeout,
        "down_after": check.down_after,
        "up_after": check.up_after,
        "targets_per_uplink": len(check.targets) or 1,
    }


def write_config(lab: Lab, path: Path, check: dict[str, Any] | None) -> Config:
    """The lab's config with these check keys on every uplink (none: the defaults)."""
    data = lab_config(lab)
    for uplink in data["uplinks"]:
        uplink["check"].update(check or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return parse_config(path.read_text(), str(path))


def guarded(failures: list[str], what: str, func: Callable[[], dict[str, Any]]) -> None:
    """Runs one measured run; a BenchError or timeout is recorded and the benchmark goes on."""
    try:
        func()
    except (BenchError, TimeoutError) as exc:
        failures.append(f"{what}: {exc}")
        progress(f"{what} FAILED: {exc}")

"""IPv6: one family's gray failure in a dual-stack lab, the other family watched."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    BenchError,
    progress,
    summary,
)
from bench.failover.runs import check_summary, guarded
from bench.failover.timing import FAULT_JITTER, RECOVERY_TIMEOUT, REMOVAL_TIMEOUT
from ecmpd.config import Config, parse_config
from ecmpd.desired import FAMILIES
from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.lab.daemon import LabDaemon, running_daemon
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import GROUP_POLL_S, GroupWatch
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import lab_session
from ecmpd.lab.wait import wait_until
from ecmpd.model import FAMILY_NAMES, Family

# A family gray failure is held this long after the group change (and the other
# family's group watched all along), so the daemon has time to get the other one wrong.
FAMILY_HOLD = 0.5


@dataclass
class DualStack:
    """The dual-stack lab: its daemon, a group watch per family and the samples."""

    lab: Lab
    config: Config
    daemon: LabDaemon
    watch: GroupWatch  # both families
    runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def all_names(self) -> frozenset[str]:
        """Every uplink of the lab."""
        return frozenset(isp.name for isp in self.lab.isps)

    def every_family_in_service(self) -> bool:
        """Whether the daemon has each uplink up and in the balancer in both families."""
        wanted = set(FAMILY_NAMES.values())
        return self.daemon.every_family_in_service() and all(
            set(u.families) == wanted for u in self.daemon.uplinks().values()
        )

    def settle(self) -> None:
        """Waits until every uplink is up in both families, and both groups are full."""
        wait_until(self.every_family_in_service, RECOVERY_TIMEOUT, "dual-stack: all up", 0.02)
        for family in self.watch.families:
            if self.watch.members(family) != self.all_names():
                raise BenchError(
                    f"{FAMILY_NAMES[family]} group {sorted(self.watch.members(family))} "
                    "after settling"
                )


def family_gray_run(
    dual: DualStack, family: Family, turn: int, rng: random.Random
) -> dict[str, Any]:
    """One family's gray failure of an ISP: fault -> out of that family's group, heal ->
    back; the other family's group is read at every poll, from the fault to the return."""
    dual.settle()
    name = FAMILY_NAMES[family]
    isp = dual.lab.isps[turn % len(dual.lab.isps)]
    everyone = dual.all_names()
    other = next(f for f in dual.watch.families if f is not family)
    polls, changed = 0, 0

    def members() -> frozenset[str]:
        """This family's group; counts the polls that found the other one short of an uplink."""
        nonlocal polls, changed
        polls += 1
        changed += dual.watch.members(other) != everyone
        return dual.watch.members(family)

    time.sleep(rng.uniform(0, FAULT_JITTER))
    t_fault = time.monotonic()
    nft_s = gray_failure(isp.ns, family)
    try:
        out = f"{isp.name} out of {name}"
        t_out = wait_until(lambda: isp.name not in members(), REMOVAL_TIMEOUT, out, GROUP_POLL_S)
        left = members()
        while time.monotonic() < t_out + FAMILY_HOLD:
            members()
            time.sleep(GROUP_POLL_S)
    except BaseException:
        heal(isp.ns)
        raise
    t_heal = time.monotonic()
    heal(isp.ns)
    t_back = wait_until(
        lambda: isp.name in members(), RECOVERY_TIMEOUT, f"{isp.name} back in {name}", GROUP_POLL_S
    )
    if left != everyone - {isp.name}:
        raise BenchError(f"{name} gray failure of {isp.name} left the group {sorted(left)}")
    return {
        "family": name,
        "isp": isp.name,
        "fault_nft_ms": round(nft_s * 1000, 2),
        "removal_s": round(t_out - t_fault, 4),
        "recovery_s": round(t_back - t_heal, 4),
        "other_family_polls": polls,
        "other_family_changed_polls": changed,
    }


def ipv6_phase(workdir: Path, prefix: str, runs: int, rng: random.Random) -> dict[str, Any]:
    """IPv6-only gray failures, each paired with an IPv4-only one of the same ISP (the anchor)."""
    with lab_session(workdir=workdir / "lab", isps=3, prefix=prefix, ipv6=True) as lab:
        path = workdir / "dual.yaml"
        path.write_text(yaml.safe_dump(lab_config(lab, ipv6=True), sort_keys=False), "utf-8")
        config = parse_config(path.read_text(), str(path))
        with contextlib.ExitStack() as stack:
            daemon = stack.enter_context(running_daemon(lab.router, path, workdir / "daemon"))
            watch = stack.enter_context(GroupWatch(lab, FAMILIES))
            dual = DualStack(lab, config, daemon, watch)
            for k in range(runs):
                # Alternating which family goes first cancels any effect of the order.
                order = (Family.INET6, Family.INET) if k % 2 == 0 else (Family.INET, Family.INET6)
                for family in order:
                    what = f"{FAMILY_NAMES[family]} gray run {k + 1}"

                    def run(family: Family = family, k: int = k) -> dict[str, Any]:
                        row = family_gray_run(dual, family, k, rng)
                        dual.runs.append(row)
                        return row

                    progress(f"dual-stack: {what}/{runs}")
                    guarded(dual.failures, what, run)
            return ipv6_result(dual)


def family_of(address: IPv4Address | IPv6Address) -> Family:
    """An address's family."""
    return Family.INET6 if address.version == 6 else Family.INET


def ipv6_result(dual: DualStack) -> dict[str, Any]:
    """The dual-stack samples, summarised per family."""
    check = dual.config.uplinks[0].check

    def of(family: Family, key: str) -> dict[str, float] | None:
        values = [r[key] for r in dual.runs if r["family"] == FAMILY_NAMES[family]]
        return summary(values) if values else None

    return {
        "isps": len(dual.lab.isps),
        "check": check_summary(check),
        "targets_per_family": dict(Counter(FAMILY_NAMES[family_of(t)] for t in check.targets)),
        "detection_bound_s": round(detection_time(check), 4),
        "recovery_bound_s": round(recovery_time(check), 4),
        "ipv6_removal_s": of(Family.INET6, "removal_s"),
        "ipv6_recovery_s": of(Family.INET6, "recovery_s"),
        "ipv4_removal_s": of(Family.INET, "removal_s"),
        "ipv4_recovery_s": of(Family.INET, "recovery_s"),
        "fault_nft_ms": summary([r["fault_nft_ms"] for r in dual.runs]) if dual.runs else None,
        # By the family that failed: runs in which the other family's group lost an uplink.
        "other_family_changes": {
            name: sum(
                1 for r in dual.runs if r["family"] == name and r["other_family_changed_polls"]
            )
            for name in FAMILY_NAMES.values()
        },
        "failed_runs": dual.failures,
        "runs": dual.runs,
    }

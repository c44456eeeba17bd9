"""moved_tcp: long-lived NATed TCP connections through a failure and a recovery."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import progress, ratio
from bench.flows.labs import (
    ECHO_TIMEOUT,
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
from ecmpd.lab.chat import by_public, chat, chat_specs
from ecmpd.lab.chatpool import Slot
from ecmpd.lab.faults import gray_failure, heal_gray_failure
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.layout import Lab
from ecmpd.lab.sources import moved_flows, validate_sources
from ecmpd.lab.wait import wait_until


def tcp_run(
    lab: Lab,
    n: int,
    fail: Callable[[], object],
    wait_out: Callable[[], object],
    restore: Callable[[], object],
    wait_back: Callable[[], object],
) -> dict[str, Any]:
    """n chat connections through a failure and a recovery; what broke when."""
    public = {str(isp.address.ip): isp.name for isp in lab.isps}
    with chat(lab, chat_specs(lab, n), echo_timeout=ECHO_TIMEOUT) as (_, pool):
        pool.wait_ready(30)
        time.sleep(0.3)
        moved_before = moved_flows(lab)
        fault = time.monotonic()
        fail()
        wait_out()
        removed = time.monotonic() - fault
        groups = by_public(pool.snapshot(), fault)
        dead = [s.index for s in groups.get(str(lab.isp(FAILED).address.ip), [])]
        healthy = [
            s.index
            for ip, group in groups.items()
            if ip is not None and public.get(ip) != FAILED
            for s in group
        ]

        def settled() -> bool:
            slots = pool.snapshot()
            return all(slots[i].errors_since(fault) and slots[i].public is not None for i in dead)

        with contextlib.suppress(TimeoutError):
            wait_until(settled, 15, "dead-uplink connections reset and reconnected", 0.05)
        time.sleep(ECHO_TIMEOUT + 1.0)  # a moved healthy connection has failed by now
        slots = pool.snapshot()
        moved_failure = _moved_since(moved_before, moved_flows(lab), lab, healthy_only=True)
        failure = _failure_stats(slots, dead, healthy, fault, public)
        failure["removal_s"] = round(removed, 3)
        failure["moved_by_source_check"] = moved_failure

        moved_mid = moved_flows(lab)
        heal = time.monotonic()
        restore()
        wait_back()
        back = time.monotonic() - heal
        time.sleep(ECHO_TIMEOUT + 1.0)
        slots = pool.snapshot()
        broken = [s for s in slots if s.errors_since(heal)]
        recovery = {
            "back_in_group_s": round(back, 3),
            "connections": len(slots),
            "broken": len(broken),
            "broken_fraction": round(len(broken) / max(len(slots), 1), 4),
            "moved_by_source_check": _moved_since(
                moved_mid, moved_flows(lab), lab, healthy_only=False
            ),
            "on_recovered_uplink": sum(1 for s in slots if public.get(s.public or "") == FAILED),
        }
    return {"connections": n, "failure": failure, "recovery": recovery}


def _failure_stats(
    slots: list[Slot], dead: list[int], healthy: list[int], fault: float, public: dict[str, str]
) -> dict[str, Any]:
    """The failure half of a TCP run."""
    first_errors = [slots[i].errors_since(fault)[0] for i in dead if slots[i].errors_since(fault)]
    after = [e.at - fault for e in first_errors]
    broken_healthy = [i for i in healthy if slots[i].errors_since(fault)]
    return {
        "on_failed_uplink": len(dead),
        "on_healthy_uplinks": len(healthy),
        "healthy_broken": len(broken_healthy),
        "healthy_broken_fraction": round(len(broken_healthy) / max(len(healthy), 1), 4),
        "dead_broken": len(first_errors),
        "dead_error_kinds": dict(Counter(e.kind for e in first_errors)),
        "dead_first_error_s": {
            "median": round(statistics.median(after), 3) if after else None,
            "max": round(max(after), 3) if after else None,
        },
        "dead_reconnected_elsewhere": sum(
            1 for i in dead if public.get(slots[i].public or "") not in (None, FAILED)
        ),
    }


def _moved_since(
    old: dict[str, set[tuple[str, int]]],
    new: dict[str, set[tuple[str, int]]],
    lab: Lab,
    healthy_only: bool,
) -> int:
    """Flows an ISP newly dropped for carrying another uplink's address."""
    dead_ip = str(lab.isp(FAILED).address.ip)
    return sum(
        1
        for isp, flows in new.items()
        for ip, _ in flows - old.get(isp, set())
        if not healthy_only or ip != dead_ip
    )


def bench_tcp(prefix: str, workdir: Path, n: int, default_hash_too: bool) -> dict[str, Any]:
    """Part (b): real connections, ecmpd vs the anchor, in a source-validating lab."""
    variants: dict[str, Any] = {}
    runs: list[tuple[str, Any]] = [("", L4_FIELDS)]
    if default_hash_too:
        runs.append(("_default_hash", "l4"))
    with nat_lab(prefix, workdir / "lab", isps=3, weights=(1, 1, 1), shaping=False) as lab:
        validate_sources(lab)
        for suffix, hash_spec in runs:
            progress(f"moved_tcp: ecmpd resilient{suffix}, {n} connections")
            ecmpd_run = tcp_ecmpd(lab, workdir / f"e{suffix}", n, hash_spec)
            variants[f"ecmpd_resilient{suffix}"] = ecmpd_run
            progress(f"moved_tcp: anchor multipath route{suffix}, {n} connections")
            variants[f"anchor_multipath_route{suffix}"] = tcp_anchor(lab, n, hash_spec)
    ecmpd, anchor = variants["ecmpd_resilient"], variants["anchor_multipath_route"]
    return {
        "connections": n,
        "hash": L4_FIELDS,
        "uplinks": 3,
        "weights": [1, 1, 1],
        "failed": FAILED,
        "echo_timeout_s": ECHO_TIMEOUT,
        "variants": variants,
        "ratio_healthy_broken_vs_anchor": ratio(
            ecmpd["failure"]["healthy_broken"], anchor["failure"]["healthy_broken"]
        ),
        "ratio_recovery_broken_vs_anchor": ratio(
            ecmpd["recovery"]["broken"], anchor["recovery"]["broken"]
        ),
    }


def tcp_ecmpd(lab: Lab, workdir: Path, n: int, hash_spec: Any) -> dict[str, Any]:
    """A TCP run through the real daemon: a gray failure, then healing."""
    everyone = frozenset(isp.name for isp in lab.isps)
    config = router_config(lab, workdir / "ecmpd.yaml", hash_spec=hash_spec)
    watch = GroupWatch(lab)
    try:
        with daemon_session(lab, config, workdir):
            return tcp_run(
                lab,
                n,
                fail=lambda: gray_failure(lab.isp(FAILED).ns),
                wait_out=lambda: watch.wait(lambda m: FAILED not in m, GROUP_TIMEOUT, "out"),
                restore=lambda: heal_gray_failure(lab.ns(FAILED)),
                wait_back=lambda: watch.wait(lambda m: m == everyone, GROUP_TIMEOUT, "back"),
            )
    finally:
        watch.close()


def tcp_anchor(lab: Lab, n: int, hash_spec: Any) -> dict[str, Any]:
    """A TCP run with the classic route, replaced by hand right after the fault and the heal."""
    everyone = {isp.name for isp in lab.isps}
    anchor_setup(lab, nat=True, hash_spec=hash_spec)

    def fail() -> None:
        gray_failure(lab.isp(FAILED).ns)
        anchor_route(lab, everyone - {FAILED})

    def restore() -> None:
        heal_gray_failure(lab.ns(FAILED))
        anchor_route(lab, everyone)

    try:
        return tcp_run(lab, n, fail, lambda: None, restore, lambda: None)
    finally:
        anchor_teardown(lab)

"""interrupted: how soon the failed uplink's connections are back by another uplink."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import progress, summary
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
)
from ecmpd.lab.chat import chat, chat_specs
from ecmpd.lab.chatpool import Slot
from ecmpd.lab.faults import gray_failure, heal_gray_failure
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.wait import wait_until

BACK_TIMEOUT = 30.0


def back_at(slot: Slot, fault: float, dead: str) -> float | None:
    """When the slot's first connection after the fault by another uplink was greeted."""
    return next((c.opened for c in slot.conns if c.opened > fault and c.public != dead), None)


def interrupted_run(lab: Lab, n: int, fail: Callable[[], float]) -> dict[str, Any]:
    """n chat connections (a line every 100 ms); the failed uplink's, from its leaving to back."""
    dead = str(lab.isp(FAILED).address.ip)
    with chat(lab, chat_specs(lab, n), echo_timeout=ECHO_TIMEOUT) as (_, pool):
        pool.wait_ready(30)
        time.sleep(0.3)
        fault = time.monotonic()
        hit = [s.index for s in pool.snapshot() if s.public == dead]
        left = fail()

        def all_back() -> bool:
            slots = pool.snapshot()
            return all(back_at(slots[i], fault, dead) is not None for i in hit)

        wait_until(all_back, BACK_TIMEOUT, "every interrupted connection back", 0.05)
        slots = pool.snapshot()
        back = [t - left for i in hit if (t := back_at(slots[i], fault, dead)) is not None]
    return {
        "connections": n,
        "on_failed_uplink": len(hit),
        "left_after_fault_s": round(left - fault, 3),
        "back_after_left_s": summary(back),
    }


def bench_interrupted(prefix: str, workdir: Path, n: int) -> dict[str, Any]:
    """ecmpd (resets) against a classic route switched after the same detection time."""
    variants: dict[str, Any] = {}
    with nat_lab(prefix, workdir / "lab", isps=3, shaping=False) as lab:
        everyone = {isp.name for isp in lab.isps}
        progress(f"interrupted: ecmpd, {n} connections")
        # The default check (0.85 s worst-case detection), as a user has it: how long the
        # uplink takes to leave decides how far into their backoff the anchor's flows are.
        config = workdir / "ecmpd.yaml"
        write_lab_config(lab, config, extra={"hash": L4_FIELDS})
        with GroupWatch(lab) as watch, daemon_session(lab, config, workdir):

            def fail() -> float:
                gray_failure(lab.isp(FAILED).ns)
                return watch.wait(lambda m: FAILED not in m, GROUP_TIMEOUT, "out")

            variants["ecmpd"] = interrupted_run(lab, n, fail)
            heal_gray_failure(lab.ns(FAILED))
        detection = variants["ecmpd"]["left_after_fault_s"]
        progress("interrupted: anchor multipath route, switched after the same detection time")
        anchor_setup(lab, nat=True, hash_spec=L4_FIELDS)
        try:

            def switch() -> float:
                gray_failure(lab.isp(FAILED).ns)
                time.sleep(detection)
                anchor_route(lab, everyone - {FAILED})
                return time.monotonic()

            variants["anchor_multipath_route"] = interrupted_run(lab, n, switch)
            heal_gray_failure(lab.ns(FAILED))
        finally:
            anchor_teardown(lab)
    return {"failed": FAILED, "variants": variants}

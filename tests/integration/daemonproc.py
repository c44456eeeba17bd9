"""Test helpers: the real `ecmpd run` inside a lab, and faults injected in ISP namespaces."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ecmpd.kernel import nexthop as nl
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.faults import HEAL_RULESET, gray_failure_ruleset
from ecmpd.lab.topology import Lab
from ecmpd.model import NH_ID_BASE
from ecmpd.status import UplinkStatus

GROUP_ID = NH_ID_BASE + 200


class DaemonProc(LabDaemon):
    """The lab daemon in the router namespace, with the tests' stricter stop."""

    def __init__(self, lab: Lab, config: Path, run_dir: Path, log: Path) -> None:
        super().__init__(lab.router, config, run_dir, log)
        self.lab = lab

    def uplink(self, name: str) -> UplinkStatus:
        return self.uplinks()[name]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        code = super().stop(sig, timeout)
        if code is None:
            raise AssertionError(f"daemon ignored signal {sig}: {self.log()}")
        return code

    def log(self) -> str:
        return self.log_tail()


@contextmanager
def running_daemon(lab: Lab, config: Path, tmp: Path) -> Iterator[DaemonProc]:
    """Start `ecmpd run`, always stop it (SIGTERM, then SIGKILL)."""
    tmp.mkdir(parents=True, exist_ok=True)
    daemon = DaemonProc(lab, config, tmp / "run", tmp / "daemon.log")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> float:
    """Poll until check() holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


def group_members(lab: Lab) -> set[str]:
    """Uplink names in the balancer group, read from the router's kernel."""
    by_table = {NH_ID_BASE + 101 + i: isp.name for i, isp in enumerate(lab.isps)}
    ipr = netns.iproute(lab.router)
    try:
        group = nl.get_nexthop(ipr, GROUP_ID)
    finally:
        ipr.close()
    if group is None or group.members is None:
        return set()
    return {by_table[m] for m, _ in group.members}


def nft(ns: str, script: str) -> None:
    """Load an nftables script in a namespace, atomically (`nft -f -`, no shell)."""
    netns.run_in(ns, ["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)


def gray_failure(lab: Lab, isp: str) -> None:
    """The ISP drops everything (its own answers and what it forwards); link and ARP stay up."""
    nft(lab.ns(isp), gray_failure_ruleset())


def heal(lab: Lab, isp: str) -> None:
    """Undo gray_failure or random_loss."""
    nft(lab.ns(isp), HEAL_RULESET)


def random_loss(lab: Lab, isp: str, percent: int) -> None:
    """The ISP drops a random share of packets (nftables numgen; netem is not available)."""
    nft(
        lab.ns(isp),
        f"""
        table inet lossy {{
            chain input_loss {{
                type filter hook input priority 0;
                numgen random mod 100 < {percent} drop
            }}
            chain forward_loss {{
                type filter hook forward priority 0;
                numgen random mod 100 < {percent} drop
            }}
        }}
    """,
    )

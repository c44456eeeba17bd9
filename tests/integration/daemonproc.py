"""Test helpers: the real `ecmpd run` inside a lab, and faults injected in ISP namespaces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecmpd.control import DaemonNotRunning, request
from ecmpd.kernel import nexthop as nl
from ecmpd.lab import netns
from ecmpd.lab.topology import Lab
from ecmpd.model import NH_ID_BASE

GROUP_ID = NH_ID_BASE + 200


class DaemonProc:
    """One `ecmpd run` process in the lab's router namespace."""

    def __init__(self, lab: Lab, config: Path, run_dir: Path, log: Path) -> None:
        self.lab, self.config, self.run_dir, self.log_path = lab, config, run_dir, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        argv = [sys.executable, "-m", "ecmpd", "-c", str(self.config), "--run-dir",
                str(self.run_dir), "run"]
        with open(self.log_path, "ab") as log:
            self.proc = netns.popen_in(self.lab.router, argv, stdout=log, stderr=log)
        wait_for(lambda: self._answers(), timeout, f"daemon ready ({self.log()})")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
        try:
            request(self.run_dir, {"cmd": "status"}, timeout=1)
        except (DaemonNotRunning, OSError):
            return False
        return True

    def status(self) -> dict[str, Any]:
        answer = request(self.run_dir, {"cmd": "status"})
        status: dict[str, Any] = answer["status"]
        return status

    def uplink(self, name: str) -> dict[str, Any]:
        return next(u for u in self.status()["uplinks"] if u["name"] == name)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored signal {sig}: {self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


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
    netns.run_in(ns, ["nft", "-f", "-"], input=script, text=True, check=True,
                 capture_output=True)


def gray_failure(lab: Lab, isp: str) -> None:
    """The ISP drops everything (its own answers and what it forwards); link and ARP stay up."""
    nft(lab.ns(isp), """
        table inet gray {
            chain input_drop { type filter hook input priority 0; policy drop; }
            chain forward_drop { type filter hook forward priority 0; policy drop; }
        }
    """)


def heal(lab: Lab, isp: str) -> None:
    """Undo gray_failure or random_loss."""
    nft(lab.ns(isp), "flush ruleset\n")


def random_loss(lab: Lab, isp: str, percent: int) -> None:
    """The ISP drops a random share of packets (nftables numgen; netem is not available)."""
    nft(lab.ns(isp), f"""
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
    """)

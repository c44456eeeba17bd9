"""The real `ecmpd run` inside a lab namespace, for the demo, the benchmarks and the tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from ecmpd.control import DaemonNotRunning, request, request_status
from ecmpd.health.fsm import HealthState
from ecmpd.lab import netns
from ecmpd.lab.running import Running
from ecmpd.order import Role
from ecmpd.status import Status, UplinkStatus

START_TIMEOUT = 15.0


class LabDaemon(Running):
    """One `ecmpd run` process in a namespace, answering on its control socket.

    As a context manager: started on entry (stopped again if it does not answer),
    always stopped on exit.
    """

    def __init__(self, ns: str, config: Path, run_dir: Path, log: Path) -> None:
        self.ns, self.config, self.run_dir, self.log_path = ns, config, run_dir, log
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_workdir(cls, ns: str, config: Path, workdir: Path) -> Self:
        """A daemon whose run dir (workdir/run) and log (workdir/daemon.log) are in workdir."""
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(ns, config, workdir / "run", workdir / "daemon.log")

    @property
    def pid(self) -> int:
        """The daemon's pid: `ip netns exec` execs the command, so Popen's pid is the daemon's."""
        if self.proc is None:
            raise RuntimeError("the daemon was not started")
        return self.proc.pid

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Starts `python -m ecmpd run` and waits until it answers `status`."""
        argv = [sys.executable, "-m", "ecmpd", "-c", str(self.config), "--run-dir",
                str(self.run_dir), "run"]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = netns.popen_in(self.ns, argv, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon in {self.ns} did not answer: {self.log_tail()}")
            time.sleep(0.02)

    def alive(self) -> None:
        """Raises RuntimeError if the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ecmpd run exited {self.proc.returncode}: {self.log_tail()}")

    def answers(self) -> bool:
        """Whether the daemon answers on its control socket (raises if it exited)."""
        self.alive()
        try:
            request(self.run_dir, {"cmd": "status"}, timeout=1)
        except (DaemonNotRunning, OSError):
            return False
        return True

    def status(self, timeout: float = 5.0) -> Status:
        """The daemon's status."""
        return request_status(self.run_dir, timeout=timeout)

    def uplinks(self) -> dict[str, UplinkStatus]:
        """Each uplink's status entry, by name."""
        return {u.name: u for u in self.status().uplinks}

    def all_in_service(self) -> bool:
        """Whether every uplink is up (not merely unknown) and in the balancer, or standing
        by (a higher tier's, while a lower one carries)."""
        return all(
            u.health is HealthState.UP and (u.in_balancer or u.role is Role.STANDBY)
            for u in self.uplinks().values()
        )

    def every_family_in_service(self) -> bool:
        """Whether each family of each uplink is up and in its balancer group (or the
        uplink stands by)."""
        return all(
            f.health is HealthState.UP and (f.in_balancer or u.role is Role.STANDBY)
            for u in self.uplinks().values()
            for f in u.families.values()
        )

    def count_events(self, event: str) -> int:
        """How many log lines (JSON, one per event) carry this event name."""
        return len(self.events(event))

    def events(self, event: str) -> list[dict[str, object]]:
        """The log lines (JSON, one per event) with this event name, as read."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    out.append(record)
        return out

    def send(self, sig: int) -> None:
        """Sends a signal (SIGHUP reloads)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Sends sig and waits; SIGKILL if it does not exit in time (then returns None)."""
        if self.proc is None:
            return 0
        return netns.stop_process(self.proc, sig, timeout)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the daemon's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def running_daemon(ns: str, config: Path, workdir: Path) -> LabDaemon:
    """`ecmpd run` in ns, for a with block (see LabDaemon.in_workdir)."""
    return LabDaemon.in_workdir(ns, config, workdir)

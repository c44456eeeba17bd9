"""The demo's parts around the scenario: the daemon, its status poller, its faults."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from ecmpd.control import DaemonNotRunning
from ecmpd.lab import faults
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.layout import Lab
from ecmpd.status import Status, UplinkStatus

STATUS_POLL_S = 0.25


class DemoError(RuntimeError):
    """The demo could not show what it set out to (a step timed out, a part died)."""


class DemoDaemon(LabDaemon):
    """`ecmpd run` in the router's namespace: started, asked for status, always stopped."""

    def __init__(self, lab: Lab, config: Path, run_dir: Path, log: Path) -> None:
        super().__init__(lab.router, config, run_dir, log)
        self.lab = lab

    def __enter__(self) -> Self:
        try:
            return super().__enter__()
        except (RuntimeError, TimeoutError) as exc:
            raise DemoError(str(exc)) from exc

    def alive(self) -> None:
        """Raises DemoError if the daemon has exited."""
        try:
            super().alive()
        except RuntimeError as exc:
            raise DemoError(str(exc)) from exc

    def wait_all_up(self, timeout: float) -> None:
        """Waits until every uplink is up (not merely unknown) and in the balancer, in
        every family it carries."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            with contextlib.suppress(DaemonNotRunning, OSError):
                if self.every_family_in_service():
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the uplinks were not all up after {timeout:g} s")
            time.sleep(0.05)


class StatusPoller:
    """A daemon's latest status, fetched a few times a second in a thread."""

    def __init__(self, daemon: LabDaemon) -> None:
        self.daemon = daemon
        self.latest: Status | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StatusPoller:
        self._thread = threading.Thread(target=self._run, name="status-poll", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            # A status that does not come keeps the last one: a slow answer on a busy
            # machine is not a reason to blank the view.
            with contextlib.suppress(DaemonNotRunning, OSError, ValueError, KeyError):
                self.latest = self.daemon.status(timeout=1.0)
            if self._stop.wait(STATUS_POLL_S):
                return

    def uplink(self, name: str) -> UplinkStatus | None:
        """The latest status entry of an uplink."""
        with contextlib.suppress(KeyError):
            return self.latest.uplink(name) if self.latest else None
        return None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def inject(action: Callable[[str], float], ns: str) -> None:
    """A fault or its heal (faults.gray_failure, faults.heal) in a lab namespace."""
    try:
        action(ns)
    except faults.NftError as exc:
        raise DemoError(str(exc)) from exc

"""One third-party daemon in a lab namespace: started, signalled, always stopped."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ecmpd.lab import netns
from ecmpd.lab.running import Running

STOP_TIMEOUT = 5.0


class PeerError(RuntimeError):
    """A peer program failed to start, exited early or did not become ready."""


class PeerProcess:
    """A program run in the foreground inside a namespace, logging to a file.

    `ip netns exec` execs the program (so does the private-mounts launcher): Popen's
    pid is the program's own, which signals reach directly.
    """

    def __init__(self, ns: str, argv: Sequence[str], log: Path, name: str) -> None:
        self.ns, self.argv, self.log_path, self.name = ns, list(argv), log, name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The program's pid."""
        if self.proc is None:
            raise PeerError(f"{self.name} was not started")
        return self.proc.pid

    def start(self) -> None:
        """Starts the program (its output appended to the log)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = netns.popen_in(
                self.ns, self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def running(self) -> bool:
        """Whether the program has been started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raises PeerError if the program exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls ready() until it holds; PeerError if the program exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name}: no {what} after {timeout} s: {self.log_tail()}")
            time.sleep(0.01)

    def send(self, sig: int) -> None:
        """Sends a signal to the program."""
        self.check()
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Waits for the program to exit by itself; its exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Sends sig and waits; SIGKILL if it does not exit in time (then returns None)."""
        return None if self.proc is None else netns.stop_process(self.proc, sig, timeout)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the program's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


class Peer(Running):
    """A lab peer: a private directory, a program line, a readiness check; a context
    manager that starts the program on entry and always stops it on exit."""

    start_timeout = 10.0

    def __init__(self, ns: str, workdir: Path, name: str) -> None:
        self.ns, self.name = ns, name
        self.dir = private_dir(workdir, name)
        self.log_path = self.dir / "log"
        self.process: PeerProcess | None = None

    def argv(self) -> list[str]:
        """The program's command line (run inside the namespace)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the program is ready to serve (polled after start)."""
        return True

    def start(self) -> None:
        """Starts the program and waits until ready() (PeerError if it exits or times out)."""
        if self.process is not None and self.process.running():
            raise PeerError(f"{self.name} is already running")
        self.process = PeerProcess(self.ns, self.argv(), self.log_path, self.name)
        self.process.start()
        try:
            self.process.wait_until(self.ready, self.start_timeout, "readiness")
        except BaseException:
            self.process.stop()
            raise

    def running(self) -> bool:
        """Whether the program runs."""
        return self.process is not None and self.process.running()

    def send(self, sig: int) -> None:
        """Sends a signal to the running program."""
        if self.process is None:
            raise PeerError(f"{self.name} was not started")
        self.process.send(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stops the program (SIGKILL after a grace period); its exit status, if any."""
        return None if self.process is None else self.process.stop(sig)

    def log_tail(self) -> str:
        """The end of the program's log."""
        return self.process.log_tail() if self.process is not None else ""

    def log_tail_all(self) -> str:
        """The program's whole log (every run of it)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def private_dir(workdir: Path, name: str) -> Path:
    """A fresh directory for one peer's files (config, leases, pid, sockets)."""
    path = workdir / name
    path.mkdir(parents=True, exist_ok=False)
    path.chmod(0o700)
    return path

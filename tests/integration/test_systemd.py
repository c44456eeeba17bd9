"""What the systemd unit relies on, in the lab: sd_notify, and only the unit's capabilities."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from ecmpd.cli import install_unit
from ecmpd.control import DaemonNotRunning, request
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import group_members
from ecmpd.lab.layout import Lab
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.kernelstate import ecmpd

ALL = {"isp-a", "isp-b", "isp-c"}
WATCHDOG_USEC = 400_000  # the daemon must ping every 0.2 s


def unit_setting(unit: str, key: str) -> str:
    """One `Key=value` of a shipped unit."""
    for line in install_unit.template(unit).splitlines():
        if line.startswith(f"{key}="):
            return line.partition("=")[2]
    raise KeyError(key)


def confined(unit: str) -> list[str]:
    """A setpriv prefix giving root only the unit's CapabilityBoundingSet, as systemd does."""
    if subprocess.run(["setpriv", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("setpriv (util-linux) not available")
    caps = unit_setting(unit, "CapabilityBoundingSet").split()
    keep = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    # Root's capabilities after exec are its bounding set (and inheritable set, emptied).
    return [
        "setpriv",
        "--bounding-set",
        f"-all,{keep}",
        "--inh-caps",
        "-all",
        "--no-new-privs",
        "--",
    ]


def cap_mask(unit: str) -> int:
    """The effective capability mask the unit's bounding set allows."""
    numbers = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
    return sum(1 << numbers[c] for c in unit_setting(unit, "CapabilityBoundingSet").split())


def effective_caps(pid: int) -> int:
    """CapEff of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff")


def clean_env() -> dict[str, str]:
    """This environment without systemd's variables (the test decides them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}


@contextmanager
def daemon_process(
    lab: Lab, tmp: Path, prefix: Sequence[str] = (), env: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """`ecmpd run` in the router behind a command prefix and `env` settings; always stopped."""
    log = tmp / "daemon.log"
    argv = [
        *prefix,
        "env",
        *env,
        sys.executable,
        "-m",
        "ecmpd",
        "-c",
        str(lab.config_path),
        "--run-dir",
        str(tmp / "run"),
        "run",
    ]
    with open(log, "ab") as out:
        proc = netns.popen_in(lab.router, argv, stdout=out, stderr=out, env=clean_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def answers(proc: subprocess.Popen[bytes], run_dir: Path, log: Path) -> bool:
    """Whether the daemon answers on its control socket (fails if it died)."""
    if proc.poll() is not None:
        raise AssertionError(f"daemon exited {proc.returncode}: {log.read_text()[-3000:]}")
    try:
        request(run_dir, {"cmd": "status"}, timeout=1)
    except (DaemonNotRunning, OSError):
        return False
    return True


def uplinks(run_dir: Path) -> dict[str, dict[str, object]]:
    """The daemon's uplinks by name."""
    return {u["name"]: u for u in request(run_dir, {"cmd": "status"})["status"]["uplinks"]}


def test_daemon_speaks_sd_notify(lab: Lab, tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    received: list[tuple[float, str]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as listener:
        # A path socket is a filesystem object: reachable from the router namespace.
        listener.bind(str(address))
        listener.settimeout(10)

        def receive_until(done: str, count: int = 1) -> None:
            while sum(done in m for _, m in received) < count:
                try:
                    data = listener.recv(4096)
                except TimeoutError:
                    log = (tmp_path / "daemon.log").read_text()[-3000:]
                    raise AssertionError(f"no {done} after {received}: {log}") from None
                received.append((time.monotonic(), data.decode()))

        env = [f"NOTIFY_SOCKET={address}", f"WATCHDOG_USEC={WATCHDOG_USEC}"]
        with daemon_process(lab, tmp_path, env=env) as proc:
            receive_until("READY=1")
            # Type=notify: units ordered after ecmpd start with the routing in place.
            assert group_members(lab) == ALL
            receive_until("WATCHDOG=1", 6)
            proc.send_signal(signal.SIGTERM)
            receive_until("STOPPING=1")
            assert proc.wait(10) == 0
    messages = [m for _, m in received]
    assert "READY=1" in messages[0].splitlines(), messages  # nothing before READY
    assert "STATUS=probing uplinks" in messages[0].splitlines()
    pings = [t for t, m in received if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; never late enough to
    # miss the deadline.
    assert 0.1 < statistics.median(gaps) < 0.3, gaps
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
    assert messages[-1] == "STOPPING=1"


def test_daemon_works_with_only_the_units_capabilities(lab: Lab, tmp_path: Path) -> None:
    unit = install_unit.DAEMON_UNIT
    run_dir, log = tmp_path / "run", tmp_path / "daemon.log"
    uplink_if = lab.isps[0].uplink_if
    rp_filter = f"net.ipv4.conf.{uplink_if}.rp_filter"
    netns.write_sysctls(lab.router, {rp_filter: "1"})  # the daemon must write it back
    with daemon_process(lab, tmp_path, prefix=confined(unit)) as proc:
        wait_for(lambda: answers(proc, run_dir, log), 15, "daemon ready")
        assert effective_caps(proc.pid) == cap_mask(unit)
        wait_for(lambda: all(u["health"] == "up" for u in uplinks(run_dir).values()), 5, "up")
        assert group_members(lab) == ALL  # rtnetlink writes (CAP_NET_ADMIN)
        assert netns.read_sysctl(lab.router, rp_filter) == "2"  # /proc/sys/net writes
        gray_failure(lab.ns("isp-b"))  # raw ICMP probes (CAP_NET_RAW) notice it
        try:
            wait_for(lambda: group_members(lab) == ALL - {"isp-b"}, 3, "isp-b removed")
        finally:
            heal(lab.ns("isp-b"))
        wait_for(lambda: group_members(lab) == ALL, 5, "isp-b back")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_apply_and_down_work_with_only_the_oneshot_units_capabilities(
    lab: Lab, tmp_path: Path
) -> None:
    unit = install_unit.ONESHOT_UNIT
    run_dir = tmp_path / "run"
    prefix = confined(unit)
    uplink_if = lab.isps[0].uplink_if
    rp_filter = f"net.ipv4.conf.{uplink_if}.rp_filter"
    netns.write_sysctls(lab.router, {rp_filter: "1"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            *prefix,
            sys.executable,
            "-m",
            "ecmpd",
            "-c",
            str(lab.config_path),
            "--run-dir",
            str(run_dir),
            *args,
        ]
        return netns.run_in(
            lab.router, argv, capture_output=True, text=True, timeout=120, env=clean_env()
        )

    applied = cli("apply")
    assert applied.returncode == 0, applied.stderr
    assert group_members(lab) == ALL
    assert netns.read_sysctl(lab.router, rp_filter) == "2"
    again = ecmpd(lab.router, lab.config_path, run_dir, "plan", "--json")  # unconfined read
    assert '"changes": 0' in again.stdout, again.stdout
    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert group_members(lab) == set()
    assert netns.read_sysctl(lab.router, rp_filter) == "1"  # restored from the record

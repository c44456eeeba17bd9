"""The anchor: the seeds' cron-style monitor (ping each gateway, rewrite a multipath route)."""

from __future__ import annotations

import json
import math
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    summary,
    thread_in,
)
from bench.failover.timing import settle_after_removal
from bench.failover.traffic import pick_isp, restore_times, traffic
from ecmpd.config.schema import DEFAULT_BALANCER_TABLE
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.layout import Lab
from ecmpd.lab.wait import wait_until

CRON_PERIOD = 60.0
PING_TIMEOUT = 1.0
MODEL_PHASES = 1000


def _checksum(data: bytes) -> int:
    """The internet checksum (RFC 1071) of an ICMP message."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ifname: str, target: str, timeout: float) -> bool:
    """One ICMP echo through ifname (what `ping -c1 -W1 -I IF` does); True if answered."""
    ident, seq = random.getrandbits(16), random.getrandbits(16)
    body = b"ecmpd-bench-cron"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + body), ident, seq) + body
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        deadline = time.monotonic() + timeout
        sock.sendto(packet, (target, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, address = sock.recvfrom(2048)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4 :]
            answer = address[0] == target and len(icmp) >= 8 and icmp[0] == 0
            if answer and struct.unpack_from("!HH", icmp, 4) == (ident, seq):
                return True
    return False


@dataclass(frozen=True)
class CronEvent:
    """One route rewrite of the monitor: its tick, when pinging ended, when `ip` returned."""

    tick: float
    detected: float
    applied: float
    members: frozenset[str]


class CronMonitor:
    """The seeds' monitor: every period, ping each gateway once and rewrite the route on a change.

    Ticks fall at t0 + k * period exactly (cron's schedule), whatever a tick took.
    """

    def __init__(self, lab: Lab, period: float, ping_timeout: float = PING_TIMEOUT) -> None:
        self.lab, self.period, self.ping_timeout = lab, period, ping_timeout
        self.events: list[CronEvent] = []
        self.ticks = 0
        self.current = frozenset(isp.name for isp in lab.isps)
        self.t0 = 0.0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Installs the full route, then starts ticking."""
        netns.call_in(self.lab.router, lambda: self._replace(self.current))
        self.t0 = time.monotonic()
        self._thread = thread_in(self.lab.router, self._loop, "cron")

    def check_route(self) -> None:
        """Checks that table 200 holds only the monitor's multipath route, no group route."""
        done = netns.run_in(
            self.lab.router,
            ["ip", "-j", "route", "show", "table", str(DEFAULT_BALANCER_TABLE)],
            capture_output=True,
            text=True,
            check=True,
        )
        routes = json.loads(done.stdout)
        gateways = {hop.get("gateway") for r in routes for hop in r.get("nexthops", [])}
        wanted = {str(isp.gateway) for isp in self.lab.isps if isp.name in self.current}
        if len(routes) != 1 or "nhid" in routes[0] or gateways != wanted:
            raise BenchError(f"table {DEFAULT_BALANCER_TABLE} is not the monitor's route: {routes}")

    def stop(self) -> None:
        """Stops ticking (a tick in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ping_timeout * len(self.lab.isps) + 5)
        if self.errors:
            raise self.errors[0]

    def next_tick(self, after: float) -> float:
        """The first tick at or after a moment."""
        return self.t0 + math.ceil((after - self.t0) / self.period) * self.period

    def wait_for(self, members: frozenset[str], since: float, timeout: float) -> CronEvent:
        """Waits for a rewrite to exactly these members that ticked after since."""

        def seen() -> CronEvent | None:
            if self.errors:
                raise self.errors[0]
            return next((e for e in self.events if e.tick >= since and e.members == members), None)

        wait_until(lambda: seen() is not None, timeout, f"cron route {sorted(members)}", 0.002)
        found = seen()
        assert found is not None
        return found

    def _loop(self) -> None:
        """Runs in the router's namespace (pings and `ip` are there)."""
        try:
            k = 1
            while not self._stop.wait(max(0.0, self.t0 + k * self.period - time.monotonic())):
                tick = time.monotonic()
                self.ticks += 1
                # Sequentially, as a shell loop over the gateways would.
                alive = [
                    isp
                    for isp in self.lab.isps
                    if ping(isp.uplink_if, str(isp.gateway), self.ping_timeout)
                ]
                detected = time.monotonic()
                # With every gateway dead, a script keeps the route it has.
                wanted = frozenset(isp.name for isp in alive) or self.current
                if wanted != self.current:
                    self._replace(wanted)
                    self.events.append(CronEvent(tick, detected, time.monotonic(), wanted))
                    self.current = wanted
                k = math.floor((time.monotonic() - self.t0) / self.period) + 1
        except BaseException as exc:  # reported by stop() and wait_for()
            self.errors.append(exc)

    def _replace(self, members: frozenset[str]) -> None:
        """`ip route replace` of table 200's default with these members' gateways."""
        argv = ["ip", "route", "replace", "default", "table", str(DEFAULT_BALANCER_TABLE)]
        for isp in self.lab.isps:
            if isp.name in members:
                argv += ["nexthop", "via", str(isp.gateway), "dev", isp.uplink_if]
                argv += ["weight", str(isp.weight)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)}: {done.stderr.strip()}")


def anchor_run(
    lab: Lab, cron: CronMonitor, turn: int, port_base: int, rng: random.Random
) -> dict[str, Any]:
    """Gray failure at a random phase of the monitor's period, under traffic; then heal."""
    everyone = frozenset(isp.name for isp in lab.isps)
    wait_until(lambda: cron.current == everyone, 2 * cron.period + 5, "cron: every gateway", 0.02)
    with traffic(lab, port_base) as flows:
        isp = pick_isp(lab, flows, turn)
        phase = rng.uniform(0, cron.period)
        target = cron.next_tick(time.monotonic()) - cron.period + phase
        if target < time.monotonic() + 0.01:
            target += cron.period
        time.sleep(max(0.0, target - time.monotonic()))
        t_fault = time.monotonic()
        nft_s = gray_failure(isp.ns)
        removed, t_end = settle_after_removal(
            lambda: cron.wait_for(
                everyone - {isp.name}, t_fault, cron.period + cron.ping_timeout * 4 + 5
            ),
            lambda r: r.applied,
            lambda: heal(isp.ns),
        )
    restored = restore_times(flows, t_fault, t_end)
    t_heal = time.monotonic()
    heal(isp.ns)
    back = cron.wait_for(everyone, t_heal, cron.period + cron.ping_timeout * 4 + 5)
    to_tick = removed.tick - t_fault
    # The model's own terms: the scheduled wait for the tick, the timeout, the rewrite.
    modelled = cron.next_tick(t_fault) - t_fault + cron.ping_timeout
    modelled += removed.applied - removed.detected
    return {
        "isp": isp.name,
        "phase_s": round(phase, 4),
        "fault_nft_ms": round(nft_s * 1000, 2),
        "fault_to_tick_s": round(to_tick, 4),
        "tick_to_route_s": round(removed.applied - removed.tick, 4),
        "route_apply_ms": round((removed.applied - removed.detected) * 1000, 3),
        "restore_udp_s": round(restored.udp_s, 4),
        "tick_to_restore_udp_s": round(restored.udp_s - to_tick, 4),
        "model_error_s": round(restored.udp_s - modelled, 4),
        "restore_tcp_s": round(restored.tcp_s, 4),
        "tcp_failed_attempts": restored.tcp_failed,
        "flows_hit": restored.flows_hit,
        "recovery_s": round(back.applied - t_heal, 4),
    }


def setup_anchor(lab: Lab, workdir: Path) -> None:
    """ecmpd's one-shot apply (rules, tables, sysctls), whose group route the monitor replaces."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ecmpd", "-c", str(lab.config_path), "--run-dir",
            str(workdir / "run"), "apply"]  # fmt: skip
    done = netns.run_in(lab.router, argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"ecmpd apply for the anchor failed: {done.stderr.strip()}")


def anchor_result(
    period: float, runs: list[dict[str, Any]], failures: list[str], rng: random.Random
) -> dict[str, Any]:
    """The modelled 60 s figures (bootstrapped from the short-period runs) and the measured ones."""
    tick_to_restore = [r["tick_to_restore_udp_s"] for r in runs]
    # Without measured runs: the model's assumption, the 1 s timeout plus the rewrite.
    basis = tick_to_restore or [PING_TIMEOUT]
    modelled = [rng.uniform(0, CRON_PERIOD) + rng.choice(basis) for _ in range(MODEL_PHASES)]
    same_period = [rng.uniform(0, period) + rng.choice(basis) for _ in range(MODEL_PHASES)]
    measured: dict[str, Any] = {"period_s": period, "runs": runs, "failed_runs": failures}
    if runs:
        measured.update(
            {
                "restore_udp_s": summary([r["restore_udp_s"] for r in runs]),
                "restore_tcp_s": summary([r["restore_tcp_s"] for r in runs]),
                "tick_to_restore_udp_s": summary(tick_to_restore),
                "route_apply_ms": summary([r["route_apply_ms"] for r in runs]),
                "recovery_s": summary([r["recovery_s"] for r in runs]),
                # Measured minus (wait for the tick + 1 s timeout + rewrite), per run.
                "model_error_s": summary([r["model_error_s"] for r in runs]),
                # The model at the short period, to set beside the measured distribution.
                "modelled_restore_s": summary(same_period),
            }
        )
    return {
        "period_s": CRON_PERIOD,
        "ping_timeout_s": PING_TIMEOUT,
        "modelled_restore_s": summary(modelled),
        "modelled_phases": MODEL_PHASES,
        "model_basis": "measured" if tick_to_restore else "assumed 1 s",
        "measured_short_period": measured,
    }

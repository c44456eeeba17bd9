"""What the daemon costs: CPU per wall second and memory, probing 8 uplinks at 10 Hz."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    BenchError,
)
from bench.failover.timing import RECOVERY_TIMEOUT
from ecmpd.config import parse_config
from ecmpd.lab.daemon import LabDaemon, running_daemon
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.topology import lab_session
from ecmpd.lab.wait import wait_until

COST_ISPS, COST_INTERVAL = 8, "100ms"


def cost_phase(workdir: Path, prefix: str, seconds: float) -> dict[str, Any]:
    """The daemon probing 8 uplinks x 2 targets at 10 Hz: CPU per wall second and RSS."""
    with lab_session(workdir=workdir / "lab", isps=COST_ISPS, shaping=False, prefix=prefix) as lab:
        data = lab_config(lab)
        for uplink in data["uplinks"]:
            uplink["check"]["interval"] = COST_INTERVAL
        path = workdir / "cost.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        config = parse_config(path.read_text(), str(path))
        targets = len(config.uplinks[0].check.targets)
        with running_daemon(lab.router, path, workdir / "daemon") as daemon:
            wait_until(daemon.all_in_service, RECOVERY_TIMEOUT, "8 uplinks up", 0.05)
            pid = daemon.pid
            counters = daemon.status().daemon
            if counters is None or counters.pid != pid:
                raise BenchError("the Popen pid is not the daemon's (ip netns exec did not exec)")
            time.sleep(1.0)  # past start-up
            sent0 = probes_sent(daemon)
            threads0, run0 = thread_cpu_seconds(pid), proc_runtime_seconds(pid)
            cpu0, wall0 = proc_cpu_seconds(pid), time.monotonic()
            peak = 0.0
            while time.monotonic() < wall0 + seconds:
                time.sleep(min(1.0, max(0.0, wall0 + seconds - time.monotonic())))
                peak = max(peak, proc_memory_mb(pid)["rss_mb"])
            cpu1, wall1 = proc_cpu_seconds(pid), time.monotonic()
            threads1, run1 = thread_cpu_seconds(pid), proc_runtime_seconds(pid)
            sent1 = probes_sent(daemon)
            memory = proc_memory_mb(pid)
            in_service = daemon.all_in_service()
    wall = wall1 - wall0
    return {
        "uplinks": COST_ISPS,
        "targets": targets,
        "rate_hz": round(1 / config.uplinks[0].check.interval, 3),
        "duration_s": round(wall, 2),
        "cpu_percent": round((cpu1 - cpu0) / wall * 100, 3),
        "cpu_percent_schedstat": round((run1 - run0) / wall * 100, 3),
        "rss_mb": memory["rss_mb"],
        "rss_peak_sampled_mb": round(max(peak, memory["rss_mb"]), 2),
        "hwm_mb": memory["hwm_mb"],
        # The main thread runs the asyncio loop (probes, trackers); the others are helpers
        # such as the netlink thread.
        "cpu_percent_by_thread": {
            ("main" if name.split()[0] == str(pid) else f"thread {name}"): round(
                (threads1[name] - threads0.get(name, 0.0)) / wall * 100, 3
            )
            for name in sorted(threads1)
        },
        "probes_per_s": round((sent1 - sent0) / wall, 1),
        "probes_per_s_expected": round(COST_ISPS * targets / config.uplinks[0].check.interval, 1),
        "all_up_at_end": in_service,
        "cpu_clock_tick_s": round(1 / os.sysconf("SC_CLK_TCK"), 4),
    }


def probes_sent(daemon: LabDaemon) -> int:
    """Probes the daemon has sent so far, over every uplink and target."""
    return sum(t.sent for u in daemon.uplinks().values() for t in u.targets)


def proc_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) are 11 and 12 after the name and state.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per live thread of a process, keyed "TID name" (exited threads are gone)."""
    per_thread: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                raw = f.read()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            per_thread[f"{tid} {name}"] = seconds
    return per_thread


def proc_runtime_seconds(pid: int) -> float:
    """Time on CPU of a process's live threads in nanosecond resolution (/proc/.../schedstat)."""
    # /proc/PID/stat counts in clock ticks (10 ms): too coarse for a ~1% load over seconds.
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def proc_memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM) in MB, from /proc/PID/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    return {"rss_mb": round(values["VmRSS"], 2), "hwm_mb": round(values["VmHWM"], 2)}

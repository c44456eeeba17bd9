"""What the benchmarks share: namespaces that always go away, veth uplinks, timing, JSON."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

import pyroute2
import yaml

from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.faults import HEAL_RULESET, gray_failure_ruleset
from ecmpd.model import Family

T = TypeVar("T")
OPERSTATE_TIMEOUT = 10.0
# Explicit ifindexes for the uplink ends: a fresh namespace numbers its links from 2,
# and a veth whose two ends share an index gets its carrier-up delayed by the
# kernel's linkwatch (non-urgent) by up to a second per link.
UPLINK_IFINDEX = 1001


class BenchError(Exception):
    """The benchmark saw ecmpd (or an anchor, or a fault) do something other than
    expected: its figures would mean nothing."""


def check(condition: bool, message: str) -> None:
    """Raises BenchError unless condition holds (asserts vanish under python -O)."""
    if not condition:
        raise BenchError(message)


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the JSON document)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def emit(document: dict[str, Any]) -> None:
    """Prints the benchmark's one JSON document on stdout."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare runs: kernel, CPUs, Python and pyroute2."""
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count() or 1,
        "python": sys.version.split()[0],
        "pyroute2": pyroute2.__version__,
    }


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median and max of millisecond samples (the median is what ratios quote)."""
    if not samples:
        raise ValueError("no samples")
    return {
        "median": round(statistics.median(samples), 4),
        "max": round(max(samples), 4),
        "n": len(samples),
    }


def timed(func: Callable[[], T]) -> tuple[float, T]:
    """Runs func once and returns (wall milliseconds, its result)."""
    # A collection left over from the previous step would land in this sample.
    gc.collect()
    start = time.perf_counter_ns()
    result = func()
    return (time.perf_counter_ns() - start) / 1e6, result


def ratio(value: float, anchor: float) -> float | None:
    """value / anchor, or None when the anchor is too small to divide by."""
    return round(value / anchor, 3) if anchor > 1e-6 else None


def install_sigterm() -> None:
    """Turns SIGTERM into KeyboardInterrupt so a killed benchmark still removes its namespaces."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Namespaces:
    """The namespaces one benchmark run creates; every one is removed on close, whatever happened.

    Only names this object created are removed (never by prefix): a prefix given on
    the command line might match namespaces that are not the benchmark's.
    """

    def __init__(self, prefix: str) -> None:
        netns.check_name(f"{prefix}x")
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, suffix: str) -> str:
        """Creates `<prefix><suffix>` (refusing an existing one) and returns its name."""
        name = netns.check_name(f"{self.prefix}{suffix}")
        netns.create_netns(name)
        self.created.append(name)
        return name

    def remove(self, names: Sequence[str]) -> None:
        """Removes some of this run's namespaces now, carrying on past errors."""
        pending: BaseException | None = None
        for name in names:
            try:
                netns.remove_netns(name)
                if name in self.created:
                    self.created.remove(name)
            except BaseException as exc:  # remove the others before reporting
                pending = pending or exc
        if pending is not None:
            raise pending

    def close(self) -> None:
        """Removes every namespace still left."""
        self.remove(list(reversed(self.created)))

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class VethUplink:
    """One uplink of a benchmark host: a veth whose peer (the gateway) is in another namespace."""

    name: str
    ifname: str
    address: IPv4Interface
    gateway: IPv4Interface
    weight: int
    table: int


def plan_uplinks(n: int, weights: Sequence[int] = (1, 2, 3, 4)) -> list[VethUplink]:
    """N uplinks u0..uN-1 on 10.<1+i//256>.<i%256>.0/24, gateway .1, weights cycling."""
    uplinks = []
    for i in range(n):
        net = f"10.{1 + i // 256}.{i % 256}"
        uplinks.append(
            VethUplink(
                name=f"up{i}",
                ifname=f"u{i}",
                address=IPv4Interface(f"{net}.2/24"),
                gateway=IPv4Interface(f"{net}.1/24"),
                weight=weights[i % len(weights)],
                table=FIRST_UPLINK_TABLE + i,
            )
        )
    return uplinks


def build_uplinks(host: str, gateways: str, uplinks: Sequence[VethUplink]) -> None:
    """Creates the veths (host end u<i>, gateway end g<i>), addresses them, waits for carrier."""
    with (
        netns.iproute(host) as hipr,
        netns.iproute(gateways) as gipr,
        netns.netns_fd(gateways) as gw_fd,
    ):
        for handle in (hipr, gipr):
            handle.link("set", index=_index(handle, "lo"), state="up")
        for i, up in enumerate(uplinks):
            # Both ends are born in their namespaces: nothing ever appears in the
            # root namespace, not even for a moment.
            hipr.link(
                "add",
                ifname=up.ifname,
                index=UPLINK_IFINDEX + i,
                kind="veth",
                peer={"ifname": f"g{i}", "net_ns_fd": gw_fd},
            )
            _address_up(gipr, f"g{i}", up.gateway)
            _address_up(hipr, up.ifname, up.address)
        _wait_carrier(hipr, len(uplinks))


def _index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname!r} in {ipr.status.get('netns')}")
    return int(found[0])


def _address_up(ipr: Any, ifname: str, address: IPv4Interface) -> None:
    index = _index(ipr, ifname)
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    ipr.link("set", index=index, state="up")


def _wait_carrier(ipr: Any, count: int, timeout: float = OPERSTATE_TIMEOUT) -> None:
    """Waits until `count` veths are operationally up (carrier comes from linkwatch, later)."""
    deadline = time.monotonic() + timeout
    while True:
        up = sum(
            1
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFNAME") != "lo" and link.get_attr("IFLA_OPERSTATE") == "UP"
        )
        if up >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {up} of {count} uplinks up after {timeout}s")
        time.sleep(0.01)


def uplinks_config(uplinks: Sequence[VethUplink], extra: dict[str, Any] | None = None) -> str:
    """An ecmpd YAML config with one uplink per veth (defaults for everything else)."""
    data: dict[str, Any] = {
        "uplinks": [
            {
                "name": up.name,
                "interface": up.ifname,
                "gateway": str(up.gateway.ip),
                "weight": up.weight,
                "table": up.table,
            }
            for up in uplinks
        ],
    }
    data.update(extra or {})
    return yaml.safe_dump(data, sort_keys=False)


def ip_batch(commands: Sequence[str]) -> float:
    """Runs `ip -batch` on the commands in the calling thread's namespace; returns wall ms.

    Call it through netns.call_in: the child inherits the thread's namespace, so no
    `ip netns exec` (its mount-namespace set-up) lands in the measurement.
    """
    with tempfile.NamedTemporaryFile("w", prefix="ecmpd-bench-", suffix=".ip") as f:
        f.write("".join(f"{c}\n" for c in commands))
        f.flush()
        start = time.perf_counter_ns()
        done = subprocess.run(["ip", "-batch", f.name], capture_output=True, text=True)
        elapsed = (time.perf_counter_ns() - start) / 1e6
    if done.returncode != 0:
        raise RuntimeError(f"ip -batch failed: {done.stderr.strip()}")
    return elapsed


@contextlib.contextmanager
def run_dir() -> Iterator[Path]:
    """A private temporary run dir (ecmpd's sysctl record goes there)."""
    with tempfile.TemporaryDirectory(prefix="ecmpd-bench-run-") as d:
        yield Path(d)


# --- The daemon in a namespace, faults, and what a process costs (failover_bench.py) ---


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.005) -> float:
    """Polls check() until it holds; returns time.monotonic() just after it did."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        if check():
            return time.monotonic()
        if expired:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# The benchmarks' daemon is the lab's (one implementation for demo, tests and bench).
Daemon = LabDaemon


@contextlib.contextmanager
def running_daemon(ns: str, config: Path, workdir: Path) -> Iterator[Daemon]:
    """Starts `ecmpd run` in ns (run dir and log under workdir) and always stops it."""
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(ns, config, workdir / "run", workdir / "daemon.log")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def nft(ns: str, script: str) -> float:
    """Loads an nftables script (atomically) inside ns; returns the wall seconds it took.

    `nft` runs as a child of a thread that entered ns, not under `ip netns exec`, so
    the time between deciding on a fault and its taking effect stays short.
    """

    def load() -> float:
        start = time.monotonic()
        done = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"nft failed in {ns}: {done.stderr.strip()}")
        return time.monotonic() - start

    return netns.call_in(ns, load)


def gray_failure(ns: str) -> float:
    """The namespace (an ISP) drops everything, its own answers too; link and ARP stay up."""
    return nft(ns, gray_failure_ruleset())


def family_gray_failure(ns: str, family: Family) -> float:
    """The namespace (an ISP) drops one address family only; the other flows on.

    heal() undoes it (it flushes the whole ruleset).
    """
    return nft(ns, gray_failure_ruleset(family))


def random_loss(ns: str, percent: int) -> float:
    """The namespace drops a random share of what it receives and forwards (nft numgen)."""
    return nft(
        ns,
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


def heal(ns: str) -> float:
    """Undoes gray_failure or random_loss."""
    return nft(ns, HEAL_RULESET)


def thread_in(ns: str, target: Callable[[], None], name: str) -> threading.Thread:
    """Starts a daemon thread running target inside ns (its own sockets and children are there)."""
    thread = threading.Thread(target=lambda: netns.call_in(ns, target), name=name, daemon=True)
    thread.start()
    return thread


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

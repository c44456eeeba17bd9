"""Goodput of one download: iperf3 -R, plain TCP or under `mptcpize run`."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from typing import Any

from bench.common import BenchError, check, progress
from ecmpd.lab import netns
from ecmpd.lab.delay import DelayLine
from ecmpd.lab.layout import Lab
from ecmpd.lab.mptcp import SubflowWatch
from ecmpd.model import IPAddress

_ports = itertools.count(5301)
SERVER_START_S = 0.3  # iperf3 -s listening before the client connects


def iperf_download(
    lab: Lab, seconds: int, omit: int, *, source: str | None = None, mptcp: bool = False
) -> dict[str, Any]:
    """One download from the internet namespace's first server; Mbit/s and the uplinks used."""
    port = str(next(_ports))
    server_ip = str(lab.servers[0])
    # The server accepts MPTCP (and plain TCP, as a fallback) under mptcpize.
    server = netns.popen_in(
        lab.internet,
        ["mptcpize", "run", "iperf3", "-s", "-1", "-B", server_ip, "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[str] = set()
    stop = threading.Event()
    sources: dict[IPAddress, str] = {isp.address.ip: isp.name for isp in lab.isps}

    def sample() -> None:
        with SubflowWatch(lab.router, sources) as watch:
            while not stop.wait(0.5):
                seen.update(watch.uplinks_carrying())

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        time.sleep(SERVER_START_S)
        argv = ["mptcpize", "run"] if mptcp else []
        argv += ["iperf3", "-c", server_ip, "-p", port, "-R", "-J"]
        argv += ["-t", str(seconds), "-O", str(omit)] + (["-B", source] if source else [])
        sampler.start()
        out = netns.run_in(lab.router, argv, capture_output=True, text=True, timeout=seconds + 30)
    finally:
        stop.set()
        server.kill()
        server.wait()
    if sampler.is_alive():
        sampler.join(2)
    doc = json.loads(out.stdout or "{}")
    received = doc.get("end", {}).get("sum_received", {}).get("bits_per_second")
    if received is None:
        raise BenchError(f"iperf3 failed: {doc.get('error') or out.stderr[-300:]}")
    return {"mbit": round(received / 1e6, 1), "mptcp_subflows_on": sorted(seen)}


def scenario(lab: Lab, delays_ms: dict[str, int], seconds: int, omit: int) -> dict[str, Any]:
    """Single TCP by each uplink, by the balancer, and one MPTCP connection, under delays."""
    lines = [DelayLine(lab.ns(name), "cust0", ms / 1000) for name, ms in delays_ms.items() if ms]
    try:
        tcp = {}
        for isp in lab.isps:
            run = iperf_download(lab, seconds, omit, source=str(isp.address.ip))
            check(not run["mptcp_subflows_on"], f"plain TCP by {isp.name} ran MPTCP subflows")
            tcp[isp.name] = run["mbit"]
        balanced = iperf_download(lab, seconds, omit)["mbit"]
        mp = iperf_download(lab, seconds, omit, mptcp=True)
        check(
            mp["mptcp_subflows_on"] == sorted(i.name for i in lab.isps),
            f"the MPTCP download did not carry data on every uplink: {mp['mptcp_subflows_on']}",
        )
    finally:
        for line in lines:
            line.close()
    best = max(tcp.values())
    result = {
        "extra_rtt_ms": delays_ms,
        "tcp_by_uplink_mbit": tcp,
        "tcp_balanced_mbit": balanced,
        "mptcp_mbit": mp["mbit"],
        "sum_of_single_tcp_mbit": round(sum(tcp.values()), 1),
        "mptcp_vs_best_single": round(mp["mbit"] / best, 3),
        "mptcp_vs_shaped_sum": round(mp["mbit"] / sum(i.rate_mbit for i in lab.isps), 3),
    }
    progress(f"goodput {delays_ms}: {result}")
    return result

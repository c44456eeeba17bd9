"""goodput: bulk TCP through NAT over shaped uplinks, against a single default route."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import progress, ratio
from bench.flows.labs import (
    anchor_nat,
    anchor_teardown,
    ecmpd_cli,
    nat_lab,
    router_config,
)
from ecmpd.lab import netns
from ecmpd.lab.layout import Lab

BULK_PORT = 5201
BULK_CHUNK = 1 << 20
# TCP payload per Ethernet frame with timestamps: 1448 of 1514 bytes; TBF counts frames.
L2_CEILING = 1448 / 1514


class Sink:
    """Accepts bulk connections in the internet namespace and counts bytes per connection."""

    def __init__(self, lab: Lab) -> None:
        self.bytes: dict[tuple[str, int], int] = {}
        self._listener = netns.socket_in(lab.internet, socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", BULK_PORT))
        self._listener.listen(128)
        self._conns: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="sink", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._drain, args=(conn, peer), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drain(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        buf = bytearray(BULK_CHUNK)
        view = memoryview(buf)
        self.bytes[peer] = 0
        with contextlib.suppress(OSError):
            while n := conn.recv_into(view):
                self.bytes[peer] += n

    def snapshot(self) -> dict[tuple[str, int], int]:
        """Bytes received so far, per (public address, port)."""
        return dict(self.bytes)

    def close(self) -> None:
        """Closes everything (the listener first: no new connection after this)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def bulk(lab: Lab, flows: int, seconds: float, warmup: float) -> dict[str, Any]:
    """flows bulk TCP senders on distinct LAN clients; goodput counted at the sink."""
    assert lab.lan is not None
    sink = Sink(lab)
    stop = threading.Event()
    senders: list[socket.socket] = []
    for k in range(flows):
        sock = netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((str(lab.lan_clients[k]), 0))
        sock.connect((str(lab.servers[k % len(lab.servers)]), BULK_PORT))
        senders.append(sock)

    def send(sock: socket.socket) -> None:
        data = bytes(BULK_CHUNK)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(data)

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in senders]
    try:
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        start, cpu0, t0 = sink.snapshot(), cpu_busy(), time.monotonic()
        time.sleep(seconds)
        end, cpu1, t1 = sink.snapshot(), cpu_busy(), time.monotonic()
    finally:
        stop.set()
        for sock in senders:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        for sock in senders:
            sock.close()
        sink.close()
    elapsed = t1 - t0
    per_uplink: Counter[str] = Counter()
    per_uplink_flows: Counter[str] = Counter()
    names = {str(isp.address.ip): isp.name for isp in lab.isps}
    for peer, total in end.items():
        name = names.get(peer[0], peer[0])
        per_uplink[name] += total - start.get(peer, 0)
        per_uplink_flows[name] += 1
    mbit = sum(per_uplink.values()) * 8 / elapsed / 1e6
    busy = (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1)
    return {
        "mbit": round(mbit, 1),
        "per_uplink_mbit": {
            k: round(v * 8 / elapsed / 1e6, 1) for k, v in sorted(per_uplink.items())
        },
        "flows_per_uplink": dict(sorted(per_uplink_flows.items())),
        "machine_cpu_busy": round(busy, 3),
    }


def bench_goodput(
    prefix: str,
    workdir: Path,
    rates: Sequence[int],
    flows: int,
    seconds: float,
    warmup: float,
    shaped: bool = True,
) -> dict[str, Any]:
    """Part (d) for one set of uplinks: ecmpd's balanced NAT vs a single default route."""
    total = sum(rates)
    with nat_lab(prefix, workdir / "lab", isps=len(rates), rates_mbit=rates, shaping=shaped) as lab:
        config = router_config(lab, workdir / "ecmpd.yaml")
        run_dir = workdir / "run"
        progress(f"goodput: ecmpd, {len(rates)} uplinks {list(rates)} Mbit/s, {flows} flows")
        ecmpd_cli(lab, config, run_dir, "apply")
        try:
            ecmpd = bulk(lab, flows, seconds, warmup)
        finally:
            ecmpd_cli(lab, config, run_dir, "down")
        if not shaped:
            return {"flows": flows, "ecmpd": ecmpd}
        progress("goodput: anchor, one default route")
        netns.write_sysctls(lab.router, {"net.ipv4.ip_forward": "1"})
        first = lab.isps[0]
        route = ["ip", "route", "replace", "default", "via", str(first.gateway)]
        netns.run_in(lab.router, [*route, "dev", first.uplink_if], check=True)
        anchor_nat(lab, [first])
        try:
            anchor = bulk(lab, flows, seconds, warmup)
        finally:
            anchor_teardown(lab)
    ecmpd["fraction"] = round(ecmpd["mbit"] / total, 4)
    anchor["fraction"] = round(anchor["mbit"] / total, 4)
    return {
        "rates_mbit": list(rates),
        "summed_mbit": total,
        "flows": flows,
        "seconds": seconds,
        "ecmpd": ecmpd,
        "anchor_single_route": anchor,
        "ratio_vs_anchor": ratio(ecmpd["mbit"], anchor["mbit"]),
        "l2_ceiling_fraction": round(L2_CEILING, 4),
    }

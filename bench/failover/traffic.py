"""UDP flows and TCP connection attempts from the router, and what a fault did to them."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from bench.common import (
    BenchError,
    thread_in,
)
from ecmpd.lab import netns
from ecmpd.lab.layout import IspInfo, Lab

# Traffic: 32 UDP flows x 200 datagrams/s, and a new TCP connection every 20 ms.
UDP_FLOWS = 32
UDP_PERIOD = 0.005
UDP_SINK_PORT = 9000
# Source ports below the ephemeral range (the TCP attempts use that one); every run
# takes fresh ones, so its flows land on fresh buckets of the resilient group.
UDP_PORT_FIRST, UDP_PORT_SPAN = 20000, 12000
UDP_HEADER = struct.Struct("!HI")  # flow, sequence number
UDP_PAD = bytes(56)
TCP_PORT = 7008
TCP_PERIOD = 0.02
TCP_TIMEOUT = 0.2
# linux/asm-generic/socket.h: a kernel receive timestamp (struct timespec, CLOCK_REALTIME)
# per datagram; Python's socket module does not name it.
SO_TIMESTAMPNS = 35
WARMUP = 0.5  # traffic flowing before a fault (and every flow seen on an uplink)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One TCP connection attempt: when it started and ended, and whether it connected."""

    start: float
    end: float
    ok: bool
    source: str | None


class Traffic:
    """UDP flows and TCP connection attempts from the router to the internet namespace."""

    def __init__(self, lab: Lab, port_base: int) -> None:
        self.lab = lab
        self.uplink_of = {str(isp.address.ip): isp.name for isp in lab.isps}
        # Flows spread over the servers (and ports): the L4 hash spreads them over uplinks.
        self.flows = [
            (str(lab.servers[i % len(lab.servers)]), port_base + i) for i in range(UDP_FLOWS)
        ]
        self.tcp_server = str(lab.servers[0])
        self.send_times: list[float] = []  # by sequence number: when that tick was sent
        self.arrivals: list[list[tuple[int, float]]] = [[] for _ in self.flows]
        self.sources: list[str | None] = [None] * UDP_FLOWS
        self.attempts: list[Attempt] = []
        self.send_errors = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        """Opens the sockets (each in its namespace) and starts the threads."""
        sink = self._open(self.lab.internet, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
        sink.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sink.bind(("0.0.0.0", UDP_SINK_PORT))
        sink.settimeout(0.1)
        listener = self._open(self.lab.internet, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.tcp_server, TCP_PORT))
        listener.listen(1024)
        listener.settimeout(0.1)
        senders = []
        for _, port in self.flows:
            sock = self._open(self.lab.router, socket.SOCK_DGRAM)
            # A port but no address: the source address comes from each route lookup.
            sock.bind(("0.0.0.0", port))
            senders.append(sock)
        self._spawn(lambda: self._sink(sink), "udp-sink")
        self._spawn(lambda: self._accept(listener), "tcp-listener")
        self._spawn(lambda: self._send(senders), "udp-send")
        self._threads.append(thread_in(self.lab.router, self._guarded(self._connect), "tcp"))

    def stop(self) -> None:
        """Stops the threads and closes the sockets; raises what a thread raised."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()
        if self.errors:
            raise self.errors[0]

    def flows_on(self) -> Counter[str]:
        """How many UDP flows each uplink carried last (by the source address seen)."""
        return Counter(self.uplink_of.get(s, "?") for s in self.sources if s is not None)

    def _open(self, ns: str, kind: int) -> socket.socket:
        """An IPv4 socket in ns, closed by stop()."""
        sock = netns.socket_in(ns, socket.AF_INET, kind)
        self._sockets.append(sock)
        return sock

    def _guarded(self, func: Callable[[], None]) -> Callable[[], None]:
        """func, with whatever it raises kept for stop() and every thread told to stop."""

        def run() -> None:
            try:
                func()
            except BaseException as exc:  # reported by stop(), in the main thread
                self.errors.append(exc)
                self._stop.set()

        return run

    def _spawn(self, func: Callable[[], None], name: str) -> None:
        """Starts func in a thread (in the caller's namespace; its sockets carry their own)."""
        thread = threading.Thread(target=self._guarded(func), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send(self, socks: Sequence[socket.socket]) -> None:
        """Every 5 ms, one datagram per flow, all with the tick's sequence number."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
                continue
            seq = len(self.send_times)
            self.send_times.append(now)
            for i, (sock, (dst, _)) in enumerate(zip(socks, self.flows, strict=True)):
                try:
                    sock.sendto(UDP_HEADER.pack(i, seq) + UDP_PAD, (dst, UDP_SINK_PORT))
                except OSError:
                    self.send_errors += 1
            # Behind schedule (a busy host): carry on from now, no burst to catch up.
            next_at = max(next_at + UDP_PERIOD, now)

    def _sink(self, sock: socket.socket) -> None:
        """Records each datagram's flow, sequence number, arrival time and source."""
        # Kernel stamps are CLOCK_REALTIME; everything else here is monotonic.
        offset = time.time() - time.monotonic()
        while not self._stop.is_set():
            try:
                data, ancillary, _, address = sock.recvmsg(256, 64)
            except TimeoutError:
                continue
            stamp = time.monotonic()
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack_from("qq", raw)
                    stamp = sec + nsec * 1e-9 - offset
            if len(data) < UDP_HEADER.size:
                continue
            flow, seq = UDP_HEADER.unpack_from(data)
            if flow < UDP_FLOWS:
                self.arrivals[flow].append((seq, stamp))
                self.sources[flow] = address[0]

    def _accept(self, listener: socket.socket) -> None:
        """Accepts and closes the TCP attempts' connections."""
        # The handshake is the kernel's; accepting only keeps the backlog from filling.
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    def _connect(self) -> None:
        """Runs in the router's namespace: its sockets are created there."""
        sel = selectors.DefaultSelector()
        pending: dict[socket.socket, tuple[float, str | None]] = {}
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_at:
                    self._attempt(sel, pending, now)
                    next_at = max(next_at + TCP_PERIOD, now)
                wait = max(0.0, next_at - time.monotonic())
                for key, _ in sel.select(wait):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    start, source = pending.pop(sock)
                    sel.unregister(sock)
                    failed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    end = time.monotonic()
                    ok = not failed and end - start <= TCP_TIMEOUT
                    self.attempts.append(Attempt(start, end, ok, source))
                    sock.close()
                now = time.monotonic()
                for sock, (start, source) in list(pending.items()):
                    if now - start > TCP_TIMEOUT:
                        del pending[sock]
                        sel.unregister(sock)
                        sock.close()
                        self.attempts.append(Attempt(start, start + TCP_TIMEOUT, False, source))
        finally:
            for sock in pending:
                sock.close()
            sel.close()

    def _attempt(
        self,
        sel: selectors.BaseSelector,
        pending: dict[socket.socket, tuple[float, str | None]],
        now: float,
    ) -> None:
        """Launches one non-blocking connect (from the router: this thread is there)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # Close with a reset: thousands of attempts leave no TIME_WAIT behind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        err = sock.connect_ex((self.tcp_server, TCP_PORT))
        source = sock.getsockname()[0] if err in (0, errno.EINPROGRESS) else None
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.attempts.append(Attempt(now, time.monotonic(), False, None))
            return
        pending[sock] = (now, source)
        sel.register(sock, selectors.EVENT_WRITE)


@contextlib.contextmanager
def traffic(lab: Lab, port_base: int) -> Iterator[Traffic]:
    """Traffic running for the duration of the block (WARMUP already elapsed at entry)."""
    flows = Traffic(lab, port_base)
    try:
        flows.start()
        time.sleep(WARMUP)
        if sum(flows.flows_on().values()) < UDP_FLOWS:
            raise BenchError(f"not every UDP flow delivers before the fault: {flows.flows_on()}")
        yield flows
    finally:
        flows.stop()


@dataclass(frozen=True)
class Restore:
    """What one fault did to the traffic."""

    udp_s: float
    tcp_s: float
    flows_hit: int
    tcp_failed: int


def restore_times(flows: Traffic, t_fault: float, t_end: float) -> Restore:
    """UDP: fault -> end of any flow's last gap; TCP: -> first success after the last failure."""
    times = flows.send_times
    first = next((s for s, t in enumerate(times) if t >= t_fault - 0.01), len(times))
    # Datagrams sent in the last 0.1 s of the window may still be on their way.
    last = max((s for s, t in enumerate(times) if t <= t_end - 0.1), default=-1)
    udp, hit = 0.0, 0
    for flow, arrivals in enumerate(flows.arrivals):
        got = {seq: stamp for seq, stamp in arrivals if seq >= first}
        missing = [s for s in range(first, last + 1) if s not in got]
        if not missing:
            continue
        hit += 1
        after = [stamp for seq, stamp in got.items() if seq > missing[-1]]
        if not after:
            raise BenchError(f"UDP flow {flow} did not deliver again within the window")
        udp = max(udp, min(after) - t_fault)
    # Attempts launched in the last TCP_TIMEOUT of the window may not have concluded.
    attempts = [a for a in flows.attempts if t_fault <= a.start <= t_end - TCP_TIMEOUT - 0.05]
    failed = [a.start for a in attempts if not a.ok]
    tcp = 0.0
    if failed:
        after_ok = [a.end for a in attempts if a.ok and a.start > max(failed)]
        if not after_ok:
            raise BenchError("no TCP connection succeeded after the last failed one")
        tcp = min(after_ok) - t_fault
    return Restore(udp, tcp, hit, len(failed))


def pick_isp(lab: Lab, flows: Traffic, turn: int) -> IspInfo:
    """The ISP for this turn (rotating), skipping any that carries no UDP flow now."""
    carried = flows.flows_on()
    n = len(lab.isps)
    for k in range(n):
        isp = lab.isps[(turn + k) % n]
        if carried.get(isp.name, 0) > 0:
            return isp
    raise BenchError(f"no ISP carries a UDP flow: {carried}")

"""The internet side of the lab's bulk traffic, and the ledger both sides write into.

The sinks accept and drain every connection lab.traffic's clients open; the first bytes
of each stream name its flow slot and connection (HEADER), the NAT source address the
sink sees names its uplink. The Ledger holds, under one lock, what the senders and the
sinks record: every connection, the open ones, when each slot last delivered and every
stall, the bytes delivered per uplink.
"""

from __future__ import annotations

import contextlib
import math
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ecmpd.lab.samples import Conn, Stall

SINK_PORT = 5201
HEADER = struct.Struct("!II")  # slot, connection serial: the first bytes of every stream
CHUNK = 256 * 1024  # what a client sends, and a sink reads, per call
# A slot silent this long is stalled: far above the lab's RTTs and TBF queueing (50 ms),
# so congestion alone does not count, yet short against a failover.
STALL_S = 0.25
# The sinks wake for at least this much data (or EOF) once a stream's first bytes are
# in: fewer wake-ups per byte on a 2-core machine, still a wake-up every few ms per flow
# at the lab's rates. Not before: a new connection's first flight (TCP's initial window,
# 14.5 kB) is below it, and a flow delivers again when its first bytes arrive, not one
# round trip of a saturated queue later.
RCVLOWAT = 16 * 1024
LOOP_TICK_S = 0.02


@dataclass
class Stream:
    """One connection a sink accepted: its slot once its header is in, and the uplink
    the NAT source address the sink saw names."""

    uplink: str | None
    slot: int = -1
    head: bytes = b""


class Ledger:
    """The connections and deliveries of `flows` slots, shared by senders, sinks and
    readers (any thread)."""

    def __init__(self, flows: int, uplinks: Iterable[str]) -> None:
        self.flows = flows
        self._lock = threading.Lock()
        self._conns: list[Conn] = []
        self._live: dict[tuple[int, int], Conn] = {}
        self._last_rx: list[float | None] = [None] * flows
        self._stalls: list[Stall] = []
        self._delivered: dict[str, int] = dict.fromkeys(uplinks, 0)

    # --- the senders ---

    def opened(self, conn: Conn) -> None:
        """A connection a slot opened: recorded, and open until closed()."""
        with self._lock:
            self._conns.append(conn)
            self._live[(conn.slot, conn.serial)] = conn

    def closed(self, conn: Conn) -> None:
        """The connection is no longer open."""
        with self._lock:
            self._live.pop((conn.slot, conn.serial), None)

    # --- the sinks ---

    def nat_seen(self, slot: int, serial: int, uplink: str) -> None:
        """The sink saw the slot's connection come from this uplink's NAT address."""
        with self._lock:
            conn = self._live.get((slot, serial))
            if conn is None:
                conn = next(
                    (c for c in reversed(self._conns) if (c.slot, c.serial) == (slot, serial)),
                    None,
                )
            if conn is not None:
                conn.nat_uplink = uplink

    def received(self, slot: int, uplink: str | None, n: int, now: float) -> None:
        """The slot delivered n bytes at now (by this uplink, if known): a silence of
        STALL_S or more before it was a stall."""
        with self._lock:
            last = self._last_rx[slot]
            if last is not None and now - last >= STALL_S:
                self._stalls.append(Stall(slot, last, now))
            self._last_rx[slot] = now
            if uplink is not None:
                self._delivered[uplink] += n

    # --- reading ---

    def live(self) -> list[Conn]:
        """The connections open now."""
        with self._lock:
            return list(self._live.values())

    def all_conns(self) -> list[Conn]:
        """Every connection so far."""
        with self._lock:
            return list(self._conns)

    def errors(self) -> list[Conn]:
        """The connections that failed."""
        with self._lock:
            return [c for c in self._conns if c.error is not None]

    def delivered(self) -> dict[str, int]:
        """The bytes the sinks received so far, per uplink."""
        with self._lock:
            return dict(self._delivered)

    def resumed(self, slots: set[int], start: float, end: float) -> dict[int, float | None]:
        """For each slot: when it delivered again after a stall overlapping [start, end].

        inf while it is still stalled since before end; None when it was not stalled then.
        """
        with self._lock:
            stalls = [s for s in self._stalls if s.slot in slots]
            last_rx = list(self._last_rx)
        result: dict[int, float | None] = {}
        for slot in slots:
            last = last_rx[slot]
            if last is None or last <= end:
                result[slot] = math.inf
                continue
            ends = [s.end for s in stalls if s.slot == slot and s.start <= end and s.end >= start]
            result[slot] = max(ends) if ends else None
        return result


def drain(
    listener: socket.socket,
    ledger: Ledger,
    uplink_of_addr: Mapping[str, str],
    stop: threading.Event,
) -> None:
    """Accepts and drains every connection until stop; books who delivered what, and when.

    Closes the listener and every accepted socket on the way out.
    """
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    streams: dict[socket.socket, Stream] = {}
    try:
        while not stop.is_set():
            for key, _ in sel.select(LOOP_TICK_S):
                if key.data is None:
                    _accept(listener, sel, streams, uplink_of_addr)
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                n = recv_some(sock, buf)
                if n is None:
                    continue
                if n == 0:
                    sel.unregister(sock)
                    sock.close()
                    del streams[sock]
                    continue
                first = streams[sock].slot == -1
                _received(ledger, streams[sock], bytes(view[: min(n, HEADER.size)]), n)
                if first and streams[sock].slot != -1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, RCVLOWAT)
    finally:
        for sock in streams:
            sock.close()
        sel.close()
        listener.close()


def recv_some(sock: socket.socket, buf: bytearray) -> int | None:
    """Reads what a non-blocking socket holds into buf: how many bytes, 0 when the stream
    ended (EOF, or an error such as a reset), None when nothing is there yet."""
    try:
        return sock.recv_into(buf)
    except BlockingIOError:
        return None
    except OSError:
        return 0


def _accept(
    listener: socket.socket,
    sel: selectors.BaseSelector,
    streams: dict[socket.socket, Stream],
    uplink_of_addr: Mapping[str, str],
) -> None:
    with contextlib.suppress(BlockingIOError):
        while True:
            sock, peer = listener.accept()
            sock.setblocking(False)
            streams[sock] = Stream(uplink_of_addr.get(peer[0]))
            sel.register(sock, selectors.EVENT_READ, 1)


def _received(ledger: Ledger, stream: Stream, start: bytes, n: int) -> None:
    """Books n bytes of a stream; the first HEADER.size bytes name its slot."""
    if stream.slot < 0:
        stream.head += start[: HEADER.size - len(stream.head)]
        if len(stream.head) < HEADER.size:
            return
        slot, serial = HEADER.unpack(stream.head)
        if not 0 <= slot < ledger.flows:
            return
        stream.slot = slot
        if stream.uplink is not None:
            ledger.nat_seen(slot, serial, stream.uplink)
    ledger.received(stream.slot, stream.uplink, n, time.monotonic())

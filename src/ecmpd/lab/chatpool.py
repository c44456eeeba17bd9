"""Long-lived TCP "chat" connections from LAN clients: the client side and its records.

ClientPool (LAN namespace) keeps N connections from many client addresses (IPv4 or
IPv6) open, each sending a short line every ~100 ms and checking its echo (lab.chat's
ChatServer); per connection it records errors (reset, eof, timeout, connect failures),
stalls (echoes that came late), reconnects and the public address the server reported.
One thread with a selector: hundreds of connections without hundreds of threads on a
2-core machine.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import random
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address

from ecmpd.lab import netns
from ecmpd.lab.running import Running

IPAddress = IPv4Address | IPv6Address

CHAT_PORT = 7200
GREETING = "HELLO"
PERIOD = 0.1
ECHO_TIMEOUT = 4.0
CONNECT_TIMEOUT = 3.0
RECONNECT_DELAY = 0.1
SWEEP = 0.05  # how often pending echoes and connects are checked for timeouts
RECV_SIZE = 4096
# Connecting, waiting for the greeting, exchanging lines.
CONNECTING, GREETING_WAIT, OPEN = "connecting", "greeting", "open"


@dataclass(frozen=True)
class ConnError:
    """One failure of a connection: when (time.monotonic()), what, on which public address."""

    at: float
    kind: str  # reset | eof | timeout | connect-timeout | connect-<errno> | <errno name>
    public: str | None


@dataclass
class Conn:
    """One connection of a slot, from its greeting to its failure (or still open)."""

    public: str  # the source address the server saw (the router's NAT address)
    public_port: int
    opened: float  # time.monotonic() of the greeting
    closed: float | None = None
    error: ConnError | None = None


@dataclass
class Slot:
    """One long-lived connection slot (its successive connections share the slot)."""

    index: int
    source: IPAddress
    server: IPAddress
    sport: int = 0  # 0: an ephemeral port
    conns: list[Conn] = field(default_factory=list)
    errors: list[ConnError] = field(default_factory=list)  # connect failures too
    echoes: int = 0
    last_echo: float = 0.0
    # (when the echo came, the silence before it) for each echo later than the pool's
    # stall_s after the previous one (or the greeting) on the same connection
    stalls: list[tuple[float, float]] = field(default_factory=list)

    @property
    def public(self) -> str | None:
        """The open connection's public address, None while not connected."""
        if self.conns and self.conns[-1].closed is None:
            return self.conns[-1].public
        return None

    def errors_since(self, t: float) -> list[ConnError]:
        """The errors at or after t."""
        return [e for e in self.errors if e.at >= t]

    def stalled_between(self, start: float, end: float) -> list[float]:
        """The stalls that ended (their echo came) between start and end: their lengths."""
        return [gap for at, gap in self.stalls if start <= at <= end]

    def public_at(self, t: float) -> str | None:
        """The public address of the connection open at time t (None when none was)."""
        for conn in self.conns:
            if conn.opened <= t and (conn.closed is None or conn.closed > t):
                return conn.public
        return None


@dataclass
class _Live:
    """The pool thread's private state for one slot."""

    slot: Slot
    sock: socket.socket | None = None
    state: str = ""
    since: float = 0.0  # when the current state began
    generation: int = 0
    seq: int = 0
    pending: deque[tuple[int, float]] = field(default_factory=deque)
    inbuf: bytes = b""
    heard: float = 0.0  # the greeting's or the last echo's time


class ClientPool(Running):
    """N long-lived chat connections from LAN addresses, reconnecting after each failure."""

    def __init__(
        self,
        ns: str,
        specs: Sequence[tuple[IPAddress, IPAddress, int]],
        *,
        port: int = CHAT_PORT,
        period: float = PERIOD,
        echo_timeout: float = ECHO_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect: bool = True,
        seed: int = 1,
        stall_s: float | None = None,
    ) -> None:
        self.ns, self.port, self.period = ns, port, period
        # An echo this late is a stall (three periods: one lost segment's retransmission).
        self.stall_s = 3 * period if stall_s is None else stall_s
        self.echo_timeout, self.connect_timeout, self.reconnect = (
            echo_timeout,
            connect_timeout,
            reconnect,
        )
        self._lives = [
            _Live(Slot(index=i, source=src, server=dst, sport=sport))
            for i, (src, dst, sport) in enumerate(specs)
        ]
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=lambda: netns.call_in(ns, self._run), name="chat-pool", daemon=True
        )

    def start(self) -> None:
        """Starts the thread (it enters the namespace itself)."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread (closing every connection); raises what the thread died of."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._failure is not None:
            raise RuntimeError("the client pool thread failed") from self._failure

    def snapshot(self) -> list[Slot]:
        """A consistent copy of every slot."""
        with self._lock:
            return [
                replace(
                    live.slot,
                    conns=[replace(c) for c in live.slot.conns],
                    errors=list(live.slot.errors),
                    stalls=list(live.slot.stalls),
                )
                for live in self._lives
            ]

    def wait_ready(self, timeout: float, echoes: int = 2) -> list[Slot]:
        """Waits until every slot is connected and has had `echoes` echoes; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            if self._failure is not None:
                raise RuntimeError("the client pool thread failed") from self._failure
            slots = self.snapshot()
            if all(s.public is not None and s.echoes >= echoes for s in slots):
                return slots
            if time.monotonic() > deadline:
                late = [s.index for s in slots if s.public is None or s.echoes < echoes]
                raise TimeoutError(f"{len(late)} connections not ready after {timeout}s")
            time.sleep(0.05)

    # --- the pool thread (inside the LAN namespace) ---

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop()/wait_ready() in the caller
            self._failure = exc
        finally:
            for live in self._lives:
                if live.sock is not None:
                    live.sock.close()
                    live.sock = None

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        timers: list[tuple[float, int, int]] = []  # (due, slot index, generation)
        start = time.monotonic()
        # Spread the first connects over a second so SYNs do not arrive as one burst.
        for live in self._lives:
            heapq.heappush(timers, (start + self._rng.random(), live.slot.index, 0))
        next_sweep = start
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    _, index, generation = heapq.heappop(timers)
                    live = self._lives[index]
                    if live.generation == generation:
                        self._on_timer(sel, timers, live, now)
                if now >= next_sweep:
                    self._sweep(sel, timers, now)
                    next_sweep = now + SWEEP
                wait = min(timers[0][0] - now if timers else SWEEP, SWEEP)
                for key, mask in sel.select(timeout=max(wait, 0.0)):
                    live = self._lives[key.data]
                    if mask & selectors.EVENT_WRITE and live.state == CONNECTING:
                        self._connected(sel, timers, live)
                    elif mask & selectors.EVENT_READ:
                        self._receive(sel, timers, live)
        finally:
            sel.close()

    def _on_timer(
        self,
        sel: selectors.BaseSelector,
        timers: list[tuple[float, int, int]],
        live: _Live,
        now: float,
    ) -> None:
        if live.sock is None:
            self._connect(sel, timers, live, now)
        elif live.state == OPEN:
            live.seq += 1
            try:
                live.sock.send(f"{live.seq}\n".encode())
            except (BlockingIOError, InterruptedError):
                pass  # a full send buffer means a stall: the echo timeout will tell
            except OSError as exc:
                self._fail(sel, timers, live, _kind(exc))
                return
            live.pending.append((live.seq, now))
            heapq.heappush(timers, (now + self.period, live.slot.index, live.generation))

    def _connect(
        self,
        sel: selectors.BaseSelector,
        timers: list[tuple[float, int, int]],
        live: _Live,
        now: float,
    ) -> None:
        family = socket.AF_INET if live.slot.source.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Interactive traffic: each line leaves at once, also while one is unanswered.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            sock.bind((str(live.slot.source), live.slot.sport))
        except OSError as exc:
            sock.close()
            live.generation += 1
            self._record_error(live, f"bind-{_kind(exc)}")
            self._retry(timers, live)
            return
        code = sock.connect_ex((str(live.slot.server), self.port))
        live.sock, live.state, live.since = sock, CONNECTING, now
        live.pending.clear()
        live.inbuf = b""
        if code not in (0, errno.EINPROGRESS):
            self._fail(sel, timers, live, f"connect-{errno.errorcode.get(code, code)}")
            return
        sel.register(sock, selectors.EVENT_WRITE, live.slot.index)

    def _connected(
        self, sel: selectors.BaseSelector, timers: list[tuple[float, int, int]], live: _Live
    ) -> None:
        assert live.sock is not None
        code = live.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(sel, timers, live, f"connect-{errno.errorcode.get(code, code)}")
            return
        live.state, live.since = GREETING_WAIT, time.monotonic()
        sel.modify(live.sock, selectors.EVENT_READ, live.slot.index)

    def _receive(
        self, sel: selectors.BaseSelector, timers: list[tuple[float, int, int]], live: _Live
    ) -> None:
        assert live.sock is not None
        try:
            data = live.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(sel, timers, live, _kind(exc))
            return
        if not data:
            self._fail(sel, timers, live, "eof")
            return
        live.inbuf += data
        *lines, live.inbuf = live.inbuf.split(b"\n")
        now = time.monotonic()
        for raw in lines:
            line = raw.decode(errors="replace")
            if line.startswith(GREETING) and live.state == GREETING_WAIT:
                _, address, port = line.split()
                with self._lock:
                    live.slot.conns.append(Conn(public=address, public_port=int(port), opened=now))
                live.state, live.since, live.heard = OPEN, now, now
                # A random phase: the pool's lines are spread over each period.
                due = now + self._rng.random() * self.period
                heapq.heappush(timers, (due, live.slot.index, live.generation))
            elif live.state == OPEN and live.pending and line == str(live.pending[0][0]):
                live.pending.popleft()
                with self._lock:
                    live.slot.echoes += 1
                    live.slot.last_echo = now
                    if now - live.heard > self.stall_s:
                        live.slot.stalls.append((now, now - live.heard))
                live.heard = now
            else:
                self._fail(sel, timers, live, "garbled")
                return

    def _sweep(
        self, sel: selectors.BaseSelector, timers: list[tuple[float, int, int]], now: float
    ) -> None:
        for live in self._lives:
            if live.sock is None:
                continue
            if live.state in (CONNECTING, GREETING_WAIT):
                if now - live.since > self.connect_timeout:
                    self._fail(sel, timers, live, "connect-timeout")
            elif live.pending and now - live.pending[0][1] > self.echo_timeout:
                self._fail(sel, timers, live, "timeout")

    def _fail(
        self,
        sel: selectors.BaseSelector,
        timers: list[tuple[float, int, int]],
        live: _Live,
        kind: str,
    ) -> None:
        if live.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(live.sock)
            live.sock.close()
            live.sock = None
        live.generation += 1
        live.state = ""
        live.pending.clear()
        self._record_error(live, kind)
        self._retry(timers, live)

    def _record_error(self, live: _Live, kind: str) -> None:
        with self._lock:
            slot = live.slot
            error = ConnError(at=time.monotonic(), kind=kind, public=slot.public)
            if slot.public is not None:
                slot.conns[-1].closed, slot.conns[-1].error = error.at, error
            slot.errors.append(error)

    def _retry(self, timers: list[tuple[float, int, int]], live: _Live) -> None:
        if self.reconnect:
            due = time.monotonic() + RECONNECT_DELAY
            heapq.heappush(timers, (due, live.slot.index, live.generation))


def _kind(exc: OSError) -> str:
    """A short name for a socket error."""
    if isinstance(exc, ConnectionResetError):
        return "reset"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)

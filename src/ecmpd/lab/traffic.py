"""Bulk TCP traffic through a lab router, and what it measures there.

Clients in the LAN namespace push data over many TCP connections, through the router
(NAT per uplink) to sinks in the internet namespace. Every connection lives a few
seconds, then its slot opens a new one (fresh source port, fresh hash), as real users
do; a connection that fails (reset, timeout) is counted and its slot reconnects.

Measured, all from the kernel or the wire, never from the plan:
  per uplink throughput: the router's interface counters (/proc/thread-self/net/dev,
    read in the router's namespace) several times a second;
  per connection path: the router's FIB asked for the connection's 5-tuple as a
    forwarded packet (input lookup from the LAN port), at its start and at every sample,
    so a connection the kernel re-routes is seen as a move;
  per connection uplink at the sink: the NAT source address the server saw;
  per slot delivery: when the sinks last received its bytes, and every stall.
Here: the LAN's clients and the router's view; lab.sinks holds the internet's sinks and
the ledger both sides book into.
"""

from __future__ import annotations

import contextlib
import errno
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable

from ecmpd.kernel.netdev import read_interface_counters
from ecmpd.kernel.routemsg import RouteLookupError, route_get
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.layout import ROUTER_LAN_IF, Lab
from ecmpd.lab.running import Running
from ecmpd.lab.samples import Conn, Move, Sample, mbit
from ecmpd.lab.sinks import CHUNK, HEADER, LOOP_TICK_S, SINK_PORT, Ledger, drain
from ecmpd.lab.topology import add_lan_clients

# A connection whose data stays unacknowledged this long is aborted by the kernel
# (ETIMEDOUT): a safety net for a flow stuck on a dead path that no reset reaches. Not
# shorter: on a congested 50 Mbit/s link a healthy flow can back off for seconds.
USER_TIMEOUT_MS = 10_000
# A connect that gets no answer this long fails (the kernel's own SYN retries last two
# minutes); as long as the user timeout, for the same reason.
CONNECT_TIMEOUT_S = 10.0
# A slot whose connection failed retries after this (no route, refused: no busy loop),
# except after a reset: an application whose connection was reset reconnects at once.
RECONNECT_DELAY_S = 0.05
JOIN_TIMEOUT_S = 5.0


class TrafficError(RuntimeError):
    """A traffic thread failed (not a flow: the generator itself)."""


class Traffic(Running):
    """Bulk TCP flows from LAN clients to internet sinks, sampled at the router.

    Use as a context manager: threads and sockets start on entry and are all stopped
    and closed on exit, whatever happened.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        flows: int = 48,
        clients: int = 16,
        lifetime_s: tuple[float, float] = (3.0, 8.0),
        interval_s: float = 0.2,
        members: Callable[[], frozenset[str]] | None = None,
        seed: int = 1,
    ) -> None:
        if lab.lan is None:
            raise ValueError("the traffic needs a lab with a LAN (build it with lan=True)")
        if flows < 1 or clients < 1 or interval_s <= 0:
            raise ValueError("flows, clients and interval must be positive")
        self.lab, self.lan = lab, lab.lan
        self.flows, self.lifetime, self.interval = flows, lifetime_s, interval_s
        self._members = members
        self._rng = random.Random(seed)
        self._n_clients = clients
        self.uplink_of_if = {isp.uplink_if: isp.name for isp in lab.isps}
        self.uplink_of_addr = {str(isp.address.ip): isp.name for isp in lab.isps}
        self.ledger = Ledger(flows, self.uplink_of_addr.values())
        self.moves: list[Move] = []
        self.samples: list[Sample] = []
        self.started = 0.0
        self._lock = threading.Lock()  # moves and samples
        self._stop = threading.Event()
        self._stop_sending = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sender: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._nl: NetlinkSocket | None = None
        self._lan_ifindex = 0
        self._ifindex_uplink: dict[int, str] = {}

    # --- life cycle -------------------------------------------------------------

    def start(self) -> None:
        """Adds the LAN clients, opens the sinks, starts sender and sampler threads."""
        have = len(self.lab.lan_clients)
        if have < self._n_clients:
            add_lan_clients(self.lab, self._n_clients - have)
        self.clients = self.lab.lan_clients[: self._n_clients]
        self._nl = netns.call_in(self.lab.router, NetlinkSocket.open)
        names = netns.call_in(self.lab.router, lambda: dict(socket.if_nameindex()))
        self._lan_ifindex = next(i for i, n in names.items() if n == ROUTER_LAN_IF)
        self._ifindex_uplink = {
            i: self.uplink_of_if[n] for i, n in names.items() if n in self.uplink_of_if
        }
        listener = netns.socket_in(self.lab.internet, socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", SINK_PORT))
            listener.listen(1024)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.started = time.monotonic()
        self._spawn(
            "traffic-sink", lambda: drain(listener, self.ledger, self.uplink_of_addr, self._stop)
        )
        self._sender = self._spawn("traffic-send", lambda: netns.call_in(self.lan, self._send))
        self._spawn("traffic-sample", lambda: netns.call_in(self.lab.router, self._sample))

    def stop(self) -> None:
        """Stops every thread and closes every socket (idempotent)."""
        # The senders first: a sink that closed under a sending client would reset it,
        # and that reset is no flow error.
        self._stop_sending.set()
        if self._sender is not None:
            self._sender.join(JOIN_TIMEOUT_S)
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        self._threads.clear()
        if self._nl is not None:
            self._nl.close()
            self._nl = None

    def check(self) -> None:
        """Raises TrafficError if a traffic thread died."""
        if self._errors:
            first = self._errors[0]
            raise TrafficError(f"traffic generator failed: {first!r}") from first

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # reported by check(), in the caller's thread
                self._errors.append(exc)
                self._stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    # --- reading the results (any thread) ----------------------------------------

    def live(self) -> list[Conn]:
        """The connections open now."""
        return self.ledger.live()

    def slots_on(self, uplink: str) -> set[int]:
        """Slots whose open connection is on this uplink (by route lookup or by NAT)."""
        return {c.slot for c in self.live() if uplink in c.uplinks()}

    def resumed(self, slots: set[int], start: float, end: float) -> dict[int, float | None]:
        """For each slot: when it delivered again after a stall overlapping [start, end]
        (Ledger.resumed)."""
        return self.ledger.resumed(slots, start, end)

    def recent(self, seconds: float) -> list[Sample]:
        """The samples of the last seconds."""
        with self._lock:
            if not self.samples:
                return []
            horizon = self.samples[-1].t - seconds
            return [s for s in self.samples if s.t > horizon]

    def all_samples(self) -> list[Sample]:
        """Every sample so far."""
        with self._lock:
            return list(self.samples)

    def errors(self) -> list[Conn]:
        """The connections that failed."""
        return self.ledger.errors()

    def all_conns(self) -> list[Conn]:
        """Every connection so far."""
        return self.ledger.all_conns()

    # --- the router's view -------------------------------------------------------

    def lookup(self, conn: Conn) -> str | None:
        """The uplink the router's kernel picks for the connection's packets now."""
        nl = self._nl
        if nl is None:
            return None
        try:
            answer = route_get(
                nl,
                conn.server,
                src=conn.client,
                iif=self._lan_ifindex,
                ip_proto=socket.IPPROTO_TCP,
                sport=conn.sport,
                dport=SINK_PORT,
            )
        except (RouteLookupError, OSError):
            return None  # no route at that instant (all down): not an uplink
        return self._ifindex_uplink.get(answer.ifindex or 0)

    def _sample(self) -> None:
        """Runs in the router's namespace: counters, lookups and group, every interval."""
        names = list(self.uplink_of_if)
        before = read_interface_counters(names)
        delivered_before = self.ledger.delivered()
        t_before = time.monotonic()
        next_at = t_before + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            now = time.monotonic()
            # On a busy machine a late sample is not chased by a burst of short ones:
            # rates over tiny intervals are mostly noise.
            next_at = max(next_at + self.interval, now + self.interval / 2)
            counters = read_interface_counters(names)
            delivered = self.ledger.delivered()
            live = self.live()
            paths = {(c.slot, c.serial): self.lookup(c) for c in live}
            # Read after the lookups: a lookup that changed because an uplink left the
            # group is then never mistaken for a move of a healthy flow.
            members = self._members() if self._members is not None else None
            dt = now - t_before
            sample = Sample(
                t=now,
                tx_mbit={
                    self.uplink_of_if[n]: mbit(c["tx_bytes"] - before[n]["tx_bytes"], dt)
                    for n, c in counters.items()
                },
                rx_mbit={
                    self.uplink_of_if[n]: mbit(c["rx_bytes"] - before[n]["rx_bytes"], dt)
                    for n, c in counters.items()
                },
                delivered_mbit={u: mbit(delivered[u] - delivered_before[u], dt) for u in delivered},
                flows={u: sum(1 for p in paths.values() if p == u) for u in delivered},
                members=members,
            )
            with self._lock:
                for conn in live:
                    new = paths[(conn.slot, conn.serial)]
                    old = conn.path
                    if new is not None and old is not None and new != old:
                        healthy = members is not None and old in members
                        self.moves.append(Move(now, conn.slot, conn.serial, old, new, healthy))
                    if new is not None:
                        conn.path = new
                self.samples.append(sample)
            before, delivered_before, t_before = counters, delivered, now

    # --- the LAN clients ----------------------------------------------------------

    def _send(self) -> None:
        """Runs in the LAN namespace: keeps every slot's connection pushing data."""
        payload = memoryview(bytes(CHUNK))
        sel = selectors.DefaultSelector()
        socks: dict[int, tuple[socket.socket, Conn, bytes]] = {}  # slot -> sock, conn, head
        retry_at = [0.0] * self.flows
        serial = 0
        try:
            while not (self._stop.is_set() or self._stop_sending.is_set()):
                now = time.monotonic()
                for slot in range(self.flows):
                    if slot not in socks and now >= retry_at[slot]:
                        serial += 1
                        socks[slot] = self._open(sel, slot, serial, now)
                for key, _ in sel.select(LOOP_TICK_S):
                    slot = key.data
                    sock, conn, head = socks[slot]
                    outcome = self._push(sock, conn, head, payload)
                    if outcome is not None:
                        socks[slot] = (sock, conn, outcome)
                now = time.monotonic()
                for slot, (sock, conn, _head) in list(socks.items()):
                    if (
                        conn.error is not None
                        or (conn.connected is not None and now >= conn.connected + conn.lifetime)
                        or (conn.connected is None and now - conn.opened > CONNECT_TIMEOUT_S)
                    ):
                        if conn.error is None and conn.connected is None:
                            self._fail(conn, "connect timeout")
                        sel.unregister(sock)
                        self._close(sock, conn)
                        del socks[slot]
                        delay = conn.error not in (None, "ECONNRESET")
                        retry_at[slot] = now + (RECONNECT_DELAY_S if delay else 0.0)
        finally:
            for sock, conn, _ in socks.values():
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(sock)
                self._close(sock, conn)
            sel.close()

    def _open(
        self, sel: selectors.BaseSelector, slot: int, serial: int, now: float
    ) -> tuple[socket.socket, Conn, bytes]:
        """A new non-blocking connection for the slot, registered for writing."""
        client = self.clients[slot % len(self.clients)]
        server = self.lab.servers[(slot * 7 + serial) % len(self.lab.servers)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
        sock.bind((str(client), 0))
        code = sock.connect_ex((str(server), SINK_PORT))
        conn = Conn(
            slot=slot,
            serial=serial,
            client=client,
            server=server,
            sport=sock.getsockname()[1],
            opened=now,
            lifetime=self._rng.uniform(*self.lifetime),
        )
        if code not in (0, errno.EINPROGRESS):
            conn.error = errno.errorcode.get(code, str(code))
        conn.uplink = conn.path = self.lookup(conn)
        self.ledger.opened(conn)
        sel.register(sock, selectors.EVENT_WRITE, slot)
        return sock, conn, HEADER.pack(slot, serial)

    def _push(
        self, sock: socket.socket, conn: Conn, head: bytes, payload: memoryview
    ) -> bytes | None:
        """Sends what the socket takes; returns the unsent part of the header, if changed."""
        if conn.connected is None:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._fail(conn, errno.errorcode.get(code, str(code)))
                return None
            conn.connected = time.monotonic()
        try:
            if head:
                n = sock.send(head)
                return head[n:]
            conn.sent += sock.send(payload)
        except BlockingIOError:
            pass
        except OSError as exc:
            self._fail(conn, errno.errorcode.get(exc.errno or 0, str(exc)))
        return None

    def _fail(self, conn: Conn, error: str) -> None:
        if conn.error is None and not self._stop_sending.is_set():
            conn.error = error

    def _close(self, sock: socket.socket, conn: Conn) -> None:
        """Closes the connection (the kernel sends what is left) and retires it."""
        with contextlib.suppress(OSError):
            sock.close()
        conn.closed = time.monotonic()
        self.ledger.closed(conn)

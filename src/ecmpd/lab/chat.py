"""The chat server (internet namespace) and the chat connections as a whole, for a lab.

ChatServer accepts on every address at one port, greets each connection with the
source address and port it saw (the public side of the router's NAT) and echoes every
line; chat() runs it with a lab.chatpool ClientPool in the LAN. One thread each.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address

from ecmpd.lab import netns
from ecmpd.lab.chatpool import (
    CHAT_PORT,
    ECHO_TIMEOUT,
    GREETING,
    PERIOD,
    RECV_SIZE,
    ClientPool,
    Slot,
)
from ecmpd.lab.layout import Lab
from ecmpd.lab.running import Running


class ChatServer(Running):
    """Greets each connection with the address it saw, then echoes its lines (one thread)."""

    def __init__(self, ns: str, port: int = CHAT_PORT, family: int = socket.AF_INET) -> None:
        self.ns, self.port = ns, port
        self.peers: list[tuple[float, str, int]] = []  # (accepted at, address, port)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = netns.socket_in(ns, family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # an IPv4 server may listen on the same port
            self._listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Every address of the internet namespace: all servers and alt_servers.
        self._listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        self._listener.listen(4096)
        self._listener.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="chat-server", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and closes every socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()

    def accepted(self) -> list[tuple[float, str, int]]:
        """Every accepted connection: (time, source address, source port)."""
        with self._lock:
            return list(self.peers)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        out: dict[socket.socket, bytearray] = {}
        try:
            while not self._stop.is_set():
                for key, mask in sel.select(timeout=0.05):
                    if key.data is None:
                        self._accept(sel, out)
                        continue
                    conn: socket.socket = key.fileobj  # type: ignore[assignment]
                    readable = bool(mask & selectors.EVENT_READ)
                    alive = self._echo(conn, out) if readable else True
                    if not (alive and self._flush(sel, conn, out)):
                        self._drop(sel, conn, out)
        finally:
            for conn in list(out):
                self._drop(sel, conn, out)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, out: dict[socket.socket, bytearray]) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
                address, port = peer[0], peer[1]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ECONNABORTED: the client gave up already
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.peers.append((time.monotonic(), address, port))
            out[conn] = bytearray(f"{GREETING} {address} {port}\n".encode())
            sel.register(conn, selectors.EVENT_READ, "conn")
            if not self._flush(sel, conn, out):
                self._drop(sel, conn, out)

    def _echo(self, conn: socket.socket, out: dict[socket.socket, bytearray]) -> bool:
        try:
            data = conn.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        out[conn] += data
        return True

    def _flush(
        self, sel: selectors.BaseSelector, conn: socket.socket, out: dict[socket.socket, bytearray]
    ) -> bool:
        buf = out[conn]
        try:
            while buf:
                sent = conn.send(buf)
                del buf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return False
        # Only wait for writability while something is queued (a stalled peer).
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if buf else 0)
        sel.modify(conn, events, "conn")
        return True

    def _drop(
        self, sel: selectors.BaseSelector, conn: socket.socket, out: dict[socket.socket, bytearray]
    ) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        out.pop(conn, None)
        conn.close()


def public_addresses(
    lab: Lab,
    flows: Sequence[tuple[IPv4Address, IPv4Address, int]],
    port: int = CHAT_PORT,
    timeout: float = 3.0,
) -> list[str]:
    """For each (LAN source, server, source port or 0): the address the server saw."""
    assert lab.lan is not None

    def run() -> list[str]:
        seen = []
        for source, server, sport in flows:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # An abortive close (RST, no TIME_WAIT): the same 5-tuple can connect again.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.settimeout(timeout)
                sock.bind((str(source), sport))
                sock.connect((str(server), port))
                line = sock.makefile("rb").readline().decode()
            words = line.split()
            if len(words) != 3 or words[0] != GREETING:
                raise AssertionError(f"unexpected greeting {line!r}")
            seen.append(words[1])
        return seen

    return netns.call_in(lab.lan, run)


def by_public(slots: Sequence[Slot], t: float) -> dict[str | None, list[Slot]]:
    """The slots grouped by the public address each had at time t."""
    groups: dict[str | None, list[Slot]] = {}
    for slot in slots:
        groups.setdefault(slot.public_at(t), []).append(slot)
    return groups


def chat_specs(lab: Lab, n: int) -> list[tuple[IPv4Address, IPv4Address, int]]:
    """n chat connections from the LAN clients to the servers, round robin, ephemeral ports."""
    return [(client, server, 0) for client, server in lab.pairs(n)]


@contextlib.contextmanager
def chat(
    lab: Lab,
    specs: Sequence[tuple[IPv4Address, IPv4Address, int]],
    *,
    echo_timeout: float = ECHO_TIMEOUT,
    period: float = PERIOD,
) -> Iterator[tuple[ChatServer, ClientPool]]:
    """A chat server in the internet namespace and a client pool in the LAN, both stopped after."""
    assert lab.lan is not None
    pool = ClientPool(lab.lan, specs, echo_timeout=echo_timeout, period=period)
    with ChatServer(lab.internet) as server, pool:
        yield server, pool

"""Many silent TCP connections from LAN clients: opened, left idle, then checked.

IdleConns opens connections from a LAN namespace to the lab's ChatServer (which greets
each with the address it saw, so the public side of the router's NAT names the
uplink), stays silent, watches for resets while idle, and at the end sends one line on
each and waits for its echo. Everything runs on the calling thread with one selector:
thousands of connections cost no threads.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ecmpd.lab import netns
from ecmpd.lab.chatpool import CHAT_PORT, GREETING

IPAddress = IPv4Address | IPv6Address


@dataclass
class Idle:
    """One idle connection: where from/to, the public address the server saw, its fate."""

    sock: socket.socket
    client: IPAddress
    server: IPAddress
    public: str
    ended: float | None = None  # when a reset (or EOF) arrived
    how: str = ""


class IdleConns:
    """Silent connections from a LAN namespace; close() closes them all."""

    def __init__(self, lan_ns: str) -> None:
        self.ns = lan_ns
        self.conns: list[Idle] = []
        self.chatty: set[int] = set()  # id()s of connections watch() keeps busy
        self._sel = selectors.DefaultSelector()

    def __enter__(self) -> IdleConns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self.conns:
            conn.sock.close()
        self._sel.close()

    def open(
        self,
        pairs: Sequence[tuple[IPAddress, IPAddress]],
        port: int = CHAT_PORT,
        timeout: float = 3.0,
    ) -> None:
        """One connection per (client address, server), each read up to its greeting."""
        for client, server in pairs:
            family = socket.AF_INET if client.version == 4 else socket.AF_INET6
            sock = netns.socket_in(self.ns, family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.bind((str(client), 0))
            sock.connect((str(server), port))
            greeting = b""
            while not greeting.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError(f"{client} -> {server}: closed before the greeting")
                greeting += chunk
            word, public, _port = greeting.decode().split()
            assert word == GREETING, greeting
            sock.setblocking(False)
            conn = Idle(sock, client, server, public)
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self.conns.append(conn)

    def watch(self, seconds: float, period: float = 0.02) -> None:
        """For `seconds`, notes each connection that is reset or closed; the silent ones
        stay silent, the chatty ones send a line every `period`."""
        end = time.monotonic() + seconds
        chatty = [c for c in self.conns if id(c) in self.chatty]
        next_send = 0.0
        while (left := end - time.monotonic()) > 0:
            if chatty and time.monotonic() >= next_send:
                next_send = time.monotonic() + period
                for conn in chatty:
                    if conn.ended is None:
                        try:
                            conn.sock.send(b"x\n")
                        except OSError as exc:
                            self._end(conn, errno.errorcode.get(exc.errno or 0, str(exc)))
            for key, _ in self._sel.select(timeout=min(left, period)):
                self._read(key.data)

    def _read(self, conn: Idle) -> bytes:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self._end(conn, errno.errorcode.get(exc.errno or 0, str(exc)))
            return b""
        if not data:
            self._end(conn, "eof")
        return data

    def _end(self, conn: Idle, how: str) -> None:
        if conn.ended is None:
            conn.ended, conn.how = time.monotonic(), how
            self._sel.unregister(conn.sock)

    def check(self, timeout: float = 3.0) -> list[Idle]:
        """Sends a line on every open connection; returns those without their echo in time."""
        waiting: dict[int, Idle] = {}
        for conn in self.conns:
            if conn.ended is not None:
                continue
            try:
                conn.sock.send(b"ping\n")
                waiting[id(conn)] = conn
            except OSError as exc:
                self._end(conn, errno.errorcode.get(exc.errno or 0, str(exc)))
        got: dict[int, bytes] = {}
        end = time.monotonic() + timeout
        while waiting and (left := end - time.monotonic()) > 0:
            for key, _ in self._sel.select(timeout=min(left, 0.05)):
                conn = key.data
                data = self._read(conn)
                got[id(conn)] = got.get(id(conn), b"") + data
                if got[id(conn)].endswith(b"ping\n") or conn.ended is not None:
                    waiting.pop(id(conn), None)
        return [c for c in self.conns if c.ended is not None or id(c) in waiting]

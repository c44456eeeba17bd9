"""One MPTCP download in the lab: a server in one namespace, a client in another.

Plain Python sockets with IPPROTO_MPTCP, as any application opts in: the client asks
for N bytes, the server sends them and closes, the client counts what arrives (and
when) and records any socket error. Used by the integration tests; the benchmark uses
iperf3 under `mptcpize run` instead.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ecmpd.kernel.mptcpdiag import Subflow, dump_subflows
from ecmpd.kernel.transport import release
from ecmpd.lab import netns
from ecmpd.model import IPAddress

IPPROTO_MPTCP = 262  # socket.IPPROTO_MPTCP from Python 3.10 on Linux; spelt out for mypy
_REQUEST = struct.Struct("!Q")
CHUNK = 64 * 1024
_PAYLOAD = bytes(CHUNK)


def _family(address: IPAddress) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


class Server:
    """An MPTCP server in namespace `ns`: sends each client the byte count it asks for."""

    def __init__(self, ns: str, address: IPAddress) -> None:
        self.address = address
        self._sock = netns.socket_in(ns, _family(address), socket.SOCK_STREAM, IPPROTO_MPTCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((str(address), 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._accepter = threading.Thread(target=self._accept, name="mptcp-server", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            raw = b""
            while len(raw) < _REQUEST.size:
                more = conn.recv(_REQUEST.size - len(raw))
                if not more:
                    return
                raw += more
            left = _REQUEST.unpack(raw)[0]
            view = memoryview(_PAYLOAD)
            while left > 0 and not self._stop.is_set():
                left -= conn.send(view[: min(left, CHUNK)])

    def close(self) -> None:
        """Stop accepting and sending; close the listener."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._accepter.join(timeout=2)
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Download:
    """One MPTCP connection from namespace `ns` fetching `size` bytes from a Server."""

    ns: str
    server: IPAddress
    port: int
    size: int
    received: int = 0
    error: str | None = None
    # (monotonic time, bytes so far), one entry per read.
    progress: list[tuple[float, int]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    sock: socket.socket | None = None

    def start(self) -> Download:
        """Connect (in the namespace) and read in a thread; returns self."""
        self.sock = netns.socket_in(
            self.ns, _family(self.server), socket.SOCK_STREAM, IPPROTO_MPTCP
        )
        self.sock.settimeout(30)
        self.sock.connect((str(self.server), self.port))
        self.sock.sendall(_REQUEST.pack(self.size))
        threading.Thread(target=self._read, name="mptcp-download", daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.sock is not None
        buf = bytearray(CHUNK)
        try:
            while True:
                n = self.sock.recv_into(buf)
                if n == 0:
                    break
                self.received += n
                self.progress.append((time.monotonic(), self.received))
            if self.received != self.size:
                self.error = f"closed after {self.received} of {self.size} bytes"
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.sock.close()
            self.done.set()

    def wait(self, timeout: float) -> bool:
        """Whether the download ended (complete or failed) within `timeout` seconds."""
        return self.done.wait(timeout)

    def is_mptcp(self) -> bool:
        """Whether the connection runs MPTCP (not a fallback to plain TCP)."""
        assert self.sock is not None
        # SOL_MPTCP (284) MPTCP_INFO (1) answers only on an MPTCP connection; a
        # fallback to TCP fails it (EOPNOTSUPP).
        try:
            self.sock.getsockopt(284, 1, 8)
        except OSError:
            return False
        return True

    def rate_mbit(self, start: float, end: float) -> float:
        """Goodput between two monotonic times, from the progress record."""
        inside = [(t, n) for t, n in self.progress if start <= t <= end]
        before = [n for t, n in self.progress if t < start]
        first = before[-1] if before else 0
        last = inside[-1][1] if inside else first
        return (last - first) * 8 / 1e6 / max(end - start, 1e-9)


class SubflowWatch:
    """The MPTCP subflows of the one connection in namespace `ns`, by uplink (sock_diag).

    `sources` names the uplink of each local address; the first connection seen with a
    subflow from one of them is the one watched.
    """

    def __init__(self, ns: str, sources: Mapping[IPAddress, str]) -> None:
        self.ipr = netns.iproute(ns)
        self.sources = dict(sources)
        self.token = 0

    def close(self) -> None:
        """Close the netlink sockets."""
        release(self.ipr)
        self.ipr.close()

    def now(self) -> dict[str, Subflow]:
        """The connection's established subflows, by uplink name."""
        subs = [s for s in dump_subflows(self.ipr) if s.established and s.local in self.sources]
        if not self.token and subs:
            self.token = subs[0].token
        return {self.sources[s.local]: s for s in subs if s.token == self.token}

    def uplinks_carrying(self, more_than: int = 1_000_000) -> set[str]:
        """Uplinks where any MPTCP connection's subflow received more than `more_than` bytes."""
        subs = dump_subflows(self.ipr)
        return {self.sources[s.local] for s in subs if s.local in self.sources
                and s.bytes_received > more_than}  # fmt: skip

    def carrying(self, uplink: str, more_than: int = 1_000_000) -> bool:
        """Whether the uplink has a subflow that received more than `more_than` bytes."""
        sub = self.now().get(uplink)
        return sub is not None and sub.bytes_received > more_than

    def __enter__(self) -> SubflowWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A few light IPv6 TCP flows from the LAN, and the uplink each really took.

They run beside the demo's bulk IPv4 traffic: each flow sends a little every tick (a
fraction of a Mbit/s), enough to show on every uplink it uses, too little to move the
IPv4 figures. IPv6 is not NATed: the LAN's own prefix goes out by whichever uplink the
router's hash picks, and the internet routes the replies back through ISP a.

Measured, never taken from the plan:
  per flow: the ISPs that forwarded its packets (an nftables set of source ports in each
    ISP's forward hook), and the bytes its sink received;
  per uplink: the IPv6 bytes the router sent on it, the kernel's per-interface
    Ip6OutOctets (/proc/net/dev_snmp6), which counts forwarded packets too.
Not the router's route lookup (RTM_GETROUTE with the LAN port as iif), which the IPv4
traffic uses: for IPv6 under a custom hash policy (ecmpd's in router mode) it hashes the
flow differently from the forwarding path (Linux 6.18 wraps the packet's hash in
jhash_2words(hash, inner, 0), the lookup's not), so it names another uplink for about
half the flows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any

from ecmpd.lab import netns
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import LAN_HOST6, Lab
from ecmpd.lab.running import Running
from ecmpd.lab.sinks import recv_some

SINK_PORT = 5206
FLOWS = 16
CHUNK = 4096
TICK_S = 0.1  # CHUNK per tick: 0.33 Mbit/s a flow
JOIN_TIMEOUT_S = 5.0
# In each ISP: the source port of every IPv6 packet to the sinks it forwards.
SEEN_TABLE = "ecmpd-demo6"
SEEN_NFT = f"""
table inet {SEEN_TABLE} {{
    set flows {{ type inet_service; flags dynamic; }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        meta nfproto ipv6 tcp dport {SINK_PORT} add @flows {{ tcp sport }}
    }}
}}
"""


@dataclass
class Flow6:
    """One IPv6 connection from the LAN host to a server."""

    server: IPv6Address
    sport: int
    sent: int = 0
    received: int = 0
    uplinks: tuple[str, ...] = ()  # the ISPs that forwarded it, when measured
    error: str | None = None


class Traffic6(Running):
    """Light IPv6 flows from the LAN host to the internet's servers; a context manager.

    Threads and sockets start on entry and are all stopped and closed on exit; `finish()`
    stops the flows and returns what was measured.
    """

    def __init__(self, lab: Lab, flows: int = FLOWS) -> None:
        if lab.lan is None or not lab.ipv6:
            raise ValueError("IPv6 traffic needs a dual-stack lab with a LAN")
        self.lab, self.lan = lab, lab.lan
        self.n = flows
        self.flows: list[Flow6] = []
        self._by_port: dict[int, Flow6] = {}
        self._clients: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self._started = 0.0
        self._before: dict[str, int] = {}
        self._result: dict[str, Any] | None = None

    def start(self) -> None:
        """Opens the sockets and starts the flows (the with block does it)."""
        for isp in self.lab.isps:  # before the first packet
            load_nft(isp.ns, SEEN_NFT)
        listener = netns.socket_in(self.lab.internet, socket.AF_INET6, socket.SOCK_STREAM)
        self._clients.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::", SINK_PORT))
        listener.listen(self.n)
        listener.setblocking(False)
        servers = self.lab.servers6
        for k in range(self.n):
            sock = netns.socket_in(self.lan, socket.AF_INET6, socket.SOCK_STREAM)
            self._clients.append(sock)
            sock.setblocking(False)
            sock.bind((str(LAN_HOST6.ip), 0))
            flow = Flow6(server=servers[k % len(servers)], sport=sock.getsockname()[1])
            code = sock.connect_ex((str(flow.server), SINK_PORT))
            if code not in (0, errno.EINPROGRESS):
                flow.error = errno.errorcode.get(code, str(code))
            self.flows.append(flow)
            self._by_port[flow.sport] = flow
        self._before = self._out_octets()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._guarded, name="traffic6", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raises RuntimeError if the flows' thread died."""
        if self._errors:
            raise RuntimeError(f"IPv6 traffic failed: {self._errors[0]!r}") from self._errors[0]

    def finish(self) -> dict[str, Any]:
        """Stops and closes the flows; returns their figures (the same ones if called again)."""
        if self._result is not None:
            return self._result
        seconds = time.monotonic() - self._started
        after = self._out_octets()
        self.stop()
        self._seen()
        self.check()
        isps = self.lab.isps
        weights = sum(isp.weight for isp in isps)
        out = {n: max(0, after[n] - self._before.get(n, 0)) for n in after}
        total = sum(out.values())
        self._result = {
            "flows": len(self.flows),
            "client": str(LAN_HOST6.ip),
            "seconds": round(seconds, 2),
            "delivered": sum(1 for f in self.flows if f.received > 0),
            "delivered_mbit": round(sum(f.received for f in self.flows) * 8 / 1e6 / seconds, 2),
            "errors": sorted({f.error for f in self.flows if f.error is not None}),
            # Each flow by the ISP that forwarded it (one, unless it moved).
            "by_isp": {
                isp.name: sum(1 for f in self.flows if f.uplinks == (isp.name,)) for isp in isps
            },
            "moved": sum(1 for f in self.flows if len(f.uplinks) > 1),
            "out_mbit": {n: round(v * 8 / 1e6 / seconds, 2) for n, v in out.items()},
            "out_share": {n: round(v / total, 4) if total else 0.0 for n, v in out.items()},
            "target_share": {isp.name: round(isp.weight / weights, 4) for isp in isps},
        }
        return self._result

    # --- measuring -------------------------------------------------------------------

    def _out_octets(self) -> dict[str, int]:
        """Each uplink's Ip6OutOctets, read in the router's namespace."""
        names = {isp.uplink_if: isp.name for isp in self.lab.isps}

        def read() -> dict[str, int]:
            found = {}
            for ifname, name in names.items():
                with open(f"/proc/thread-self/net/dev_snmp6/{ifname}", encoding="ascii") as f:
                    fields = dict(line.split() for line in f if line.strip())
                found[name] = int(fields["Ip6OutOctets"])
            return found

        return netns.call_in(self.lab.router, read)

    def _seen(self) -> None:
        """Reads (and removes) each ISP's set of the flows it forwarded."""
        by_port = {f.sport: f for f in self.flows}
        for isp in self.lab.isps:
            listed = _nft(isp.ns, ["-j", "list", "set", "inet", SEEN_TABLE, "flows"])
            _nft(isp.ns, ["delete", "table", "inet", SEEN_TABLE])
            for item in json.loads(listed)["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    port = elem["elem"]["val"] if isinstance(elem, dict) else elem
                    flow = by_port.get(int(port))
                    if flow is not None:
                        flow.uplinks = (*flow.uplinks, isp.name)

    # --- the flows -------------------------------------------------------------------

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by check(), in the caller's thread
            self._errors.append(exc)

    def _run(self) -> None:
        """Sends CHUNK per flow every tick; the sink drains and books what arrives."""
        listener, clients = self._clients[0], self._clients[1:]
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        buf = bytearray(64 * 1024)
        payload = bytes(CHUNK)
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(max(0.0, next_tick - time.monotonic())):
                    if key.fileobj is listener:
                        self._accept(listener, sel)
                    else:
                        self._drain(key, sel, buf)
                if time.monotonic() >= next_tick:
                    next_tick += TICK_S
                    for sock, flow in zip(clients, self.flows, strict=True):
                        self._send(sock, flow, payload)
        finally:
            sel.close()

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock, peer = listener.accept()
                self._clients.append(sock)  # closed with the others
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, self._by_port.get(peer[1]))

    def _drain(
        self, key: selectors.SelectorKey, sel: selectors.BaseSelector, buf: bytearray
    ) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        n = recv_some(sock, buf)
        if n is None:
            return
        if n == 0:
            sel.unregister(sock)
            return
        if isinstance(key.data, Flow6):
            key.data.received += n

    def _send(self, sock: socket.socket, flow: Flow6, payload: bytes) -> None:
        if flow.error is not None:
            return
        try:
            flow.sent += sock.send(payload)
        except BlockingIOError:
            pass  # still connecting, or the path is full: next tick
        except OSError as exc:
            flow.error = errno.errorcode.get(exc.errno or 0, str(exc))

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            self._thread = None

    def stop(self) -> None:
        self._halt()
        for sock in self._clients:
            with contextlib.suppress(OSError):
                sock.close()
        self._clients.clear()


def _nft(ns: str, args: list[str]) -> str:
    """Runs an nft command in a lab namespace; returns its output."""
    done = netns.run_in(ns, ["nft", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} failed in {ns}: {done.stderr.strip()}")
    return str(done.stdout)

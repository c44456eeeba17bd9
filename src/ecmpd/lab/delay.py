"""A fixed extra round-trip time on a lab ISP, in user space (this kernel has no netem).

Packets the ISP forwards from its customer (the router) to the internet are routed
into a TUN device (`ip rule iif cust0 lookup DELAY_TABLE`, default dev dly0), held for
the delay by a thread of this process, and written back into the TUN, from where the
ISP routes them on as usual. Only that direction is delayed, by the whole extra RTT:
for a download it carries the ACKs, a few thousand small packets a second. Packets to
the ISP itself (gateway probes) are delivered locally before the rule and not delayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import threading
import time
from collections import deque

from ecmpd.lab import netns

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
DELAY_IF = "dly0"
# Any address: a device without one fails the source validation of what it receives.
DELAY_ADDRESS = "10.255.255.1/32"
DELAY_TABLE = "90"
MTU = 65535


class DelayLine:
    """Delays what ISP namespace `ns` forwards out of `from_if` by `delay_s` seconds."""

    def __init__(self, ns: str, from_if: str, delay_s: float) -> None:
        self.ns, self.from_if, self.delay = ns, from_if, delay_s
        self.fd = netns.call_in(ns, self._open)
        self.forwarded = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        try:
            for argv in (
                ["ip", "addr", "add", DELAY_ADDRESS, "dev", DELAY_IF],
                ["ip", "link", "set", DELAY_IF, "up"],
                ["ip", "route", "add", "default", "dev", DELAY_IF, "table", DELAY_TABLE],
                ["ip", "rule", "add", "iif", from_if, "lookup", DELAY_TABLE, "pref", "90"],
            ):
                netns.run_in(ns, argv, check=True, capture_output=True)
        except BaseException:
            self._close_fds()
            raise
        self._thread = threading.Thread(target=self._run, name=f"delay:{ns}", daemon=True)
        self._thread.start()

    @staticmethod
    def _open() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", DELAY_IF.encode(), IFF_TUN | IFF_NO_PI))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _run(self) -> None:
        held: deque[tuple[float, bytes]] = deque()
        while not self._stop.is_set():
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
            ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
            now = time.monotonic()
            if self.fd in ready:
                # Everything queued now, in arrival order: one deadline per packet.
                with contextlib.suppress(BlockingIOError):
                    while True:
                        held.append((now + self.delay, os.read(self.fd, MTU)))
            while held and held[0][0] <= time.monotonic():
                with contextlib.suppress(OSError):  # the kernel may refuse one: a loss
                    os.write(self.fd, held.popleft()[1])
                self.forwarded += 1

    def close(self) -> None:
        """Stop delaying; the TUN (and its route and rule) goes with the descriptor."""
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        netns.run_in(self.ns, ["ip", "rule", "del", "pref", "90"], capture_output=True)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DelayLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

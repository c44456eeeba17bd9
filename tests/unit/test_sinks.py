"""lab.sinks: the ledger's stalls, resumes and NAT uplinks, and a sink draining real
loopback connections into it (no namespace: the sink code is the lab's, the address not)."""

from __future__ import annotations

import math
import socket
import threading
import time

from ecmpd.lab.sinks import HEADER, STALL_S, Ledger, drain
from tests.unit.fixtures import traffic_conn

UPLINKS = ("isp-a", "isp-b")


def test_ledger_keeps_every_connection_and_the_open_ones() -> None:
    ledger = Ledger(4, UPLINKS)
    first, second = traffic_conn(0, 1), traffic_conn(1, 2)
    ledger.opened(first)
    ledger.opened(second)
    second.error = "ECONNRESET"
    ledger.closed(second)
    ledger.closed(second)  # twice: no harm
    assert ledger.live() == [first]
    assert ledger.all_conns() == [first, second]
    assert ledger.errors() == [second]


def test_nat_seen_marks_the_connection_also_once_closed() -> None:
    ledger = Ledger(2, UPLINKS)
    old, new = traffic_conn(0, 1), traffic_conn(0, 2)
    for c in (old, new):
        ledger.opened(c)
    ledger.closed(old)
    ledger.nat_seen(0, 1, "isp-b")
    ledger.nat_seen(0, 2, "isp-a")
    ledger.nat_seen(1, 9, "isp-a")  # unknown: ignored
    assert (old.nat_uplink, new.nat_uplink) == ("isp-b", "isp-a")


def test_received_books_bytes_per_uplink_and_silences_as_stalls() -> None:
    ledger = Ledger(3, UPLINKS)
    ledger.received(0, "isp-a", 100, 10.0)
    ledger.received(0, "isp-a", 50, 10.0 + STALL_S / 2)  # no stall
    ledger.received(0, None, 70, 11.0)  # stalled from 10.125 to 11.0; uplink unknown
    ledger.received(1, "isp-b", 10, 10.0)
    ledger.received(1, "isp-b", 10, 12.0)  # stalled from 10.0 to 12.0
    ledger.received(2, "isp-b", 5, 10.0)  # silent since: still stalled
    assert ledger.delivered() == {"isp-a": 150, "isp-b": 25}
    resumed = ledger.resumed({0, 1, 2}, 10.5, 10.6)
    assert resumed == {0: 11.0, 1: 12.0, 2: math.inf}
    # A stall that ended before the window does not count; one overlapping it does.
    assert ledger.resumed({0}, 11.5, 11.6) == {0: math.inf}  # last delivery before end
    assert ledger.resumed({1}, 9.0, 9.5) == {1: None}


def test_drain_reads_each_streams_header_and_books_its_bytes() -> None:
    ledger = Ledger(4, UPLINKS)
    booked = traffic_conn(2, 7)
    ledger.opened(booked)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    stop = threading.Event()
    sink = threading.Thread(
        target=drain, args=(listener, ledger, {"127.0.0.1": "isp-b"}, stop), daemon=True
    )
    sink.start()
    address = listener.getsockname()
    try:
        with (
            socket.create_connection(address) as good,
            socket.create_connection(address) as stray,
        ):
            good.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = HEADER.pack(2, 7)
            good.sendall(head[:3])  # the header may come in pieces
            time.sleep(0.05)
            good.sendall(head[3:] + bytes(1000))
            stray.sendall(HEADER.pack(9, 1) + bytes(500))  # slot 9 of 4: not a flow
        deadline = time.monotonic() + 10.0
        while ledger.delivered()["isp-b"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        sink.join(5.0)
    assert not sink.is_alive()
    # Every byte after the header is booked to the NAT address's uplink (a read that ends
    # inside the header books nothing: the slot is not known yet), the stray's none.
    delivered = ledger.delivered()
    assert delivered["isp-a"] == 0 and 1000 <= delivered["isp-b"] <= HEADER.size + 1000
    assert booked.nat_uplink == "isp-b"
    assert ledger.resumed({2}, 0.0, 0.0) == {2: None}  # it delivered, never stalled
    assert listener.fileno() == -1  # closed by the sink on its way out

"""KernelMonitor against the real kernel, in a lab: events, latency, silent flushes, overflow."""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface
from typing import Any, TypeVar

import pytest

from ecmpd.kernel.monitor import (
    RTM_DELADDR,
    AddressEvent,
    KernelEvent,
    KernelMonitor,
    LinkEvent,
    NexthopEvent,
    Resync,
    RouteEvent,
)
from ecmpd.kernel.nexthop import KernelNexthop, get_nexthop
from ecmpd.lab import netns
from ecmpd.lab.layout import UPLINK_IFINDEX, Lab
from ecmpd.lab.topology import isp_link_down, isp_link_up

T = TypeVar("T")
EVENT_TIMEOUT = 2.0  # generous: a loaded CI host, and carrier events pass linkwatch
CARRIER_BOUND = 1.0  # s; linkwatch's own worst case for non-urgent events
QUIET = 0.5  # s of silence that counts as "the kernel sent nothing"
RTPROT_DHCP = 16
WAN_A, WAN_B, WAN_C = UPLINK_IFINDEX, UPLINK_IFINDEX + 1, UPLINK_IFINDEX + 2
Match = Callable[[KernelEvent], bool]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a test coroutine to completion (no pytest-asyncio here)."""
    return asyncio.run(coro)


def monitor(lab: Lab, **kwargs: Any) -> KernelMonitor:
    """A monitor on a netlink socket that lives in the lab's router namespace."""
    sock = netns.socket_in(lab.router, socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    return KernelMonitor(sock, **kwargs)


async def ip(lab: Lab, *argv: str) -> None:
    """Runs `ip ...` in the router namespace off the loop (the monitor keeps reading)."""
    await asyncio.to_thread(netns.run_in, lab.router, ["ip", *argv], check=True)


async def ip_error(lab: Lab, *argv: str) -> str:
    """Runs `ip ...` in the router namespace that must fail; returns its error output."""
    done = await asyncio.to_thread(
        netns.run_in, lab.router, ["ip", *argv], capture_output=True, text=True
    )
    assert done.returncode != 0, done
    return str(done.stderr)


async def expect(events: AsyncIterator[KernelEvent], match: Match) -> KernelEvent:
    """The first event that matches, skipping others; fails after EVENT_TIMEOUT."""
    async with asyncio.timeout(EVENT_TIMEOUT):
        async for event in events:
            if match(event):
                return event
    raise AssertionError("event stream ended")


async def collect(events: AsyncIterator[KernelEvent], seconds: float) -> list[KernelEvent]:
    """Every event for a while."""
    seen: list[KernelEvent] = []
    try:
        async with asyncio.timeout(seconds):
            async for event in events:
                seen.append(event)
    except TimeoutError:
        pass
    return seen


async def nexthop(lab: Lab, nhid: int) -> KernelNexthop | None:
    """The router's nexthop object by id, None if the kernel has none."""

    def read() -> KernelNexthop | None:
        with netns.iproute(lab.router) as ipr:
            return get_nexthop(ipr, nhid)

    # pyroute2's synchronous IPRoute runs an event loop of its own: not in this thread.
    return await asyncio.to_thread(read)


def carrier_of(index: int, carrier: bool) -> Match:
    """Matches a LinkEvent reporting the carrier state of a device."""
    return lambda e: isinstance(e, LinkEvent) and e.index == index and e.carrier is carrier


def nexthop_event(nhid: int, *, deleted: bool) -> Match:
    """Matches a NexthopEvent for one id."""
    return lambda e: isinstance(e, NexthopEvent) and e.id == nhid and e.deleted is deleted


def address_event(address: IPv4Interface | IPv6Interface, *, deleted: bool) -> Match:
    """Matches an AddressEvent for one address."""
    return lambda e: isinstance(e, AddressEvent) and e.address == address and e.deleted is deleted


async def timed(
    events: AsyncIterator[KernelEvent], action: Callable[[], None], match: Match
) -> tuple[float, KernelEvent]:
    """Seconds from starting `action` (in a worker thread) to the matching event, and it."""
    started: list[float] = []

    def act() -> None:
        started.append(time.perf_counter())
        action()

    task = asyncio.create_task(asyncio.to_thread(act))
    event = await expect(events, match)
    arrived = time.perf_counter()
    await task
    return arrived - started[0], event


def test_carrier_loss_and_return_arrive_fast(lab: Lab) -> None:
    """isp_link_down/up reach the monitor as LinkEvents on wan-b, well within linkwatch's 1 s."""

    async def scenario() -> tuple[list[float], list[float]]:
        downs, ups = [], []
        async with monitor(lab) as mon:
            events = mon.events()
            for _ in range(5):
                took, event = await timed(
                    events, lambda: isp_link_down(lab, "isp-b"), carrier_of(WAN_B, False)
                )
                assert isinstance(event, LinkEvent)
                assert (event.ifname, event.up, event.deleted) == ("wan-b", True, False)
                assert not event.usable
                downs.append(took)
                took, event = await timed(
                    events, lambda: isp_link_up(lab, "isp-b"), carrier_of(WAN_B, True)
                )
                assert isinstance(event, LinkEvent) and event.usable
                ups.append(took)
        return downs, ups

    downs, ups = run(scenario())
    print(  # measured numbers for the record (pytest -s)
        f"\nmonitor latency carrier-down ms: {[round(t * 1000, 1) for t in downs]}"
        f" median {statistics.median(downs) * 1000:.1f};"
        f" carrier-up ms: {[round(t * 1000, 1) for t in ups]}"
    )
    assert max(downs) < CARRIER_BOUND
    assert max(ups) < CARRIER_BOUND


def test_dhcp_default_route_added_and_deleted(lab: Lab) -> None:
    """A DHCP client's default route in main shows as RouteEvent with protocol dhcp, both ways."""

    async def scenario() -> tuple[KernelEvent, KernelEvent]:
        def default(deleted: bool) -> Match:
            return lambda e: (
                isinstance(e, RouteEvent)
                and e.table == 254
                and e.dst == IPv4Network("0.0.0.0/0")
                and e.deleted is deleted
            )

        async with monitor(lab) as mon:
            events = mon.events()
            # A routing daemon's prefix is no event (a full table would be a million):
            # the first route event is the default added after it.
            await ip(lab, "route", "add", "192.0.2.0/24", "via", "10.1.0.1", "proto", "bgp")
            argv = ("default", "via", "10.1.0.1", "dev", "wan-a", "proto", "dhcp", "metric", "7")
            await ip(lab, "route", "add", *argv)
            added = await expect(events, lambda e: isinstance(e, RouteEvent))
            assert default(False)(added), added
            await ip(lab, "route", "del", *argv)
            return added, await expect(events, default(True))

    added, deleted = run(scenario())
    for event, gone in ((added, False), (deleted, True)):
        assert event == RouteEvent(
            family=socket.AF_INET,
            table=254,
            dst=IPv4Network("0.0.0.0/0"),
            gateway=IPv4Address("10.1.0.1"),
            ifindex=WAN_A,
            protocol=RTPROT_DHCP,
            deleted=gone,
            metric=7,
            nhid=None,
        )


def test_nexthop_events_and_silent_flush_on_carrier_loss(lab: Lab) -> None:
    """Nexthop add/delete are announced; the flush on carrier loss is not (it precedes the link)."""

    async def scenario() -> list[KernelEvent]:
        async with monitor(lab) as mon:
            events = mon.events()
            await ip(lab, "nexthop", "add", "id", "5", "via", "10.2.0.1", "dev", "wan-b")
            assert await expect(events, nexthop_event(5, deleted=False)) == NexthopEvent(
                id=5, protocol=0, deleted=False
            )
            await ip(lab, "nexthop", "add", "id", "6", "via", "10.1.0.1", "dev", "wan-a")
            await ip(lab, "nexthop", "add", "id", "7", "group", "5/6")
            await ip(lab, "route", "add", "198.51.100.0/24", "nhid", "5", "table", "100")
            await expect(events, nexthop_event(7, deleted=False))

            await asyncio.to_thread(isp_link_down, lab, "isp-b")
            await expect(events, carrier_of(WAN_B, False))
            # The flush runs in the NETDEV_CHANGE notifier, before the RTM_NEWLINK is sent.
            assert await nexthop(lab, 5) is None
            group = await nexthop(lab, 7)
            assert group is not None and group.members == ((6, 1),)
            silence = await collect(events, QUIET)
            refused = await ip_error(
                lab, "nexthop", "add", "id", "5", "via", "10.2.0.1", "dev", "wan-b"
            )
            assert "Carrier for nexthop device is down" in refused

            await asyncio.to_thread(isp_link_up, lab, "isp-b")
            await expect(events, carrier_of(WAN_B, True))
            assert await nexthop(lab, 5) is None  # carrier back, nexthop not: ecmpd re-creates
            await ip(lab, "nexthop", "add", "id", "5", "via", "10.2.0.1", "dev", "wan-b")
            await expect(events, nexthop_event(5, deleted=False))
            await ip(lab, "nexthop", "del", "id", "5")
            await expect(events, nexthop_event(5, deleted=True))
            return silence

    silence = run(scenario())
    assert not [e for e in silence if isinstance(e, NexthopEvent | RouteEvent)], silence


def test_address_added_and_deleted(lab: Lab) -> None:
    """IPv4 and IPv6 addresses show as AddressEvents, both ways."""
    addresses = (IPv4Interface("10.9.9.9/24"), IPv6Interface("2001:db8:9::1/64"))

    async def scenario() -> list[KernelEvent]:
        seen = []
        async with monitor(lab) as mon:
            events = mon.events()
            for address in addresses:
                # nodad: a tentative IPv6 address would be announced again after DAD.
                nodad = ("nodad",) if address.version == 6 else ()
                await ip(lab, "address", "add", str(address), "dev", "wan-c", *nodad)
                seen.append(await expect(events, address_event(address, deleted=False)))
                await ip(lab, "address", "del", str(address), "dev", "wan-c")
                seen.append(await expect(events, address_event(address, deleted=True)))
        return seen

    assert run(scenario()) == [
        AddressEvent(index=WAN_C, address=address, deleted=deleted)
        for address in addresses
        for deleted in (False, True)
    ]


def test_overflow_yields_resync_and_the_stream_goes_on(lab: Lab) -> None:
    """A burst into a tiny receive buffer costs events: the monitor says Resync, then carries on."""
    burst = "".join(
        f"address add 10.77.{i // 250}.{i % 250 + 1}/32 dev wan-c\n" for i in range(300)
    )

    async def scenario() -> tuple[list[KernelEvent], KernelEvent]:
        async with monitor(lab, rcvbuf=1) as mon:  # the kernel raises it to its minimum
            events = mon.events()
            # Not reading meanwhile: the loop is blocked on purpose.
            netns.run_in(lab.router, ["ip", "-batch", "-"], input=burst, text=True, check=True)
            drained = await collect(events, QUIET)
            await ip(lab, "address", "add", "10.78.0.1/32", "dev", "wan-c")
            after = await expect(events, lambda e: isinstance(e, AddressEvent))
            return drained, after

    drained, after = run(scenario())
    assert isinstance(drained[0], Resync)  # the kernel reports the overrun before queued data
    assert len([e for e in drained if isinstance(e, AddressEvent)]) < 300
    assert after == AddressEvent(WAN_C, IPv4Interface("10.78.0.1/32"), deleted=False)


def test_cancelled_wait_loses_nothing_and_close_ends_the_stream(lab: Lab) -> None:
    """A timed-out wait keeps the stream usable; closing wakes a waiting consumer with the end."""

    async def scenario() -> list[KernelEvent]:
        async with monitor(lab) as mon:
            events = mon.events()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(events), 0.05)
            await ip(lab, "nexthop", "add", "id", "9", "via", "10.3.0.1", "dev", "wan-c")
            await expect(events, nexthop_event(9, deleted=False))
            consumer = asyncio.create_task(collect(events, EVENT_TIMEOUT * 2))
            await asyncio.sleep(0.05)
            mon.close()
            async with asyncio.timeout(EVENT_TIMEOUT):
                return await consumer

    assert run(scenario()) == []


def test_messages_not_from_the_kernel_are_ignored(lab: Lab) -> None:
    """A privileged process multicasting to rtnetlink groups cannot fake events."""
    ifaddr = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, WAN_C)
    attr = struct.pack("=HH4s", 8, 2, IPv4Address("10.66.0.1").packed)  # IFA_ADDRESS
    body = ifaddr + attr
    # A delete of an address that does not exist: the kernel's copy only fails (EADDRNOTAVAIL).
    fake = struct.pack("=IHHII", 16 + len(body), RTM_DELADDR, 1, 1, 0) + body

    async def scenario() -> list[KernelEvent]:
        async with monitor(lab) as mon:
            events = mon.events()
            sender = netns.socket_in(lab.router, socket.AF_NETLINK, socket.SOCK_DGRAM)
            with sender:
                sender.sendto(fake, (0, 0x10))  # RTMGRP_IPV4_IFADDR
            await ip(lab, "nexthop", "add", "id", "11", "via", "10.3.0.1", "dev", "wan-c")
            seen = []
            async with asyncio.timeout(EVENT_TIMEOUT):
                async for event in events:
                    seen.append(event)
                    if nexthop_event(11, deleted=False)(event):
                        return seen
            raise AssertionError("event stream ended")

    assert not [e for e in run(scenario()) if isinstance(e, AddressEvent)]

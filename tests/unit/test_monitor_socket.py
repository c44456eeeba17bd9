"""The kernel monitor owns its socket: refused before subscribing, closed when it cannot."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ecmpd.kernel.monitor import (
    KernelMonitor,
)


def test_events_before_subscribing_is_an_error() -> None:
    """events() outside `async with` would silently never see anything: refused instead."""
    mon = KernelMonitor(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        with pytest.raises(RuntimeError):
            mon.events()
    finally:
        mon.close()


def test_a_socket_that_cannot_subscribe_is_closed() -> None:
    """The monitor owns its socket: a failed `async with` entry does not leak it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # not netlink: bind must fail

    async def enter() -> None:
        async with KernelMonitor(sock):
            pass

    with pytest.raises((OSError, TypeError)):
        asyncio.run(enter())
    assert sock.fileno() == -1

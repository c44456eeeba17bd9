"""ending.follow_reconnects with a fake kernel thread and clock: who is followed, what is
kicked, how long, and what a failing look does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from ecmpd.ending import follow_reconnects
from ecmpd.kernel.ctmessages import Flow
from ecmpd.kernel.resets import Begun, Ending, kick, unanswered
from ecmpd.model import Family
from ecmpd.reconnects import FOLLOW_S, KICK_AFTER_S, POLL_S
from tests.unit.fixtures import LAN, ct_flow

MASK, DEAD, HEALTHY, PROBE = 0xFF000000, 0x01000000, 0x02000000, 0xFF000000
ROUTER = IPv4Address("10.1.0.2")  # the dead uplink's own address: the router's sockets


class FakeKernel:
    """The kernel thread: `unanswered` returns what `opening(t)` says at the clock's time,
    `kick` records its flows; a look can be made to fail."""

    def __init__(self, opening: Callable[[float], list[Flow]], fail_at: float | None = None):
        self.t = 0.0
        self.opening, self.fail_at = opening, fail_at
        self.kicked: list[tuple[float, Flow]] = []
        self.looks = 0

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn is unanswered:
            self.looks += 1
            if self.fail_at is not None and self.t >= self.fail_at:
                raise OSError(105, "No buffer space available")
            assert list(args[0]) == [Family.INET]
            return self.opening(self.t)
        assert fn is kick and args[1] == PROBE
        self.kicked += [(self.t, f) for f in args[0]]
        return len(args[0])

    async def sleep(self, seconds: float) -> None:
        self.t = round(self.t + seconds, 6)


def begun(*lan_hosts: IPv4Address) -> list[tuple[Ending, Begun]]:
    """One ending of the dead uplink that probed a connection of each LAN host."""
    ending = Ending(DEAD, MASK, PROBE, (Family.INET,), sources=(ROUTER,))
    flows = tuple(ct_flow(orig_src=h, ct_id=k, mark=DEAD) for k, h in enumerate(lan_hosts))
    return [(ending, Begun(flows, probed=len(flows), sockets=0))]


def follow(kernel: FakeKernel, ended: list[tuple[Ending, Begun]]) -> int:
    return asyncio.run(
        follow_reconnects(kernel.call, ended, 0.0, clock=lambda: kernel.t, sleep=kernel.sleep)
    )


def test_a_reset_clients_unanswered_reconnect_is_kicked_once_then_the_follow_up_ends() -> None:
    reconnect = ct_flow(status=0, ct_id=100, mark=HEALTHY)  # LAN's new SYN, no answer
    kernel = FakeKernel(lambda t: [reconnect] if t >= 0.03 else [])
    assert follow(kernel, begun(LAN)) == 1
    assert [f for _, f in kernel.kicked] == [reconnect]
    ((when, _),) = kernel.kicked
    assert KICK_AFTER_S <= when <= KICK_AFTER_S + POLL_S
    assert kernel.looks == round(FOLLOW_S / POLL_S)  # a look every POLL_S for FOLLOW_S


def test_the_routers_own_sockets_and_unreset_hosts_are_not_followed() -> None:
    other = IPv4Address("10.200.1.9")
    syns = [
        ct_flow(orig_src=ROUTER, status=0, ct_id=7, mark=HEALTHY),
        ct_flow(orig_src=other, status=0, ct_id=8, mark=HEALTHY),
    ]
    kernel = FakeKernel(lambda t: syns)
    assert follow(kernel, begun(ROUTER)) == 0  # only the router's own socket was reset
    assert kernel.looks == 0  # nobody to follow: not a single look
    assert follow(FakeKernel(lambda t: syns), begun(LAN)) == 0  # LAN reset, others not


def test_a_failing_look_ends_the_follow_up_with_what_was_kicked() -> None:
    reconnect = ct_flow(status=0, ct_id=100, mark=HEALTHY)
    kernel = FakeKernel(lambda t: [reconnect], fail_at=0.5)
    assert follow(kernel, begun(LAN)) == 1
    assert kernel.t < FOLLOW_S

"""The uplink supervisor with a fake prober: start, carrier, holds, retarget, rebind, reload.

Real asyncio with short check intervals (20 ms); each wait below is bounded by many
rounds (seconds), never by a single round's timing.
"""

from __future__ import annotations

import asyncio
import errno
import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from ecmpd.config import Config, parse_config
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.degraded import Grade, GradeChange
from ecmpd.health.fsm import HealthState
from ecmpd.health.probebase import ProbeCounters
from ecmpd.health.probes import Prober
from ecmpd.health.supervisor import HealthChange, Supervisor
from ecmpd.model import (
    DesiredState,
    Family,
    GroupType,
    IPAddress,
    Nexthop,
    NexthopGroup,
    nexthop_id,
)

CHECK = "{interval: 0.02, timeout: 0.02, down_after: 2, up_after: 2}"
CONFIG = textwrap.dedent(
    f"""
    uplinks:
      - {{name: isp-a, interface: wan-a, gateway: 10.1.0.1, check: {CHECK}}}
      - {{name: isp-b, interface: wan-b, gateway: dhcp, check: {CHECK}}}
      - {{name: vpn, interface: tun0, check: {CHECK}}}
    """
)
WAIT = 5.0  # seconds: hundreds of rounds


def config(text: str = CONFIG) -> Config:
    return parse_config(text, "ecmpd.yaml")


def iface(name: str, index: int, address: str, **more: Any) -> InterfaceFacts:
    return InterfaceFacts(name, index, addresses=(IPv4Interface(address),), **more)


FACTS = KernelFacts(
    interfaces={
        "wan-a": iface("wan-a", 2, "10.1.0.2/24"),
        "wan-b": iface("wan-b", 3, "10.2.0.2/24", dhcp_gateway=IPv4Address("10.2.0.1")),
        "tun0": iface("tun0", 4, "10.8.0.2/32", pointopoint=True),
    }
)


class FakeProber:
    """Answers a probe at once while its target is in `alive`, else loses it."""

    def __init__(self, alive: set[IPAddress], ifname: str, source: IPAddress | None) -> None:
        self.alive, self.ifname, self.source = alive, ifname, source
        self.closed = False
        self._counters = ProbeCounters()

    @property
    def counters(self) -> ProbeCounters:
        return self._counters

    async def probe(self, target: IPAddress, timeout: float) -> float | None:
        if target in self.alive and not self.closed:
            return 0.001
        await asyncio.sleep(timeout)
        return None

    async def aclose(self) -> None:
        self.closed = True


class Harness:
    """A supervisor with a fake prober factory, recording every change it reports."""

    def __init__(self) -> None:
        self.alive: set[IPAddress] = {IPv4Address("10.1.0.1"), IPv4Address("10.2.0.1")}
        self.opened: list[FakeProber] = []
        self.refuse: set[str] = set()  # interfaces whose prober cannot open
        self.changes: list[HealthChange] = []
        self.supervisor = Supervisor(self.open, self.changes.append)

    async def open(
        self, method: str, ifname: str, source: IPAddress | None, family: Family
    ) -> Prober:
        if ifname in self.refuse:
            raise OSError(errno.ENODEV, "No such device")
        prober = FakeProber(self.alive, ifname, source)
        self.opened.append(prober)
        return prober

    def live(self, ifname: str) -> list[FakeProber]:
        return [p for p in self.opened if p.ifname == ifname and not p.closed]

    def state(self, name: str, family: Family = Family.INET) -> HealthState:
        return self.supervisor.uplinks[name].families[family].tracker.state

    def hold(self, name: str) -> str | None:
        return self.supervisor.uplinks[name].families[Family.INET].hold


async def until(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.005)


def run(scenario: Callable[[Harness, asyncio.TaskGroup], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        h = Harness()
        async with asyncio.TaskGroup() as tg:
            try:
                await scenario(h, tg)
            finally:
                await h.supervisor.close()

    asyncio.run(main())


def test_start_probes_what_can_be_and_every_change_takes_one_path() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        h.supervisor.adopt(config().uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)
        # The point-to-point uplink without gateway or targets is carrier-only: no prober.
        assert sorted(p.ifname for p in h.opened) == ["wan-a", "wan-b"]
        assert h.opened[0].source == IPv4Address("10.1.0.2")
        await until(lambda: h.state("isp-a") is h.state("isp-b") is HealthState.UP, "up")
        assert h.state("vpn") is HealthState.UNKNOWN  # in service: nothing says otherwise
        h.alive.discard(IPv4Address("10.1.0.1"))
        await until(lambda: h.state("isp-a") is HealthState.DOWN, "isp-a down")
        moves = [(c.transition.uplink, c.transition.new) for c in h.changes]
        assert moves.count(("isp-a", HealthState.DOWN)) == 1
        left = next(c for c in h.changes if c.transition.new is HealthState.DOWN)
        assert left.service_moved and left.family is Family.INET
        assert h.supervisor.in_service(Family.INET) == {"isp-a": False, "isp-b": True, "vpn": True}
        # Each change was counted where the status reads it.
        report = {r.config.name: r.families[Family.INET] for r in h.supervisor.reports()}
        assert report["isp-a"].transitions == moves.count(("isp-a", HealthState.UP)) + 2

    run(scenario)


def test_carrier_goes_through_the_same_path_and_a_carrier_only_uplink_comes_back() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        h.supervisor.adopt(config().uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)
        assert h.supervisor.on_carrier("tun0", False)
        assert not h.supervisor.on_carrier("tun0", False)  # nothing new
        assert not h.supervisor.on_carrier("eth9", False)  # not an uplink's
        assert [(c.transition.uplink, c.transition.new.value, c.transition.reason)
                for c in h.changes] == [("vpn", "down", "carrier lost")]  # fmt: skip
        # Nothing probes it: its carrier brings it back, through the table.
        assert h.supervisor.on_carrier("tun0", True)
        assert [c.transition.new for c in h.changes[1:]] == [HealthState.RISING, HealthState.UP]
        assert h.state("vpn") is HealthState.UP
        assert h.supervisor.reports()[2].families[Family.INET].transitions == 3

    run(scenario)


def test_a_vanished_interface_holds_its_uplink_down_and_it_returns_with_a_new_index() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        h.supervisor.adopt(config().uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)
        await until(lambda: h.state("isp-a") is HealthState.UP, "isp-a up")
        # `ip link del wan-a`: the link event, then the re-read.
        h.supervisor.on_carrier("wan-a", False)
        gone = {k: v for k, v in FACTS.interfaces.items() if k != "wan-a"}
        h.refuse.add("wan-a")  # SO_BINDTODEVICE on a gone device: ENODEV
        await h.supervisor.follow(replace(FACTS, interfaces=gone))
        assert h.hold("isp-a") == "no interface" and h.live("wan-a") == []
        assert not h.supervisor.in_service(Family.INET)["isp-a"]
        assert h.supervisor.reports()[0].families[Family.INET].held == "no interface"
        # Another uplink never noticed.
        assert len(h.live("wan-b")) == 1 and h.state("isp-b") is HealthState.UP
        # The name comes back, a new index; the first open still fails (a race), the
        # next re-read opens it: never an exception.
        back = {**gone, "wan-a": iface("wan-a", 42, "10.1.0.2/24")}
        await h.supervisor.follow(replace(FACTS, interfaces=back))
        assert h.hold("isp-a") is None and h.live("wan-a") == []
        h.refuse.clear()
        await h.supervisor.follow(replace(FACTS, interfaces=back))
        assert len(h.live("wan-a")) == 1
        assert h.supervisor.uplinks["isp-a"].families[Family.INET].bound == (
            42, IPv4Address("10.1.0.2"),
        )  # fmt: skip
        h.supervisor.on_carrier("wan-a", True)
        await until(lambda: h.state("isp-a") is HealthState.UP, "isp-a back up")

    run(scenario)


def test_no_lease_holds_a_dhcp_uplink_and_a_new_router_retargets_it() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        no_lease = replace(FACTS.interfaces["wan-b"], dhcp_gateway=None)
        facts = replace(FACTS, interfaces={**FACTS.interfaces, "wan-b": no_lease})
        h.supervisor.adopt(config().uplinks, DesiredState(), facts, 200)
        await h.supervisor.start(tg)
        assert h.hold("isp-b") == "no DHCP lease yet" and h.live("wan-b") == []
        await h.supervisor.follow(FACTS)  # the lease
        assert h.hold("isp-b") is None and len(h.live("wan-b")) == 1
        await until(lambda: h.state("isp-b") is HealthState.UP, "isp-b up")
        before = h.supervisor.uplinks["isp-b"].families[Family.INET].transitions
        # A renewal names another router: the old verdict was about the old one.
        router = IPv4Address("10.2.0.254")
        h.alive.add(router)
        moved = replace(FACTS.interfaces["wan-b"], dhcp_gateway=router)
        await h.supervisor.follow(replace(FACTS, interfaces={**FACTS.interfaces, "wan-b": moved}))
        fam = h.supervisor.uplinks["isp-b"].families[Family.INET]
        assert fam.targets == [router] and fam.tracker.state is HealthState.UNKNOWN
        assert fam.transitions == before and len(h.live("wan-b")) == 1
        await until(lambda: h.state("isp-b") is HealthState.UP, "probed up again")

    run(scenario)


def test_adopting_a_kernel_keeps_its_verdicts_silently() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        # isp-b's nexthop exists but the group left it out: it was down.
        a, b = nexthop_id(101), nexthop_id(102)
        observed = DesiredState(
            nexthops=frozenset(
                Nexthop(n, Family.INET, dev, gateway=IPv4Address(gw))
                for n, dev, gw in ((a, "wan-a", "10.1.0.1"), (b, "wan-b", "10.2.0.1"))
            ),
            groups=frozenset({NexthopGroup(nexthop_id(200), GroupType.RESILIENT, ((a, 1),))}),
        )
        dead = replace(FACTS.interfaces["tun0"], carrier=False)
        facts = replace(FACTS, interfaces={**FACTS.interfaces, "tun0": dead})
        h.supervisor.adopt(config().uplinks, observed, facts, 200)
        states = {n: h.state(n) for n in ("isp-a", "isp-b", "vpn")}
        assert states == {
            "isp-a": HealthState.UNKNOWN,
            "isp-b": HealthState.DOWN,
            "vpn": HealthState.DOWN,
        }
        assert h.changes == []  # adopting is not a change

    run(scenario)


def test_reload_keeps_unchanged_uplinks_and_restarts_changed_ones() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        text = CONFIG.replace("gateway: 10.1.0.1,", "gateway: 10.1.0.1, weight: 2,")
        h.supervisor.adopt(config(text).uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)
        await until(lambda: h.state("isp-a") is HealthState.UP, "isp-a up")
        kept = h.supervisor.uplinks["isp-a"]
        old_a, old_b = h.live("wan-a"), h.live("wan-b")
        # isp-a: a new weight and data cap only (probed alike); isp-b: a new check.
        text = (
            CONFIG.replace(
                "gateway: 10.1.0.1,", "gateway: 10.1.0.1, weight: 5, data_cap: 20GB/month,"
            )
            .replace("gateway: dhcp, check: " + CHECK, "gateway: dhcp, check: {interval: 0.03}")
            .replace("  - {name: vpn, interface: tun0, check: " + CHECK + "}\n", "")
        )
        # What a status or reconcile sees while the reload awaits its probers: the old set
        # or the new one, never a half-built one (a status once missed isp-b this way).
        seen: set[frozenset[str]] = set()
        done = asyncio.Event()

        async def look() -> None:
            while not done.is_set():
                seen.add(frozenset(h.supervisor.uplinks))
                await asyncio.sleep(0)

        looking = tg.create_task(look())
        await asyncio.sleep(0)
        await h.supervisor.reload(config(text).uplinks, DesiredState(), FACTS, 200)
        done.set()
        await looking
        assert seen <= {frozenset({"isp-a", "isp-b", "vpn"}), frozenset({"isp-a", "isp-b"})}
        assert h.supervisor.uplinks["isp-a"] is kept and kept.config.weight == 5
        assert h.state("isp-a") is HealthState.UP and h.live("wan-a") == old_a
        assert list(h.supervisor.uplinks) == ["isp-a", "isp-b"]
        assert all(p.closed for p in old_b) and len(h.live("wan-b")) == 1
        assert h.state("isp-b") is HealthState.UNKNOWN

    run(scenario)


@pytest.mark.parametrize("family", [Family.INET, Family.INET6])
def test_a_prober_that_cannot_open_is_retried_not_fatal(family: Family) -> None:
    text = CONFIG.replace("gateway: 10.1.0.1,", 'gateway: 10.1.0.1, gateway6: "fe80::1",')

    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        h.refuse.add("wan-a")
        h.supervisor.adopt(config(text).uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)  # no exception, whatever the family
        fam = h.supervisor.uplinks["isp-a"].families[family]
        assert fam.task is None and h.live("wan-a") == []
        h.refuse.clear()
        await h.supervisor.follow(FACTS)
        assert fam.task is not None

    run(scenario)


def test_a_grade_change_is_passed_on_only_when_it_flips_degraded() -> None:
    graded: list[tuple[GradeChange, Family]] = []
    soft = CONFIG.replace("up_after: 2}", "up_after: 2, degraded_rtt: 0.01}", 1)
    supervisor = Supervisor(
        Harness().open, lambda c: None, on_grade=lambda g, f: graded.append((g, f))
    )
    supervisor.adopt(config(soft).uplinks, DesiredState(), FACTS, 200)
    fam = supervisor.uplinks["isp-a"].families[Family.INET]
    assert (
        fam.tracker.grading
        and not supervisor.uplinks["isp-b"].families[Family.INET].tracker.grading
    )
    steps = [(Grade.CLEAR, Grade.DEGRADING), (Grade.DEGRADING, Grade.DEGRADED),
             (Grade.DEGRADED, Grade.RECOVERING), (Grade.RECOVERING, Grade.CLEAR)]  # fmt: skip
    for old, new in steps:
        supervisor._graded("isp-a", fam, GradeChange(old, new, 0.0, "test"))
    assert [(g.new, f) for g, f in graded] == [
        (Grade.DEGRADED, Family.INET),
        (Grade.CLEAR, Family.INET),
    ]
    assert supervisor.degraded() == set()
    assert supervisor.reports()[0].families[Family.INET].grade is Grade.CLEAR
    for _ in range(2):  # down_after rounds with a median RTT over 10 ms
        fam.tracker.on_round(1.0, {IPv4Address("10.1.0.1"): 0.05})
    assert supervisor.degraded() == {("isp-a", Family.INET)}
    assert supervisor.reports()[1].families[Family.INET].grade is None


def test_a_standing_by_uplink_is_probed_sparingly_and_woken_at_once() -> None:
    async def scenario(h: Harness, tg: asyncio.TaskGroup) -> None:
        h.supervisor.adopt(config().uplinks, DesiredState(), FACTS, 200)
        await h.supervisor.start(tg)
        await until(lambda: h.state("isp-b") is HealthState.UP, "isp-b up")
        scheduler = h.supervisor.uplinks["isp-b"].families[Family.INET].scheduler
        assert scheduler is not None
        h.supervisor.set_paces({"isp-b": 3600.0})
        rounds = scheduler.rounds
        await asyncio.sleep(0.3)  # ~15 rounds at the normal 20 ms
        assert scheduler.rounds <= rounds + 1  # the round already launched, at most
        h.supervisor.set_paces({})
        await until(lambda: scheduler.rounds >= rounds + 5, "normal rate again at once")

    run(scenario)

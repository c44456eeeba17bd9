"""Probes in the lab: each leaves by its own uplink, sees failures there only, ignores spoofs.

Every probe runs on an event loop in a thread inside the router namespace (so its
sockets live there); failures are made inside the ISP namespaces with `ip` and nft.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ecmpd.health.icmp import IcmpProber
from ecmpd.health.packets import build_echo
from ecmpd.health.probes import ProbeCounters, Prober, open_prober, probe_round
from ecmpd.lab import netns
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import ISP_CORE_IF, LINK_LOCAL_GATEWAY6, IspInfo, Lab, core_link
from ecmpd.model import NH_ID_BASE, Family, IPAddress
from tests.integration.fixtures.connections import tcp_server
from tests.integration.fixtures.kernelstate import ecmpd, ip_json

T = TypeVar("T")
LabFactory = Callable[..., Lab]
Results = dict[str, dict[IPAddress, float | None]]  # uplink -> target -> RTT or None
Send = tuple[Callable[[int, int], None], int, int]  # spoofer, id xor, sequence offset
Timed = tuple[float, float | None, float]  # timeout, result, time taken
V4, V6 = Family.INET, Family.INET6
TIMEOUT = 0.5
# A lost probe must be reported this soon after its timeout: the daemon's round ends then.
SLACK = 0.05
BALANCER_TABLE = 200  # the config's default
BALANCER_GROUP = NH_ID_BASE + BALANCER_TABLE
TCP_PORT = 8443

# The ISP drops all it should forward (and, with LOCAL, all addressed to it) while its
# links stay up: the gray failure only probing can see.
GRAY_TRANSIT = "chain transit { type filter hook forward priority 0; policy drop; }"
GRAY_LOCAL = "chain local { type filter hook input priority 0; policy drop; }"
# Counts echo requests the ISP forwards: tells which ISP a probe really went through.
COUNT_ECHOES = """
table inet probes {
  counter echo {}
  chain transit {
    type filter hook forward priority -10; icmp type echo-request counter name "echo";
  }
}
"""

# --- helpers ---------------------------------------------------------------------------


def prepare(lab: Lab, run_dir: Path) -> None:
    """ecmpd's state in the router: the per-uplink rules and tables, loose rp_filter."""
    done = ecmpd(lab.router, lab.config_path, run_dir, "apply")
    assert done.returncode == 0, done.stderr
    assert {
        netns.read_sysctl(lab.router, f"net.ipv4.conf.{i.uplink_if}.rp_filter") for i in lab.isps
    } == {"2"}


def in_router(lab: Lab, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run main on a fresh event loop in a thread inside the router namespace."""
    return netns.call_in(lab.router, lambda: asyncio.run(main()))


@contextlib.asynccontextmanager
async def uplink_probers(
    lab: Lab, method: str = "icmp", *, bind_source: bool = True
) -> AsyncIterator[dict[str, Prober]]:
    """One prober per ISP of the lab, by ISP name; all closed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        probers: dict[str, Prober] = {}
        for isp in lab.isps:
            source = isp.address.ip if bind_source else None
            probers[isp.name] = await open_prober(method, isp.uplink_if, source, V4)
            stack.push_async_callback(probers[isp.name].aclose)
        yield probers


async def round_each(
    probers: dict[str, Prober], targets: Mapping[str, Sequence[IPAddress]], timeout: float = TIMEOUT
) -> Results:
    """One round through every prober at once, each to its own targets."""
    async with asyncio.TaskGroup() as group:
        tasks = {
            name: group.create_task(probe_round(prober, targets[name], timeout))
            for name, prober in probers.items()
        }
    return {name: task.result() for name, task in tasks.items()}


async def round_all(
    probers: dict[str, Prober], targets: Sequence[IPAddress], timeout: float = TIMEOUT
) -> Results:
    """One round through every prober at once, all to the same targets."""
    return await round_each(probers, dict.fromkeys(probers, targets), timeout)


def answered(results: Results) -> dict[str, list[bool]]:
    """Which targets answered, per uplink, in target order."""
    return {name: [rtt is not None for rtt in r.values()] for name, r in results.items()}


def plausible(rtt: float | None) -> bool:
    """A lab round trip: answered, positive, far below any timeout used here."""
    return rtt is not None and 0 < rtt < 0.2


@contextlib.contextmanager
def gray_failure(isp: IspInfo, *, local: bool = True) -> Iterator[None]:
    """The ISP silently drops traffic (links up, carrier fine) until the block exits."""
    chains = f"{GRAY_TRANSIT}\n{GRAY_LOCAL}" if local else GRAY_TRANSIT
    load_nft(isp.ns, f"table inet gray {{\n{chains}\n}}\n")
    try:
        yield
    finally:
        netns.run_in(isp.ns, ["nft", "delete", "table", "inet", "gray"], check=True)


def forwarded_echoes(isp: IspInfo) -> int:
    """Echo requests the ISP has forwarded towards the internet so far."""
    out = netns.run_in(
        isp.ns,
        ["nft", "-j", "list", "counter", "inet", "probes", "echo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [counter] = [o["counter"] for o in json.loads(out)["nftables"] if "counter" in o]
    return int(counter["packets"])


def restore_core_link(lab: Lab, i: int) -> None:
    """Bring ISP i's internet link back up, with the default route the kernel dropped."""
    isp = lab.isps[i]
    netns.run_in(isp.ns, ["ip", "link", "set", ISP_CORE_IF, "up"], check=True)
    # Taking a link down flushes the IPv4 routes through it; the lab made this one.
    upstream = core_link(i)[1].ip
    netns.run_in(isp.ns, ["ip", "route", "replace", "default", "via", str(upstream)], check=True)
    deadline = time.monotonic() + 5
    while ip_json(isp.ns, "link", "show", ISP_CORE_IF)[0]["operstate"] != "UP":
        assert time.monotonic() < deadline, "core link not up again"
        time.sleep(0.01)


def ipv4_datagram(source: IPv4Address, destination: IPv4Address, payload: bytes) -> bytes:
    """An ICMP datagram with any source, for an IPPROTO_RAW socket."""
    # Version 4, 20-byte header, TTL 64; length, id and checksum stay 0: raw(7) says
    # the kernel always fills them in.
    header = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, socket.IPPROTO_ICMP, 0, 0])
    return header + source.packed + destination.packed + payload


# --- ICMP ------------------------------------------------------------------------------


def test_icmp_probes_answer_through_every_uplink(lab: Lab, tmp_path: Path) -> None:
    prepare(lab, tmp_path / "run")
    targets = {isp.name: [isp.gateway, lab.servers[0]] for isp in lab.isps}

    async def main() -> tuple[list[Results], list[ProbeCounters]]:
        async with uplink_probers(lab) as probers:
            rounds = [await round_each(probers, targets) for _ in range(3)]
            return rounds, [p.counters for p in probers.values()]

    rounds, counters = in_router(lab, main)
    for results in rounds:
        assert all(plausible(rtt) for r in results.values() for rtt in r.values()), results
    for c in counters:
        assert (c.sent, c.received, c.late, c.mismatched, c.errors) == (6, 6, 0, 0, 0)


def test_each_probe_leaves_by_its_own_uplink_whatever_the_balanced_route_says(
    lab: Lab, tmp_path: Path
) -> None:
    prepare(lab, tmp_path / "run")
    server = lab.servers[0]
    for isp in lab.isps:
        load_nft(isp.ns, COUNT_ECHOES)
    # Traffic not pinned to an uplink goes by the balanced route: one uplink for this
    # destination, so the probes through the other two prove they ignored it.
    [balanced] = ip_json(lab.router, "route", "get", str(server))
    assert balanced["dev"] in {isp.uplink_if for isp in lab.isps}

    for bind_source in (True, False):  # the device alone must pin the way out too
        for isp in lab.isps:
            before = {i.name: forwarded_echoes(i) for i in lab.isps}

            async def one(isp: IspInfo = isp, bind_source: bool = bind_source) -> float | None:
                source = isp.address.ip if bind_source else None
                async with contextlib.aclosing(
                    await open_prober("icmp", isp.uplink_if, source, V4)
                ) as prober:
                    return await prober.probe(server, TIMEOUT)

            rtt = in_router(lab, one)
            went = {i.name: forwarded_echoes(i) - before[i.name] for i in lab.isps}
            assert plausible(rtt), (isp.name, bind_source)
            assert went == {i.name: int(i is isp) for i in lab.isps}, (isp.name, bind_source)


def test_an_uplink_out_of_the_balanced_route_is_probed_by_its_reply_rule(
    lab: Lab, tmp_path: Path
) -> None:
    prepare(lab, tmp_path / "run")
    out, stays, server = lab.isps[0], lab.isps[1], lab.servers[0]
    # As when ecmpd takes an uplink down: the balanced route stops using it, and probing
    # must still reach the internet through it to see it recover.
    netns.run_in(
        lab.router,
        ["ip", "route", "replace", "default", "via", str(stays.gateway),
         "dev", stays.uplink_if, "table", str(BALANCER_TABLE)],
        check=True,
    )  # fmt: skip

    async def main() -> list[float | None]:
        rtts = []
        for source in (out.address.ip, None):
            prober = await open_prober("icmp", out.uplink_if, source, V4)
            async with contextlib.aclosing(prober):
                rtts.append(await prober.probe(server, TIMEOUT))
        return rtts

    with_source, device_only = in_router(lab, main)
    assert plausible(with_source)
    # The device alone selects no route: no rule matches a lookup without a source, no
    # table left has a route by this device, so the kernel takes the server for on-link
    # and asks ARP for it. Probers need the uplink's source address.
    assert device_only is None


def test_an_isp_losing_its_internet_link_fails_only_its_uplink(lab: Lab, tmp_path: Path) -> None:
    prepare(lab, tmp_path / "run")
    broken = lab.isps[0]
    targets = [lab.servers[0], lab.servers[1]]
    netns.run_in(broken.ns, ["ip", "link", "set", ISP_CORE_IF, "down"], check=True)
    # The router sees nothing of it: carrier up, the balanced group still spans all.
    group = ip_json(lab.router, "nexthop", "show", "id", str(BALANCER_GROUP))
    assert len(group[0]["group"]) == len(lab.isps)

    async def main() -> tuple[dict[str, list[bool]], dict[str, list[bool]]]:
        async with uplink_probers(lab) as probers:
            down = answered(await round_all(probers, targets))
            await asyncio.to_thread(restore_core_link, lab, 0)
            return down, answered(await round_all(probers, targets))

    down, repaired = in_router(lab, main)
    assert down == {isp.name: [isp is not broken] * 2 for isp in lab.isps}
    assert repaired == {isp.name: [True, True] for isp in lab.isps}


def test_a_gray_failure_fails_its_uplink_until_it_clears(lab: Lab, tmp_path: Path) -> None:
    prepare(lab, tmp_path / "run")
    gray = lab.isps[1]
    targets = {isp.name: [isp.gateway, lab.servers[0]] for isp in lab.isps}

    async def main() -> tuple[dict[str, list[bool]], dict[str, list[bool]]]:
        async with uplink_probers(lab) as probers:
            with gray_failure(gray):
                failing = answered(await round_each(probers, targets))
            return failing, answered(await round_each(probers, targets))

    failing, cleared = in_router(lab, main)
    assert failing == {isp.name: [isp is not gray] * 2 for isp in lab.isps}
    assert cleared == {isp.name: [True, True] for isp in lab.isps}


def test_spoofed_stray_and_late_replies_count_for_nothing(lab: Lab, tmp_path: Path) -> None:
    prepare(lab, tmp_path / "run")
    isp, server = lab.isps[0], lab.servers[0]
    router = isp.address.ip
    # From the ISP: a plain raw socket answers from the ISP's own address (the gateway,
    # not the probed server); an IPPROTO_RAW one forges any source.
    plain = netns.socket_in(isp.ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    forged = netns.socket_in(isp.ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def from_gateway(ident: int, seq: int) -> None:
        plain.sendto(build_echo(V4, ident, seq, reply=True), (str(router), 0))

    def from_server(ident: int, seq: int) -> None:
        reply = ipv4_datagram(server, router, build_echo(V4, ident, seq, reply=True))
        forged.sendto(reply, (str(router), 0))

    async def spoof(prober: IcmpProber, *sends: Send) -> None:
        """After the probe went out: each sender with the id and sequence altered."""
        await asyncio.sleep(0.05)
        for send, id_flip, seq_step in sends:
            send(prober.ident ^ id_flip, (prober.sequence + seq_step) & 0xFFFF)

    async def main() -> tuple[list[float | None], list[ProbeCounters]]:
        prober = await open_prober("icmp", isp.uplink_if, router, V4)
        assert isinstance(prober, IcmpProber)
        results: list[float | None] = []
        snapshots: list[ProbeCounters] = []
        async with contextlib.aclosing(prober):
            # Wrong source, wrong id, a sequence not yet sent: none may answer the probe.
            async with asyncio.TaskGroup() as group:
                probe = group.create_task(prober.probe(server, TIMEOUT))
                group.create_task(
                    spoof(prober, (from_gateway, 0, 0), (from_server, 1, 0), (from_server, 0, 1))
                )
            results.append(probe.result())
            snapshots.append(ProbeCounters(**vars_of(prober.counters)))
            # Control: the same forger with everything right does answer (so the
            # packets above did reach the prober, and only matching kept them out).
            async with asyncio.TaskGroup() as group:
                probe = group.create_task(prober.probe(server, TIMEOUT))
                group.create_task(spoof(prober, (from_server, 0, 0)))
            results.append(probe.result())
            snapshots.append(ProbeCounters(**vars_of(prober.counters)))
            # A right answer after the timeout is late, not a result.
            results.append(await prober.probe(server, 0.1))
            from_server(prober.ident, prober.sequence)
            await asyncio.sleep(0.05)
            snapshots.append(ProbeCounters(**vars_of(prober.counters)))
        return results, snapshots

    try:
        with gray_failure(isp, local=False):  # the server never answers through isp-a
            results, (spoofed, control, late) = in_router(lab, main)
    finally:
        plain.close()
        forged.close()
    assert results[0] is None
    assert (spoofed.sent, spoofed.received, spoofed.mismatched, spoofed.late) == (1, 0, 3, 0)
    assert plausible(results[1])
    assert (control.sent, control.received, control.mismatched) == (2, 1, 3)
    assert results[2] is None
    assert (late.sent, late.received, late.mismatched, late.late) == (3, 1, 3, 1)


def vars_of(counters: ProbeCounters) -> dict[str, int]:
    """The counters' fields (slots dataclass), for a snapshot copy."""
    return {name: getattr(counters, name) for name in counters.__slots__}


def test_a_lost_probe_ends_at_its_timeout_and_a_round_runs_targets_at_once(
    lab: Lab, tmp_path: Path
) -> None:
    prepare(lab, tmp_path / "run")
    isp, server = lab.isps[0], lab.servers[0]

    async def main() -> tuple[list[Timed], dict[IPAddress, float | None], float]:
        async with contextlib.aclosing(
            await open_prober("icmp", isp.uplink_if, isp.address.ip, V4)
        ) as prober:
            timed = []
            for timeout in (0.05, 0.2, 0.5, 1.0):
                started = time.monotonic()
                rtt = await prober.probe(server, timeout)
                timed.append((timeout, rtt, time.monotonic() - started))
            started = time.monotonic()
            mixed = await probe_round(prober, [server, isp.gateway], 0.3)
            return timed, mixed, time.monotonic() - started

    with gray_failure(isp, local=False):
        timed, mixed, elapsed = in_router(lab, main)
    for timeout, rtt, took in timed:
        assert rtt is None
        assert timeout <= took <= timeout + SLACK, (timeout, took)
    assert mixed[server] is None and plausible(mixed[isp.gateway])
    assert 0.3 <= elapsed <= 0.3 + SLACK


def test_closing_a_prober_settles_its_outstanding_probes(lab: Lab, tmp_path: Path) -> None:
    prepare(lab, tmp_path / "run")
    isp, server = lab.isps[0], lab.servers[0]

    async def main() -> tuple[float | None, float]:
        prober = await open_prober("icmp", isp.uplink_if, isp.address.ip, V4)
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            probe = group.create_task(prober.probe(server, 5.0))
            await asyncio.sleep(0.1)
            await prober.aclose()
        took = time.monotonic() - started
        await prober.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await prober.probe(server, 0.1)
        return probe.result(), took

    with gray_failure(isp, local=False):
        rtt, took = in_router(lab, main)
    assert rtt is None and took < 0.1 + SLACK


def test_probers_refuse_what_does_not_exist(lab: Lab) -> None:
    isp = lab.isps[0]

    async def main() -> list[str]:
        seen = []
        for method in ("icmp", "tcp:80"):
            with pytest.raises(OSError) as no_device:
                await open_prober(method, "wan-nope", None, V4)
            with pytest.raises(OSError) as no_address:
                await open_prober(method, isp.uplink_if, IPv4Address("10.9.9.9"), V4)
            seen += [
                errno.errorcode[no_device.value.errno or 0],
                errno.errorcode[no_address.value.errno or 0],
            ]
            with pytest.raises(ValueError, match="INET"):
                await open_prober(method, isp.uplink_if, IPv6Address("2001:db8::1"), V4)
            async with contextlib.aclosing(await open_prober(method, isp.uplink_if, None, V4)) as p:
                with pytest.raises(ValueError, match="INET"):
                    await p.probe(IPv6Address("2001:db8::1"), 0.1)
        return seen

    assert in_router(lab, main) == ["ENODEV", "EADDRNOTAVAIL"] * 2


# --- TCP -------------------------------------------------------------------------------


def tcp_listener(ns: str, address: IPAddress, port: int) -> contextlib.AbstractContextManager[None]:
    """A listening socket in a namespace, accepting (and dropping) connections."""
    return tcp_server(ns, address, port, lambda conn: conn.close())


def test_tcp_probes_count_syn_ack_and_rst_as_reachable_and_silence_as_lost(
    lab: Lab, tmp_path: Path
) -> None:
    prepare(lab, tmp_path / "run")
    server, blocked = lab.servers[0], lab.isps[2]

    async def main() -> tuple[dict[str, list[float | None]], list[ProbeCounters], list[float]]:
        rtts: dict[str, list[float | None]] = {}
        async with (
            uplink_probers(lab, f"tcp:{TCP_PORT}") as listening,
            uplink_probers(lab, f"tcp:{TCP_PORT + 1}") as closed,
        ):
            for name in listening:
                rtts[name] = [
                    await listening[name].probe(server, TIMEOUT),
                    await closed[name].probe(server, TIMEOUT),
                ]
            took = []
            with gray_failure(blocked, local=False):
                for prober in (listening[blocked.name], closed[blocked.name]):
                    started = time.monotonic()
                    rtts[blocked.name].append(await prober.probe(server, TIMEOUT))
                    took.append(time.monotonic() - started)
            return rtts, [p.counters for p in (*listening.values(), *closed.values())], took

    with tcp_listener(lab.internet, server, TCP_PORT):
        rtts, counters, took = in_router(lab, main)
    for name, (open_rtt, refused_rtt, *lost) in rtts.items():
        assert plausible(open_rtt) and plausible(refused_rtt), name
        assert lost == ([None, None] if name == blocked.name else [])
    assert all(TIMEOUT <= t <= TIMEOUT + SLACK for t in took)
    listened, rejected = counters[: len(lab.isps)], counters[len(lab.isps) :]
    assert [c.refused for c in listened] == [0, 0, 0]
    assert [c.refused for c in rejected] == [1, 1, 1]
    assert [(c.sent, c.received, c.errors) for c in listened] == [(1, 1, 0), (1, 1, 0), (2, 1, 0)]


# --- IPv6 ------------------------------------------------------------------------------


def test_icmpv6_and_tcp_over_ipv6_to_global_and_link_local_gateways(
    lab: Lab, tmp_path: Path
) -> None:
    # The lab is dual-stack: the router's uplink and the ISP's port (which also answers
    # on fe80::1, as routers often do) have their IPv6 addresses already.
    isp = lab.isps[0]
    assert isp.address6 is not None and isp.gateway6 is not None
    router, gateway, link_local = isp.address6.ip, isp.gateway6, LINK_LOCAL_GATEWAY6.ip
    assert link_local.is_link_local and not gateway.is_link_local

    async def main() -> tuple[dict[IPAddress, float | None], list[float | None], ProbeCounters]:
        async with (
            contextlib.aclosing(await open_prober("icmp", isp.uplink_if, router, V6)) as icmp,
            contextlib.aclosing(
                await open_prober(f"tcp:{TCP_PORT}", isp.uplink_if, router, V6)
            ) as tcp,
        ):
            pinged = await probe_round(icmp, [gateway, link_local], TIMEOUT)
            connected = [await tcp.probe(gateway, TIMEOUT), await tcp.probe(link_local, TIMEOUT)]
            return pinged, connected, icmp.counters

    with tcp_listener(isp.ns, IPv6Address("::"), TCP_PORT):
        pinged, connected, counters = in_router(lab, main)
    assert all(plausible(rtt) for rtt in pinged.values()), pinged
    assert all(plausible(rtt) for rtt in connected), connected
    assert (counters.sent, counters.received, counters.mismatched) == (2, 2, 0)


# --- cost ------------------------------------------------------------------------------


def test_cpu_cost_of_8_uplinks_by_2_targets_at_10_hz(
    lab_factory: LabFactory, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    lab = lab_factory(isps=8)
    prepare(lab, tmp_path / "run")
    rate, seconds = 10, 5.0

    async def main() -> tuple[float, float, int, list[ProbeCounters]]:
        async with uplink_probers(lab) as probers:
            targets = {n: [lab.isp(n).gateway, lab.servers[0]] for n in probers}
            await round_all(probers, lab.servers[:1])  # resolve neighbours before measuring
            lost = 0
            cpu, wall = time.process_time(), time.monotonic()
            for tick in range(int(rate * seconds)):
                results = await round_each(probers, targets)
                lost += sum(rtt is None for r in results.values() for rtt in r.values())
                await asyncio.sleep(max(0.0, wall + (tick + 1) / rate - time.monotonic()))
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            return cpu, wall, lost, [p.counters for p in probers.values()]

    cpu, wall, lost, counters = in_router(lab, main)
    share = cpu / wall
    record_property("probe_cpu_share", share)
    print(
        f"\nprobing 8 uplinks x 2 targets at {rate} Hz: {cpu * 1000:.0f} ms CPU in {wall:.2f} s"
        f" = {share:.2%} of a core, {sum(c.sent for c in counters)} probes, {lost} lost"
    )
    assert lost == 0
    assert all(c.sent == c.received == 1 + 2 * rate * seconds for c in counters)
    # Generous: catches a busy loop or a blocking wait, not a few percent of overhead.
    assert share < 0.10

"""Connection marks against the real kernel: connections never move, dead ones end at once.

ecmpd's state is built by `ecmpd apply`, then changed the way the daemon changes it:
desired_state() with the health verdicts of a failure (and the uplinks whose connections
end) and reconcile(), in the router's namespace, followed by end_connections(). The
daemon's own wiring is tested in test_daemon_connections.py.

Every lab proves NAT (the internet has no route back to the LAN) and its ISPs drop
foreign sources, so a connection that changed uplink breaks as it would for real.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections import Counter
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

from ecmpd.config import load_config
from ecmpd.connections import mark_space, mark_values
from ecmpd.desired import desired_state
from ecmpd.kernel import conntrack as ct
from ecmpd.kernel import ctmessages as ctm
from ecmpd.kernel import nftables as nft
from ecmpd.kernel.apply import KernelWriter, reconcile
from ecmpd.kernel.record import Record
from ecmpd.kernel.resets import Ending, begin_ending, end_connections, finish_ending
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.chat import ChatServer
from ecmpd.lab.chatpool import CHAT_PORT
from ecmpd.lab.faults import load_nft
from ecmpd.lab.idleconns import IdleConns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab, round_robin
from ecmpd.model import ALL_PORTS, Family, PinReset
from tests.integration.fixtures.connections import (
    CLIENTS,
    add_lan_clients6,
    idle_conns,
    ipv6_pairs,
    router_lab,
    uplink_of,
)
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.labs import LabFactory

RESET_WITHIN = 0.3  # the bound: a dead uplink's connections reset this fast


class Router:
    """Applies ecmpd's state for some health verdicts, as the daemon would."""

    def __init__(self, lab: Lab, run_dir: Path) -> None:
        self.lab, self.run_dir = lab, run_dir
        self.config = load_config(lab.config_path)

    def apply(
        self,
        down: Collection[str] = (),
        ending: Mapping[Family, Collection[str]] | None = None,
    ) -> int:
        """Reconciles to `down` uplinks out of service; returns the number of kernel changes."""

        def run() -> int:
            sock = NetlinkSocket.open()
            try:
                writer = KernelWriter(sock, Record(self.run_dir))
                observed, facts = writer.observe()
                health = {u.name: u.name not in down for u in self.config.uplinks}
                desired = desired_state(self.config, health, facts, ending=ending)
                return len(reconcile(writer, desired, observed).ops)
            finally:
                sock.close()

        return netns.call_in(self.lab.router, run)

    def end(
        self,
        name: str,
        families: tuple[Family, ...],
        sources: tuple[str, ...] = (),
        on_link: tuple[str, ...] = (),
    ) -> int:
        """end_connections() for one uplink; returns how many TCP connections it probed."""
        ending = self.ending(name, families, sources, on_link)
        return netns.call_in(self.lab.router, lambda: end_connections(ending)).probed

    def ending(
        self,
        name: str,
        families: tuple[Family, ...],
        sources: tuple[str, ...] = (),
        on_link: tuple[str, ...] = (),
    ) -> Ending:
        """What ends for one uplink, with the mark value the run dir recorded."""
        slots = dict(Record(self.run_dir).marks)
        space = mark_space(self.config)
        return Ending(
            mark=mark_values(self.config, slots)[name],
            mask=space.mask,
            probe_mark=space.probe,
            families=families,
            sources=tuple(IPv4Address(s) if "." in s else IPv6Address(s) for s in sources),
            on_link=tuple(ip_network(n) for n in on_link),
        )

    def marked(self, name: str, proto: int) -> list[ctm.Flow]:
        """The IPv4 conntrack entries of one protocol with the uplink's mark."""
        ending = self.ending(name, (Family.INET,))
        flows = netns.call_in(
            self.lab.router, lambda: ct.marked_flows(ending.mark, ending.mask, socket.AF_INET)
        )
        return [f for f in flows if f.proto == proto]


def applied_router_lab(lab_factory: LabFactory, tmp_path: Path, ipv6_on: str | None = None) -> Lab:
    """fixtures.connections.router_lab with ecmpd applied (`ecmpd apply`)."""
    lab = router_lab(lab_factory, ipv6_on=ipv6_on)
    r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "apply")
    assert r.returncode == 0, r.stderr
    return lab


def test_idle_connections_survive_another_uplinks_failure_and_recovery(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """More idle connections than the group has buckets, opened before and during the
    failure, silent across it and the recovery: every one on a healthy uplink answers."""
    lab = applied_router_lab(lab_factory, tmp_path)
    router = Router(lab, tmp_path / "run")
    names = uplink_of(lab)
    assert lab.lan is not None
    buckets = router.config.balancer.buckets
    with idle_conns(lab) as conns:
        conns.open(lab.pairs(3 * buckets))
        before = Counter(names[c.public] for c in conns.conns)
        assert set(before) == {"isp-a", "isp-b", "isp-c"}, before

        router.apply(down={"isp-b"}, ending={Family.INET: {"isp-b"}})
        router.end("isp-b", (Family.INET,))
        conns.open(lab.pairs(buckets, offset=7))  # opened during the failure
        during = Counter(names[c.public] for c in conns.conns[3 * buckets :])
        assert set(during) == {"isp-a", "isp-c"}, during

        router.apply()  # isp-b back: the group rebalances at once (idle_timer 0)
        # Silent for longer than any timer of the group (idle_timer is 0).
        conns.watch(max(1.0, 2 * router.config.balancer.idle_timer))
        broken = conns.check()
        on_b = [c for c in conns.conns if names[c.public] == "isp-b"]
        healthy_broken = [c for c in broken if names[c.public] != "isp-b"]
        assert healthy_broken == [], Counter((names[c.public], c.how) for c in healthy_broken)
        assert {c.how for c in on_b} == {"ECONNRESET"}, Counter(c.how for c in on_b)

        # The recovered uplink takes its weighted share of new connections at once.
        new = IdleConns(lab.lan)
        with new:
            new.open(lab.pairs(600, offset=13))
            share = Counter(names[c.public] for c in new.conns)
        # isp-b's weight is 4 of 7: 343 of 600 expected (binomial sd 12); a bound 9 sd
        # below still tells "takes its share" from "takes none" (today's 60 s wait).
        assert share["isp-b"] >= 240, share


def test_dead_uplink_connections_are_reset_at_once(lab_factory: LabFactory, tmp_path: Path) -> None:
    """Idle and busy, IPv4 (NATed) and IPv6 (routed): all reset within 0.3 s, state gone."""
    lab = applied_router_lab(lab_factory, tmp_path, ipv6_on="isp-a")
    router = Router(lab, tmp_path / "run")
    names = uplink_of(lab)
    assert lab.lan is not None
    v6_pairs = ipv6_pairs(lab, CLIENTS, 800)
    with idle_conns(lab, ipv6=True) as conns:
        conns.open(lab.pairs(1500))
        conns.open(v6_pairs)
        on_a = [c for c in conns.conns if c.client.version == 6 or names[c.public] == "isp-a"]
        others = [c for c in conns.conns if c not in on_a]
        assert len(on_a) > 1000 and len(others) > 500
        busy = on_a[::10]
        conns.chatty = {id(c) for c in busy}

        def fail() -> int:
            ending = {Family.INET: {"isp-a"}, Family.INET6: {"isp-a"}}
            router.apply(down={"isp-a"}, ending=ending)
            timings.append(time.monotonic() - start)
            probed = router.end("isp-a", (Family.INET, Family.INET6))
            timings.append(time.monotonic() - start)
            return probed

        timings: list[float] = []
        with ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            failing = pool.submit(fail)
            conns.watch(1.0)  # meanwhile: the clients see their resets arrive
            probed = failing.result()
        print(f"reconciled after {timings[0]:.3f} s, connections ended after {timings[1]:.3f} s")
        ended = sorted(c.ended - start for c in on_a if c.ended is not None)
        print(f"resets: median {ended[len(ended) // 2]:.3f} s, last {ended[-1]:.3f} s")
        late = [c for c in on_a if c.ended is None or c.ended - start > RESET_WITHIN]
        assert late == [], (len(late), Counter(c.how for c in late))
        assert timings[1] <= RESET_WITHIN  # and their conntrack state is closed by then
        assert {c.how for c in on_a} == {"ECONNRESET"}
        assert probed >= len(on_a) - len(busy)
        assert [c for c in others if c.ended is not None] == []
        assert conns.check() == [c for c in conns.conns if c in on_a]

    value = mark_values(router.config, dict(Record(tmp_path / "run").marks))["isp-a"]
    mask = router.config.connections.mark
    left = netns.call_in(
        lab.router,
        lambda: (
            ct.marked_flows(value, mask, socket.AF_INET)
            + ct.marked_flows(value, mask, socket.AF_INET6)
        ),
    )
    # Closed as conntrack closes a connection it saw reset (it expires them 10 s later).
    assert [f for f in left if f.tcp_state != ctm.TCP_CONNTRACK_CLOSE] == []


def test_a_dead_uplinks_udp_entries_go_at_once_tcp_ones_after_the_grace(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """UDP (and ICMP) flows wait for no answer: their entries are deleted when ending
    begins, so their next packet takes a healthy uplink; TCP entries stay (the reset
    chain needs their mark to answer the clients) and are closed at finish."""
    lab = applied_router_lab(lab_factory, tmp_path)
    router = Router(lab, tmp_path / "run")
    assert lab.lan is not None
    lan = lab.lan

    def send_udp() -> None:
        for k, (client, server) in enumerate(lab.pairs(60)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((str(client), 30000 + k))
                sock.sendto(b"x", (str(server), 9999))

    with idle_conns(lab) as conns:
        conns.open(lab.pairs(60))
        netns.call_in(lan, send_udp)
        assert router.marked("isp-a", socket.IPPROTO_UDP), "no UDP flow took isp-a"
        tcp = router.marked("isp-a", socket.IPPROTO_TCP)
        assert tcp, "no TCP connection took isp-a"
        router.apply(down={"isp-a"}, ending={Family.INET: {"isp-a"}})
        ending = router.ending("isp-a", (Family.INET,))
        begun = netns.call_in(lab.router, lambda: begin_ending(ending))
        assert router.marked("isp-a", socket.IPPROTO_UDP) == []
        assert len(router.marked("isp-a", socket.IPPROTO_TCP)) == len(tcp)
        assert begun.deleted >= 1 and begun.probed == len(tcp) and begun.unsent == 0
        ended = netns.call_in(lab.router, lambda: finish_ending(begun))
        closed = router.marked("isp-a", socket.IPPROTO_TCP)
        assert ended.closed == len(tcp) == len(closed)
        assert {f.tcp_state for f in closed} == {ctm.TCP_CONNTRACK_CLOSE}


def test_a_dead_uplinks_client_answering_after_the_grace_is_still_reset(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """A LAN packet of a dead uplink's connection that comes after the ending's grace (a
    loaded host's late answer; here hosts drop the probes, then send a line) still meets
    its closed, marked entry: the router resets it, IPv4 and IPv6, and nothing of it
    leaves by another uplink. (Deleted entries let it start a fresh flow: IPv6 went on
    by isp-a, kept in the group as the only IPv6 uplink; IPv4 left NATed by another.)"""
    lab = applied_router_lab(lab_factory, tmp_path, ipv6_on="isp-a")
    router = Router(lab, tmp_path / "run")
    names = uplink_of(lab)
    assert lab.lan is not None
    v6_pairs = ipv6_pairs(lab, 8, 40)
    with idle_conns(lab, ipv6=True) as conns:
        conns.open(lab.pairs(120))
        conns.open(v6_pairs)
        on_a = [c for c in conns.conns if c.client.version == 6 or names[c.public] == "isp-a"]
        assert len([c for c in on_a if c.client.version == 4]) >= 10  # 2 of 7: ~34 (sd 5)
        # The LAN hosts drop ecmpd's probes (pure ACKs with a zero window): no answer.
        load_nft(lab.lan, "table inet deaf { chain in { type filter hook input priority 0; "
                 "tcp flags == ack tcp window 0 drop; }; }")  # fmt: skip
        tuples = [(c.client, c.server, c.sock.getsockname()[1]) for c in on_a]

        def entries() -> dict[tuple[ctm.IPAddress, int], ctm.Flow]:
            """The router's entry of each connection on isp-a, by client and port."""
            found = netns.call_in(
                lab.router,
                lambda: [
                    ct.find_flow(socket.IPPROTO_TCP, a, s, p, CHAT_PORT) for a, s, p in tuples
                ],
            )
            return {(f.orig_src, f.sport or 0): f for f in found if f is not None}

        before = {key: f.ct_id for key, f in entries().items()}
        assert len(before) == len(on_a)
        router.apply(down={"isp-a"}, ending={Family.INET: {"isp-a"}, Family.INET6: {"isp-a"}})
        assert router.end("isp-a", (Family.INET, Family.INET6)) == len(on_a)
        conns.watch(0.2)
        assert [c for c in on_a if c.ended is not None] == []  # the probes were not answered
        for c in on_a:  # now each sends one line, after the grace (as a late answer)
            c.sock.send(b"late\n")
        conns.watch(RESET_WITHIN)
        assert {c.how for c in on_a} == {"ECONNRESET"}, Counter(c.how for c in on_a)
        # Each late packet met its own entry, closed: none started a fresh flow (which
        # would have left by the balancer: isp-a itself for IPv6, another uplink for IPv4).
        after = {key: (f.ct_id, f.tcp_state) for key, f in entries().items()}
        assert after == {key: (ct_id, ctm.TCP_CONNTRACK_CLOSE) for key, ct_id in before.items()}
        assert [c for c in conns.check() if c not in on_a] == []

        # An IPv4 client reconnecting from the same port starts afresh: its SYN replaces
        # the closed entry (never meets its mark and reset), and leaves by a healthy
        # uplink. (IPv6 has none: isp-a, down, is kept as the only one.)
        def reconnect(client: ctm.IPAddress, server: ctm.IPAddress, port: int) -> str:
            assert lab.lan is not None and client.version == 4
            with netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.settimeout(3.0)
                sock.bind((str(client), port))
                sock.connect((str(server), CHAT_PORT))
                return sock.recv(256).decode().split()[1]

        again = [reconnect(*t) for t in tuples[:3]]  # IPv4 ones (on_a lists them first)
        assert all(names[public] != "isp-a" for public in again), again


def test_host_sockets_on_a_dead_uplink_get_an_error_at_once(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """Host mode: the local sockets from the dead uplink's address are aborted (as
    `ss -K` does); those of the other uplink, one to a neighbour on the dead uplink's
    link (its gateway: a BGP session's kind) and a listener on that address stay."""
    lab = lab_factory(isps=2, shaping=False)
    write_lab_config(lab, lab.config_path)
    r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "apply")
    assert r.returncode == 0, r.stderr
    router = Router(lab, tmp_path / "run")
    a, b = (str(isp.address.ip) for isp in lab.isps)
    isp_a = lab.isps[0]
    with ChatServer(lab.internet), ChatServer(isp_a.ns):
        socks = {}
        for name, source, server in (
            ("isp-a", a, lab.servers[0]),
            ("isp-b", b, lab.servers[0]),
            ("neighbour", a, isp_a.gateway),
        ):
            sock = netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.connect((str(server), CHAT_PORT))
            assert sock.recv(100).startswith(b"HELLO " + source.encode())
            socks[name] = sock
        listener = netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((a, 0))
        listener.listen()
        try:
            start = time.monotonic()
            router.apply(down={"isp-a"}, ending={Family.INET: {"isp-a"}})
            router.end("isp-a", (Family.INET,), sources=(a,), on_link=(str(isp_a.address.network),))
            socks["isp-a"].settimeout(RESET_WITHIN)
            try:
                got: bytes | str = socks["isp-a"].recv(100)
            except OSError as exc:
                got = errno.errorcode.get(exc.errno or 0, str(exc))
            assert got == "ECONNABORTED" and time.monotonic() - start <= RESET_WITHIN
            for name in ("isp-b", "neighbour"):
                socks[name].sendall(b"still here\n")
                assert socks[name].recv(100) == b"still here\n", name
            assert listener.getsockname()[0] == a
            client = netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM)
            with client:
                client.connect(listener.getsockname())  # the listener still accepts
        finally:
            for sock in (*socks.values(), listener):
                sock.close()
    # `down` takes everything this added with it: the table and the mark rules.
    r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "down")
    assert r.returncode == 0, r.stderr
    tables = netns.run_in(lab.router, ["nft", "list", "tables"], capture_output=True, text=True)
    assert "ecmpd" not in tables.stdout
    for family in ("-4", "-6"):
        rules = netns.run_in(lab.router, ["ip", family, "rule"], capture_output=True, text=True)
        assert "fwmark" not in rules.stdout and "proto 236" not in rules.stdout


def test_explain_names_the_uplink_an_established_connection_is_bound_to(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """Its uplink out of the group (on_failure: wait keeps it), explain still names the
    uplink the connection's packets take: the one its mark binds it to."""
    lab = applied_router_lab(lab_factory, tmp_path)
    router = Router(lab, tmp_path / "run")
    names = uplink_of(lab)
    assert lab.lan is not None
    with idle_conns(lab) as conns:
        conns.open(lab.pairs(12))
        conn = next(c for c in conns.conns if names[c.public] == "isp-b")
        router.apply(down={"isp-b"})  # out of the group, connections kept (as `wait`)
        client, sport = conn.sock.getsockname()

        def explain(port: int, *extra: str) -> dict[str, object]:
            args = ["explain", str(conn.server), "--from", client, "--iif", "lan0"]
            args += ["--proto", "tcp", "--sport", str(port), "--dport", str(CHAT_PORT)]
            r = ecmpd(lab.router, lab.config_path, tmp_path / "run", *args, *extra, "--json")
            assert r.returncode == 0, r.stderr
            return dict(json.loads(r.stdout))

        bound = explain(sport, "--established")
        assert (bound["uplink"], bound["rule"], bound["established"]) == (
            "isp-b",
            "conn:isp-b",
            True,
        )
        assert bound["connection_mark"] == "0x66000000"
        fresh = explain(sport + 1)  # no such connection: a new one would be balanced
        assert fresh["established"] is False and fresh["uplink"] in ("isp-a", "isp-c")
        text = ecmpd(
            lab.router, lab.config_path, tmp_path / "run", "explain", str(conn.server),
            "--from", client, "--iif", "lan0", "--proto", "tcp", "--sport", str(sport),
            "--dport", str(CHAT_PORT),
        )  # fmt: skip
        assert "leaves by isp-b" in text.stdout and "bound by its mark 0x66000000" in text.stdout
        missing = ecmpd(
            lab.router, lab.config_path, tmp_path / "run", "explain", str(conn.server),
            "--from", client, "--proto", "tcp", "--sport", "1", "--dport", "1", "--established",
        )  # fmt: skip
        assert missing.returncode == 1 and "no such connection" in missing.stderr


def test_pin_resets_reach_only_the_pinned_clients_connections_in_both_families(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """The table's pins4/pins6 sets (a client's match and isp-a's mark) and an ending
    limited to them: that client's TCP connections on isp-a are reset, IPv4 (NATed) and
    IPv6 (routed); its connections on other uplinks and everyone else's on isp-a go on."""
    lab = applied_router_lab(lab_factory, tmp_path, ipv6_on="isp-a")
    router = Router(lab, tmp_path / "run")
    names = uplink_of(lab)
    assert lab.lan is not None
    pinned4, other4 = lab.lan_clients[0], lab.lan_clients[1]
    pinned6, other6 = add_lan_clients6(lab, 2)
    value = mark_values(router.config, dict(Record(tmp_path / "run").marks))["isp-a"]
    space = mark_space(router.config)
    any4, any6 = ip_network("0.0.0.0/0"), ip_network("::/0")
    pins4 = (PinReset(ip_network(pinned4), any4, ALL_PORTS, ALL_PORTS, value),)
    pins6 = (PinReset(ip_network(pinned6), any6, ALL_PORTS, ALL_PORTS, value),)
    with idle_conns(lab, ipv6=True) as conns:
        for client in (pinned4, other4):
            conns.open(round_robin([client], lab.servers, 40))
        for client6 in (pinned6, other6):
            conns.open(round_robin([client6], lab.servers6, 20))
        mine = [c for c in conns.conns if c.client in (pinned4, pinned6)]
        hit = [c for c in mine if c.client.version == 6 or names[c.public] == "isp-a"]
        assert len(hit) >= 25 and len(mine) - len(hit) >= 10, (len(hit), len(mine))
        table = netns.call_in(lab.router, nft.current_table)
        assert table is not None
        pinned = replace(table, pins4=pins4, pins6=pins6)
        netns.call_in(lab.router, lambda: nft.apply_table(pinned))
        ending = Ending(value, space.mask, space.probe, (Family.INET, Family.INET6),
                        only=pins4 + pins6)  # fmt: skip
        ended = netns.call_in(lab.router, lambda: end_connections(ending))
        assert ended.probed == len(hit) and ended.unsent == 0
        conns.watch(RESET_WITHIN)
        assert {c.how for c in hit} == {"ECONNRESET"}, Counter(c.how for c in hit)
        assert [c for c in conns.check() if c not in hit] == []

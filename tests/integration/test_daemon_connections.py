"""Connections with the real `ecmpd run`: dead ones end at once, no other one ever moves.

Router mode: more idle connections than the group has buckets live through a gray
failure and recovery of another uplink, a weight change by reload, a drain and undrain,
and a daemon restart, silent in between for longer than any timer (idle_timer is 0),
then each sends a line and gets its echo. The failed uplink's connections (IPv4 NATed
and IPv6 routed) are reset within 0.3 s of the kernel's group change, measured from
the group as the kernel holds it; a reset client's reconnect whose first SYN is lost
is kicked to retransmit it at once. Host mode: the router's own socket from the dead
uplink's address gets an error at once.
"""

from __future__ import annotations

import errno
import math
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ecmpd.control import request
from ecmpd.health.fsm import HealthState
from ecmpd.lab import netns
from ecmpd.lab.chat import ChatServer
from ecmpd.lab.chatpool import CHAT_PORT
from ecmpd.lab.daemon import running_daemon
from ecmpd.lab.faults import first_syn_lost, gray_failure, heal_gray_failure, syns_lost
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.idleconns import Idle, IdleConns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab, round_robin
from ecmpd.lab.sources import moved_flows
from ecmpd.lab.wait import wait_until
from ecmpd.model import Family
from tests.integration.fixtures.connections import (
    CLIENTS,
    TUNED_CHECK,
    Opening,
    greeting_public,
    ipv6_pairs,
    router_lab,
    served,
    set_config,
    settle,
    start_connects,
    uplink_of,
)
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.labs import LabFactory

RESET_WITHIN = 0.3  # the bound, from the uplink leaving the group
GROUP_TIMEOUT = 10.0
BUCKETS = 512  # the config's default
# A reconnect whose first SYN was lost, kicked: done well before TCP's own retry (1 s
# after its SYN), measured from its SYN (when its reset came is RESET_WITHIN's business).
KICKED_WITHIN = 0.6


def late(conns: list[Idle], since: float) -> list[Idle]:
    """The connections not reset within RESET_WITHIN of `since`."""
    return [c for c in conns if c.how != "ECONNRESET" or (c.ended or 0) - since > RESET_WITHIN]


def test_daemon_resets_the_dead_and_moves_nothing_else(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = router_lab(lab_factory, ipv6_on="isp-a", tuned=True)
    names = uplink_of(lab)
    assert lab.lan is not None
    v6 = ipv6_pairs(lab, CLIENTS, 300)
    everyone = frozenset(isp.name for isp in lab.isps)
    with (
        served(lab, tmp_path / "d", ipv6=True) as (daemon, watch, conns),
        ThreadPoolExecutor(2) as pool,
    ):
        conns.open(lab.pairs(3 * BUCKETS))
        conns.open(v6)
        dead = [c for c in conns.conns if c.client.version == 6 or names[c.public] == "isp-a"]
        conns.chatty = {id(c) for c in dead[::10]}  # busy ones too

        # isp-a fails: its connections are reset within 0.3 s of it leaving the group.
        # (It is the only IPv6 uplink, so when_all_down: keep leaves it in the IPv6
        # group; its IPv6 family, probed on its own phase, leaves service within an
        # interval of its IPv4, maybe a reconcile later: measured from the IPv4 group.)
        out = pool.submit(watch.wait, lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a out")
        gray_failure(lab.isp("isp-a").ns)
        conns.watch(2.0)
        conns.chatty = set()
        left = out.result()
        assert late(dead, left) == [], Counter(c.how for c in late(dead, left))
        resets = daemon.count_events("connections.reset")  # 2 if the families straddled
        assert resets >= 1

        conns.open(lab.pairs(BUCKETS, offset=7))  # opened during the failure
        heal_gray_failure(lab.ns("isp-a"))
        back = watch.wait(lambda m: m == everyone, GROUP_TIMEOUT, "isp-a back")
        # Within 1 s of its return, isp-a takes its weighted share (2 of 7) of new ones.
        fresh = IdleConns(lab.lan)
        with fresh:
            fresh.open(lab.pairs(300, offset=13))
            assert time.monotonic() - back < 1.0 + 0.5 * 300 / 100  # opening takes its time
            share = Counter(names[c.public] for c in fresh.conns)
        assert share["isp-a"] >= 40, share  # 86 expected (binomial sd 8)
        conns.watch(1.0)  # longer than any timer: idle_timer is 0

        # A weight change by reload, a drain and undrain of isp-c, a daemon restart.
        set_config(lab.config_path, **{"isp-b": {"weight": 8}})
        daemon.send(signal.SIGHUP)
        wait_until(lambda: daemon.uplinks()["isp-b"].weight == 8, 10, "new weight")
        conns.watch(0.5)
        r = ecmpd(lab.router, lab.config_path, daemon.run_dir, "drain", "isp-c")
        assert r.returncode == 0, r.stderr
        watch.wait(lambda m: "isp-c" not in m, GROUP_TIMEOUT, "isp-c drained")
        conns.watch(0.5)
        r = ecmpd(lab.router, lab.config_path, daemon.run_dir, "undrain", "isp-c")
        assert r.returncode == 0, r.stderr
        watch.wait(lambda m: m == everyone, GROUP_TIMEOUT, "isp-c back")
        daemon.stop()
        daemon.start()
        wait_until(daemon.every_family_in_service, 20, "every uplink in service again")
        conns.watch(1.0)

        broken = {id(c) for c in conns.check()}
        healthy = [c for c in conns.conns if c.client.version == 4 and names[c.public] != "isp-a"]
        lost = [c for c in healthy if id(c) in broken]
        assert len(healthy) > 1500
        assert lost == [], Counter((names[c.public], c.how) for c in lost)
        assert daemon.count_events("connections.reset") == resets  # drains, reloads end none


def test_host_socket_on_a_dead_uplink_gets_an_error_at_once(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    write_lab_config(lab, lab.config_path)
    set_config(lab.config_path, **{isp.name: {"check": {**TUNED_CHECK,
               "targets": [str(isp.gateway)]}} for isp in lab.isps})  # fmt: skip
    a, b = (str(isp.address.ip) for isp in lab.isps)
    with (
        running_daemon(lab.router, lab.config_path, tmp_path / "d") as daemon,
        GroupWatch(lab) as watch,
        ChatServer(lab.internet),
    ):
        wait_until(daemon.all_in_service, 20, "every uplink in service")
        socks = {}
        for source in (a, b):
            sock = netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.connect((str(lab.servers[0]), CHAT_PORT))
            assert sock.recv(100).startswith(b"HELLO " + source.encode())
            socks[source] = sock
        try:
            gray_failure(lab.isp("isp-a").ns)
            left = watch.wait(lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a out")
            socks[a].settimeout(RESET_WITHIN)
            try:
                got: bytes | str = socks[a].recv(100)
            except OSError as exc:
                got = errno.errorcode.get(exc.errno or 0, str(exc))
            assert got == "ECONNABORTED" and time.monotonic() - left <= RESET_WITHIN
            socks[b].sendall(b"still here\n")
            assert socks[b].recv(100) == b"still here\n"
        finally:
            for sock in socks.values():
                sock.close()


def test_connections_still_opening_on_a_dead_uplink_complete_by_another(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """SYNs sent by isp-a after it died (before the daemon noticed): once it leaves the
    group, each of those connect()s completes by a healthy uplink within 0.3 s, with no
    error (not ECONNREFUSED, not after the SYN's 1 s retransmission), and no packet of
    it leaves with the LAN's own address."""
    lab = router_lab(lab_factory, tuned=True)
    names = uplink_of(lab)
    with served(lab, tmp_path / "d") as (daemon, watch, _):
        gray_failure(lab.isp("isp-a").ns)
        openings = start_connects(lab, lab.pairs(120))
        left = watch.wait(lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a out")
        settle(openings, 3.0)
        try:
            stuck = [o for o in openings if o.done is None or o.done > left]
            # isp-a's weight is 2 of 7: ~34 of 120 expected (binomial sd 5).
            assert len(stuck) >= 10, len(stuck)
            late = [(o.error, round((o.done or 9) - left, 3)) for o in stuck
                    if o.error or o.done is None or o.done - left > RESET_WITHIN]  # fmt: skip
            assert late == [], late
            publics = Counter(names.get(greeting_public(o.sock), "?") for o in stuck)
            assert set(publics) <= {"isp-b", "isp-c"}, publics
        finally:
            for o in openings:
                o.sock.close()
        assert daemon.count_events("connections.reset") == 1
    assert all(not moved for moved in moved_flows(lab).values()), moved_flows(lab)


def test_a_reset_clients_reconnect_whose_first_syn_is_lost_is_kicked_not_left_for_1s(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """isp-a fails; each of its reset clients reconnects at once, like an application,
    by isp-b or isp-c, which drop the first SYN of every connection (a full upload queue
    drops some; here all, so the test is certain). ecmpd follows the reset clients'
    reconnects and kicks each SYN left unanswered: every connect() completes well before
    TCP's own retransmission (1 s after its SYN), by a healthy uplink, without an error."""
    lab = router_lab(lab_factory, tuned=True)
    names = uplink_of(lab)
    assert lab.lan is not None
    with (
        served(lab, tmp_path / "d") as (daemon, watch, conns),
        ThreadPoolExecutor(1) as pool,
    ):
        conns.open(lab.pairs(120))
        on_a = [c for c in conns.conns if names[c.public] == "isp-a"]
        assert len(on_a) >= 15, len(on_a)  # weight 2 of 7: ~34 expected
        for isp in ("isp-b", "isp-c"):
            first_syn_lost(lab.ns(isp))
        out = pool.submit(watch.wait, lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a out")
        gray_failure(lab.isp("isp-a").ns)
        pending = list(on_a)
        reconnects = reconnect_when_reset(lab, conns, pending, time.monotonic() + GROUP_TIMEOUT)
        left = out.result()
        settle(reconnects, 3.0)
        try:
            assert pending == [], len(pending)
            slow = slow_reconnects(reconnects, left)
            assert slow == [], slow
            publics = Counter(names.get(greeting_public(o.sock), "?") for o in reconnects)
            assert set(publics) <= {"isp-b", "isp-c"}, publics
        finally:
            for o in reconnects:
                o.sock.close()
        lost = sum(syns_lost(lab.ns(isp)) for isp in ("isp-b", "isp-c"))
        assert lost >= len(reconnects), (lost, len(reconnects))  # each one's first SYN
        wait_until(lambda: daemon.count_events("connections.reconnects") == 1, 5, "follow-up")
        kicked = daemon.events("connections.reconnects")[0]["kicked"]
        assert isinstance(kicked, int) and kicked >= len(reconnects), (kicked, len(reconnects))
    assert all(not moved for moved in moved_flows(lab).values()), moved_flows(lab)


def test_ipv6_reconnects_whose_first_syn_is_lost_are_kicked_too(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """The same for the LAN's routed IPv6 connections (no NAT): isp-b fails (the lab
    routes the LAN's prefix back through isp-a, so that one stays), its clients reconnect
    by isp-a or isp-c, which drop every first SYN: each connect() completes well before
    TCP's own retransmission, without an error."""
    lab = router_lab(lab_factory, tuned=True, dual_stack=True)
    with (
        served(lab, tmp_path / "d", ipv6=True) as (daemon, watch, conns),
        ThreadPoolExecutor(1) as pool,
    ):
        conns.open(ipv6_pairs(lab, CLIENTS, 120))
        for isp in ("isp-a", "isp-c"):
            first_syn_lost(lab.ns(isp))
        v6 = Family.INET6
        out = pool.submit(watch.wait, lambda m: "isp-b" not in m, GROUP_TIMEOUT, "isp-b out", v6)
        gray_failure(lab.isp("isp-b").ns)
        pending = list(conns.conns)  # isp-b's (4 of 7 by weight) are reset, no other one
        reconnects = reconnect_when_reset(lab, conns, pending, time.monotonic() + 2.0)
        left = out.result()
        settle(reconnects, 3.0)
        try:
            assert len(reconnects) >= 30, len(reconnects)  # ~69 expected (binomial sd 5)
            slow = slow_reconnects(reconnects, left)
            assert slow == [], slow
        finally:
            for o in reconnects:
                o.sock.close()
        lost = sum(syns_lost(lab.ns(isp)) for isp in ("isp-a", "isp-c"))
        assert lost >= len(reconnects), (lost, len(reconnects))  # each one's first SYN
        wait_until(lambda: daemon.count_events("connections.reconnects") >= 1, 5, "follow-up")
        kicked = [e["kicked"] for e in daemon.events("connections.reconnects")]
        assert sum(k for k in kicked if isinstance(k, int)) >= len(reconnects), kicked


def slow_reconnects(reconnects: list[Opening], left: float) -> list[tuple[str, float, float]]:
    """(error, started after `left`, took) of each reconnect that failed or took longer
    than KICKED_WITHIN from its SYN."""
    return [(o.error, round(o.started - left, 3), round((o.done or 9) - o.started, 3))
            for o in reconnects
            if o.error or o.done is None or o.done - o.started > KICKED_WITHIN]  # fmt: skip


def reconnect_when_reset(
    lab: Lab, conns: IdleConns, pending: list[Idle], until: float, quiet: float = 0.2
) -> list[Opening]:
    """Each pending connection that ends (reset) is taken off `pending` and reconnected
    at once, as an application does; until none is pending, `until`, or `quiet` s after
    the last reset (an uplink's resets come together)."""
    reconnects: list[Opening] = []
    last = math.inf
    while pending and time.monotonic() < min(until, last + quiet):
        conns.watch(0.005, period=0.005)
        for conn in [c for c in pending if c.ended is not None]:
            pending.remove(conn)
            reconnects += start_connects(lab, [(conn.client, conn.server)])
            last = time.monotonic()
        settle(reconnects, 0.001)  # the ones done so far, noted when done
    return reconnects


def test_a_reload_resets_a_removed_uplinks_connections_and_keeps_renamed_ones(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """A reload removes isp-c (on_failure: reset), renames isp-b and gives isp-a another
    table: isp-c's idle connections are reset at once (its mark rule and table went, so
    they could not go on), every one of isp-a's and isp-b's still answers."""
    lab = router_lab(lab_factory, tuned=True)
    names = uplink_of(lab)
    with served(lab, tmp_path / "d") as (daemon, _, conns):
        conns.open(lab.pairs(400))
        on = Counter(names[c.public] for c in conns.conns)
        assert min(on.values()) >= 20, on
        data = yaml.safe_load(lab.config_path.read_text())
        data["uplinks"] = [u for u in data["uplinks"] if u["name"] != "isp-c"]
        for uplink in data["uplinks"]:
            if uplink["name"] == "isp-a":
                uplink["table"] += 50
            if uplink["name"] == "isp-b":
                uplink["name"] = "isp-bee"
        lab.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        answer = request(daemon.run_dir, {"cmd": "reload"})
        reloaded = time.monotonic()
        assert answer["ok"], answer
        conns.watch(RESET_WITHIN)
        removed = [c for c in conns.conns if names[c.public] == "isp-c"]
        assert all(c.how == "ECONNRESET" for c in removed), Counter(c.how for c in removed)
        assert max((c.ended or 0) - reloaded for c in removed) <= RESET_WITHIN
        conns.watch(1.0)
        kept = [c for c in conns.conns if names[c.public] != "isp-c"]
        broken = [c for c in conns.check() if c in kept]
        assert broken == [], Counter((names[c.public], c.how) for c in broken)
        assert set(daemon.uplinks()) == {"isp-a", "isp-bee"}


def test_an_uplink_undrained_while_down_ends_its_connections_and_comes_back(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """isp-a is drained (its connections stay: a drain is graceful), then dies: undrained
    while down, its connections are reset at once, as if it had failed in service; it is
    probed all along and rejoins the group when it heals."""
    lab = router_lab(lab_factory, tuned=True)
    names = uplink_of(lab)
    everyone = frozenset(isp.name for isp in lab.isps)
    with served(lab, tmp_path / "d") as (daemon, watch, conns):
        conns.open(lab.pairs(300))
        on_a = [c for c in conns.conns if names[c.public] == "isp-a"]
        assert len(on_a) >= 20, len(on_a)
        assert request(daemon.run_dir, {"cmd": "drain", "uplink": "isp-a"})["ok"]
        watch.wait(lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a drained")
        gray_failure(lab.isp("isp-a").ns)
        wait_until(
            lambda: daemon.uplinks()["isp-a"].health is HealthState.DOWN, 10, "isp-a found down"
        )
        conns.watch(0.5)
        assert [c for c in conns.conns if c.ended is not None] == []  # drained: kept
        assert request(daemon.run_dir, {"cmd": "undrain", "uplink": "isp-a"})["ok"]
        undrained = time.monotonic()
        conns.watch(RESET_WITHIN)
        late = [c for c in on_a if c.how != "ECONNRESET" or (c.ended or 0) - undrained > 0.1]
        assert late == [], Counter(c.how for c in late)
        heal_gray_failure(lab.ns("isp-a"))
        watch.wait(lambda m: m == everyone, GROUP_TIMEOUT, "isp-a back")
        others = [c for c in conns.conns if c not in on_a]
        assert conns.check() == on_a and all(c.ended is None for c in others)


def test_a_pins_connections_follow_failback_reset_when_its_first_choice_returns(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """A client pinned to [isp-a, isp-b] (isp-b: failback reset) opens connections by
    isp-b while isp-a is down; isp-a returns: exactly those are reset (the client
    reconnects by isp-a), while the other clients' connections on isp-b all go on."""
    lab = router_lab(lab_factory, tuned=True)
    names = uplink_of(lab)
    pinned, others = lab.lan_clients[0], lab.lan_clients[1:]
    data = yaml.safe_load(lab.config_path.read_text())
    vpn = {"name": "vpn", "action": "pin", "from": str(pinned), "uplink": ["isp-a", "isp-b"]}
    data["rules"].insert(1, vpn)
    lab.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    set_config(lab.config_path, **{"isp-b": {"failback": "reset"}})
    servers = lab.servers
    with served(lab, tmp_path / "d") as (_, watch, conns):
        gray_failure(lab.isp("isp-a").ns)
        watch.wait(lambda m: "isp-a" not in m, GROUP_TIMEOUT, "isp-a out")
        conns.open(round_robin([pinned], servers, 30))
        mine = list(conns.conns)
        assert {names[c.public] for c in mine} == {"isp-b"}  # the pin's fallback
        conns.open(round_robin(others, servers, 300))
        theirs_on_b = [c for c in conns.conns if c not in mine and names[c.public] == "isp-b"]
        assert len(theirs_on_b) >= 100, len(theirs_on_b)  # weights 4 of 5 while isp-a is out
        heal_gray_failure(lab.ns("isp-a"))
        back = watch.wait(lambda m: "isp-a" in m, GROUP_TIMEOUT, "isp-a back")
        conns.watch(1.0)
        late = [c for c in mine if c.how != "ECONNRESET" or (c.ended or 9e9) - back > RESET_WITHIN]
        assert late == [], Counter(c.how for c in late)
        broken = [c for c in conns.check() if c not in mine]
        assert broken == [], Counter((names[c.public], c.how) for c in broken)
        again = IdleConns(lab.lan or "")
        with again:
            again.open(round_robin([pinned], servers, 8))
            assert {names[c.public] for c in again.conns} == {"isp-a"}

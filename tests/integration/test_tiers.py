"""Failover order with the real `ecmpd run` in the lab: a backup tier, a pin's fallback list.

Router mode, return paths only through the router's NAT, ISPs validating sources: what
a LAN client's connections show at the server is the public address they really left by.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.lab import netns
from ecmpd.lab.chat import ChatServer, public_addresses
from ecmpd.lab.chatpool import CHAT_PORT, GREETING
from ecmpd.lab.faults import gray_failure, heal_gray_failure, load_nft
from ecmpd.lab.groups import group_members
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.labs import LabFactory
from tests.integration.fixtures.tiers import (
    CHECK,
    KERNEL_MARGIN,
    TALLY,
    data_bytes,
    tiered_lab,
    write_config,
)


def fresh_publics(lab: Lab, source: IPv4Address, n: int = 16) -> set[str]:
    """The public addresses n new connections from `source` (to every server) showed."""
    flows = [(source, lab.servers[i % len(lab.servers)], 0) for i in range(n)]
    return set(public_addresses(lab, flows))


def test_backup_tier_stands_by_takes_over_and_hands_back(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """fiber+cable tier 1, lte tier 2: lte carries 0 data bytes while either is up; both
    failing hands it everything within detection + one kernel change; fiber's return
    takes new connections at once."""
    lab = tiered_lab(lab_factory, isps=3)
    fiber, cable, lte = (str(isp.address.ip) for isp in lab.isps)
    (client,) = add_lan_clients(lab, 1)
    config = write_config(lab, {"isp-c": 2}, [])
    load_nft(lab.ns("isp-c"), TALLY)
    with ChatServer(lab.internet), running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-c").health == "up", 10, "every uplink probed")
        assert group_members(lab) == {"isp-a", "isp-b"}
        assert fresh_publics(lab, client, 32) == {fiber, cable}
        gray_failure(lab.ns("isp-a"))
        tier1 = wait_for(lambda: group_members(lab) == {"isp-b"}, 5, "isp-a out")
        assert fresh_publics(lab, client, 32) == {cable}
        assert data_bytes(lab, "isp-c") == 0  # standing by, only probed
        gray_failure(lab.ns("isp-b"))
        takeover = wait_for(lambda: group_members(lab) == {"isp-c"}, 5, "lte takes over")
        bound = detection_time(CHECK) + KERNEL_MARGIN
        assert tier1 <= bound and takeover <= bound, (tier1, takeover, bound)
        assert fresh_publics(lab, client, 32) == {lte}
        assert data_bytes(lab, "isp-c") > 0
        explained = ecmpd(lab.router, config, tmp_path / "run", "explain", "198.51.100.3",
                          "--from", str(client), "--iif", "lan0", "--json")  # fmt: skip
        assert explained.returncode == 0, explained.stderr
        answer = json.loads(explained.stdout)
        assert (answer["uplink"], answer["backup_tier"]) == ("isp-c", 2), answer
        heal_gray_failure(lab.ns("isp-a"))
        back = wait_for(lambda: group_members(lab) == {"isp-a"}, 10, "fiber back")
        assert back <= recovery_time(CHECK) + KERNEL_MARGIN, back
        assert fresh_publics(lab, client, 32) == {fiber}  # new connections: fiber at once


@dataclass(frozen=True)
class Sample:
    """One short connection: when it was opened, and the address the server saw."""

    at: float
    public: str | None  # None: it failed (its path was down)


class Sampler:
    """Opens a short connection from `source` every `period`, to the servers in turn."""

    def __init__(self, lab: Lab, source: IPv4Address, period: float = 0.02) -> None:
        assert lab.lan is not None
        self.lab, self.source, self.period = lab, source, period
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: netns.call_in(lab.lan or "", self._run))

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.period):
            server = self.lab.servers[i % len(self.lab.servers)]
            i += 1
            at = time.monotonic()
            self.samples.append(Sample(at, self._greeting(server)))

    def _greeting(self, server: IPv4Address) -> str | None:
        try:
            with socket.create_connection(
                (str(server), CHAT_PORT), timeout=0.3, source_address=(str(self.source), 0)
            ) as sock:
                # An abortive close: no TIME_WAIT piling up over hundreds of connections.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                words = sock.makefile("rb").readline().decode().split()
        except OSError:
            return None
        return words[1] if len(words) == 3 and words[0] == GREETING else None

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

    def runs(self, start: float, end: float) -> list[str]:
        """The public addresses between start and end, each run of repeats as one."""
        out: list[str] = []
        for s in self.samples:
            if start <= s.at <= end and s.public is not None and (not out or out[-1] != s.public):
                out.append(s.public)
        return out

    def seen(self, start: float, end: float) -> set[str]:
        return {s.public for s in self.samples if start <= s.at <= end and s.public is not None}


def test_pin_fallback_list_keeps_one_public_address(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """A client pinned to [fiber, cable] shows one address at a time through a fiber
    failure and return: fiber, then cable, then fiber again. A client pinned to fiber
    alone (the old fall-through, kept as the control) spreads over the balancer."""
    lab = tiered_lab(lab_factory, isps=3)
    fiber, cable, dsl = (str(isp.address.ip) for isp in lab.isps)
    listed, single = add_lan_clients(lab, 2)
    config = write_config(lab, {}, [
        {"name": "vpn", "action": "pin", "from": str(listed), "uplink": ["isp-a", "isp-b"]},
        {"name": "old", "action": "pin", "from": str(single), "uplink": "isp-a"},
    ])  # fmt: skip
    pinned, control = Sampler(lab, listed), Sampler(lab, single)
    with ChatServer(lab.internet), running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-c").health == "up", 10, "every uplink probed")
        with pinned.running(), control.running():
            time.sleep(1.0)
            failed = time.monotonic()
            gray_failure(lab.ns("isp-a"))
            wait_for(lambda: group_members(lab) == {"isp-b", "isp-c"}, 5, "isp-a out")
            out = time.monotonic()
            time.sleep(3.0)  # ~150 connections each while fiber is down
            healed = time.monotonic()
            heal_gray_failure(lab.ns("isp-a"))
            wait_for(lambda: group_members(lab) == {"isp-a", "isp-b", "isp-c"}, 10, "isp-a back")
            time.sleep(1.0)
            end = time.monotonic()
    start = pinned.samples[0].at
    assert pinned.runs(start, end) == [fiber, cable, fiber], pinned.runs(start, end)
    assert pinned.seen(failed, healed) <= {fiber, cable}
    # The control proves the sampler sees a spread when there is one: once fiber is out
    # of the group (before, until the daemon notices, its connections may still have
    # left by fiber just as the fault was put in place).
    assert control.seen(out, healed) == {cable, dsl}, control.seen(out, healed)

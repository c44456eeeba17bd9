"""dnsmasq as an ISP's DHCP server: a pool on one interface, a router option it can change.

DHCP only (`--port=0`: no DNS), bound to the one interface, with its lease file, pid
file and options file in the peer's private directory. The router option lives in the
options file, which dnsmasq re-reads on SIGHUP: `set_router` changes what the next
renewal or rebinding hands out, as an ISP moving its customers to a new gateway does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ecmpd.lab.peers.process import Peer

DNSMASQ = "dnsmasq"
MIN_LEASE_S = 120  # dnsmasq raises shorter lease times to two minutes


@dataclass(frozen=True)
class DhcpPool:
    """What the server hands out: addresses first..last of network, and a router."""

    network: IPv4Network
    first: IPv4Address
    last: IPv4Address
    router: IPv4Address
    lease_s: int = MIN_LEASE_S

    def __post_init__(self) -> None:
        for address in (self.first, self.last, self.router):
            if address not in self.network:
                raise ValueError(f"{address} is outside {self.network}")
        if self.lease_s < MIN_LEASE_S:
            raise ValueError(f"lease time {self.lease_s} s: dnsmasq's minimum is {MIN_LEASE_S}")


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file."""

    expiry: int
    mac: str
    address: IPv4Address


def parse_leases(text: str) -> list[Lease]:
    """dnsmasq's lease file: `expiry mac address hostname client-id` per line."""
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            leases.append(Lease(int(fields[0]), fields[1], IPv4Address(fields[2])))
    return leases


class DhcpServer(Peer):
    """dnsmasq serving `pool` on `interface` of namespace `ns`."""

    def __init__(self, ns: str, interface: str, pool: DhcpPool, workdir: Path) -> None:
        super().__init__(ns, workdir, f"dnsmasq-{interface}")
        self.interface, self.pool = interface, pool
        self.pid_file = self.dir / "dnsmasq.pid"
        self.lease_file = self.dir / "leases"
        self.options_file = self.dir / "options"
        self._write_options(pool.router)

    def argv(self) -> list[str]:
        p = self.pool
        return [
            DNSMASQ,
            "--keep-in-foreground",
            "--log-facility=-",  # stderr, into the peer's log
            "--log-dhcp",
            "--conf-file=/dev/null",  # never the host's /etc/dnsmasq.conf
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--user=root",  # no privilege drop: the private files stay readable
            f"--interface={self.interface}",
            "--bind-interfaces",
            "--dhcp-authoritative",
            "--no-ping",  # no 3 s echo test of an address before offering it
            f"--dhcp-range={p.first},{p.last},{p.network.netmask},{p.lease_s}",
            f"--dhcp-leasefile={self.lease_file}",
            f"--dhcp-optsfile={self.options_file}",
            f"--pid-file={self.pid_file}",
        ]

    def ready(self) -> bool:
        # Written once the DHCP socket is bound.
        return self.pid_file.exists()

    def set_router(self, router: IPv4Address, timeout: float = 5.0) -> None:
        """Hand out `router` from now on (renewals and new leases); returns once dnsmasq
        has re-read its options (a renewal right after gets the new router)."""
        if router not in self.pool.network:
            raise ValueError(f"router {router} is outside {self.pool.network}")
        self._write_options(router)
        reloads = self._reloads()
        self.send(signal.SIGHUP)
        assert self.process is not None
        self.process.wait_until(lambda: self._reloads() > reloads, timeout, "options reload")

    def _reloads(self) -> int:
        """How often dnsmasq has logged reading the options file (at start and each SIGHUP)."""
        return self.log_tail_all().count(f"read {self.options_file}")

    def leases(self) -> list[Lease]:
        """The leases dnsmasq has recorded."""
        if not self.lease_file.exists():
            return []
        return parse_leases(self.lease_file.read_text())

    def _write_options(self, router: IPv4Address) -> None:
        tmp = self.options_file.with_suffix(".tmp")
        tmp.write_text(f"option:router,{router}\n")
        tmp.replace(self.options_file)  # dnsmasq never reads half a file

"""The lab topology: router, ISPs, internet (and a LAN) in namespaces of their own.

Addressing plan, for ISP number i (0-based, names isp-a .. isp-h):
  router wan-X 10.<i+1>.0.2/24  <->  ISP cust0 10.<i+1>.0.1/24 (the gateway)
  ISP core0 172.16.<i+1>.1/30   <->  internet isp-X 172.16.<i+1>.2/30
  internet lo: 198.51.100.1..N/32 (servers) and 203.0.113.1..N/32 (alt_servers)
  router lan0 10.200.0.1/16     <->  lan eth0 10.200.0.2/16 (+ clients 10.200.1.1..)
and IPv6 from the documentation prefix 2001:db8::/32 (unless built with ipv6=False):
  router wan-X 2001:db8:<i+1>::2/64  <->  ISP cust0 2001:db8:<i+1>::1/64 and fe80::1/64
  ISP core0 2001:db8:ff<i+1>::1/64   <->  internet isp-X 2001:db8:ff<i+1>::2/64
  internet lo: 2001:db8:100::1..N/128 (servers6)
  router lan0 2001:db8:200::1/64     <->  lan eth0 2001:db8:200::2/64
ISPs do not NAT: the internet routes each 10.<i+1>.0.0/24 (and 2001:db8:<i+1>::/64)
back through ISP i, so a reply returns through the ISP its request used. The LAN's
prefixes come back through ISP a (its 2001:db8:200::/64 is ISP a's delegated prefix).
Duplicate address detection is off in an IPv6 lab's namespaces: addresses work at once.
The lab's own ecmpd config (lab_config) stays IPv4-only unless asked for IPv6.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from ecmpd.config.resolve import weights_from_bandwidths
from ecmpd.kernel.transport import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NetlinkError,
    attr,
    attr_str,
    netlink_for,
    release,
)
from ecmpd.lab import labconfig, netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.shaping import shape, tbf_for
from ecmpd.model import MAX_WEIGHT

MAX_ISPS = 8
MAX_SERVERS = 254
ISP_CUSTOMER_IF = "cust0"  # ISP side of the router <-> ISP link
ISP_CORE_IF = "core0"  # ISP side of the ISP <-> internet link
# The servers live on the internet namespace's loopback: kernels built without
# the dummy driver (this lab's VM is one) still have lo.
SERVER_IF = "lo"
ROUTER_LAN_IF = "lan0"
LAN_IF = "eth0"
LAN_PREFIX = IPv4Network("10.200.0.0/16")
LAN_ROUTER = IPv4Interface("10.200.0.1/16")
LAN_HOST = IPv4Interface("10.200.0.2/16")
FIRST_LAN_CLIENT = IPv4Address("10.200.1.1")
LAN_PREFIX6 = IPv6Network("2001:db8:200::/64")
LAN_ROUTER6 = IPv6Interface("2001:db8:200::1/64")
LAN_HOST6 = IPv6Interface("2001:db8:200::2/64")
# Every ISP's customer port also answers on this link-local address, so a config can
# name the gateway as routers often do (`gateway6: fe80::1`, which needs the device).
LINK_LOCAL_GATEWAY6 = IPv6Interface(f"{labconfig.LINK_LOCAL_GATEWAY6}/64")
IFA_F_NODAD = 0x02  # linux/if_addr.h
IFA_ADDRESS, IFA_LOCAL = 1, 2  # linux/if_addr.h
IFLA_IFNAME = 3  # linux/if_link.h
RTM_GETLINK, RTM_NEWADDR = 18, 20  # linux/rtnetlink.h
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, ifindex
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, ifindex, flags, change
LOOPBACK_IFINDEX = 1  # lo, in every namespace (include/net/flow.h)
# ifindexes of the veth ends the lab creates itself (see _veth for why).
UPLINK_IFINDEX = 101  # router wan-a; wan-b is 102, ...
LAN_IFINDEX = 150  # router lan0
CORE_IFINDEX = 200  # ISP core0
OPERSTATE_TIMEOUT = 5.0
STATE_FILE = "lab.json"
CONFIG_FILE = "ecmpd.yaml"
# Forwarders must pass traffic whose return path differs (a reply to a LAN
# client may come back by another ISP); loose rp_filter keeps that observable
# at the router, where ecmpd owns the setting, instead of dropped upstream.
FORWARDER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.conf.all.rp_filter": "2",
    "net.ipv4.conf.default.rp_filter": "2",
}
# In every namespace of an IPv6 lab, before any link exists: no duplicate address
# detection, so addresses (link-local ones too) are usable the moment they are added
# instead of a second or more later, which would fail a fresh lab's first probes; and
# IPv6 addresses kept while a link is down, as IPv4 ones are, so an ISP port taken
# down and up again (isp_link_down) still has its gateway addresses.
IPV6_LAB_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.keep_addr_on_down": "1",
    "net.ipv6.conf.default.keep_addr_on_down": "1",
}
# Writing `all` sets `default` and every existing interface too.
FORWARDER_SYSCTLS6 = {"net.ipv6.conf.all.forwarding": "1"}


@dataclass(frozen=True)
class IspInfo:
    """One ISP of the lab, as seen from the router."""

    name: str
    ns: str
    uplink_if: str
    gateway: IPv4Address
    address: IPv4Interface
    rate_mbit: int
    weight: int
    gateway6: IPv6Address | None = None  # None in a lab built without IPv6
    address6: IPv6Interface | None = None


@dataclass
class Lab:
    """A lab's namespaces and addresses; build_lab makes it real, destroy_lab removes it."""

    prefix: str
    router: str
    internet: str
    lan: str | None
    isps: list[IspInfo]
    servers: list[IPv4Address]
    workdir: Path
    config_path: Path
    alt_servers: list[IPv4Address] = field(default_factory=list)
    lan_clients: list[IPv4Address] = field(default_factory=list)
    servers6: list[IPv6Address] = field(default_factory=list)  # empty without IPv6

    @property
    def ipv6(self) -> bool:
        """Whether the lab has IPv6 addressing."""
        return bool(self.servers6)

    def ns(self, role: str) -> str:
        """Returns the namespace of 'router', 'internet', 'lan' or an ISP name."""
        if role == "router":
            return self.router
        if role == "internet":
            return self.internet
        if role == "lan" and self.lan is not None:
            return self.lan
        for isp in self.isps:
            if isp.name == role:
                return isp.ns
        raise KeyError(f"lab {self.prefix!r} has no namespace for role {role!r}")

    def namespaces(self) -> list[str]:
        """Returns all the lab's namespaces, in creation order."""
        names = [self.router, self.internet, *(isp.ns for isp in self.isps)]
        return [*names, self.lan] if self.lan is not None else names

    def isp(self, name: str) -> IspInfo:
        """Returns the ISP called name."""
        for isp in self.isps:
            if isp.name == name:
                return isp
        raise KeyError(f"lab {self.prefix!r} has no ISP {name!r}")


def isp_name(i: int) -> str:
    """Returns the name of ISP number i (0 -> 'isp-a')."""
    return f"isp-{chr(ord('a') + i)}"


def uplink_if(i: int) -> str:
    """Returns the router interface towards ISP number i (0 -> 'wan-a')."""
    return f"wan-{chr(ord('a') + i)}"


def core_link(i: int) -> tuple[IPv4Interface, IPv4Interface]:
    """Returns the (ISP side, internet side) addresses of ISP i's link to the internet."""
    return IPv4Interface(f"172.16.{i + 1}.1/30"), IPv4Interface(f"172.16.{i + 1}.2/30")


def customer_prefix(i: int) -> IPv4Network:
    """Returns the prefix ISP number i gives the router."""
    return IPv4Network(f"10.{i + 1}.0.0/24")


def core_link6(i: int) -> tuple[IPv6Interface, IPv6Interface]:
    """Returns the IPv6 (ISP side, internet side) addresses of ISP i's link to the internet."""
    return IPv6Interface(f"2001:db8:ff{i + 1}::1/64"), IPv6Interface(f"2001:db8:ff{i + 1}::2/64")


def customer_prefix6(i: int) -> IPv6Network:
    """Returns the IPv6 prefix of ISP number i's link to the router."""
    return IPv6Network(f"2001:db8:{i + 1}::/64")


def plan_lab(
    *,
    isps: int = 3,
    rates_mbit: Sequence[int] = (100, 200, 50),
    weights: Sequence[int] | None = None,
    lan: bool = False,
    servers: int = 16,
    workdir: Path,
    prefix: str | None = None,
    ipv6: bool = True,
) -> Lab:
    """Returns the Lab build_lab would build, without touching the system."""
    if not 1 <= isps <= MAX_ISPS:
        raise ValueError(f"isps must be 1..{MAX_ISPS}, got {isps}")
    if not 1 <= servers <= MAX_SERVERS:
        raise ValueError(f"servers must be 1..{MAX_SERVERS}, got {servers}")
    if not rates_mbit:
        raise ValueError("rates_mbit must not be empty")
    # Shorter rate lists repeat, so the default (100, 200, 50) serves up to 8 ISPs.
    rates = [rates_mbit[i % len(rates_mbit)] for i in range(isps)]
    for rate in rates:
        tbf_for(rate)  # validates the range
    weights = list(weights) if weights is not None else weights_from_bandwidths(rates)
    if len(weights) != isps or any(not 1 <= w <= MAX_WEIGHT for w in weights):
        raise ValueError(f"weights must be {isps} values in 1..{MAX_WEIGHT}, got {weights}")
    prefix = netns.new_prefix() if prefix is None else prefix
    netns.check_name(f"{prefix}internet")  # the longest role name must be valid
    workdir = Path(workdir)
    return Lab(
        prefix=prefix,
        router=f"{prefix}router",
        internet=f"{prefix}internet",
        lan=f"{prefix}lan" if lan else None,
        isps=[
            IspInfo(
                name=isp_name(i),
                ns=f"{prefix}{isp_name(i)}",
                uplink_if=uplink_if(i),
                gateway=IPv4Address(f"10.{i + 1}.0.1"),
                address=IPv4Interface(f"10.{i + 1}.0.2/24"),
                rate_mbit=rates[i],
                weight=weights[i],
                gateway6=customer_prefix6(i)[1] if ipv6 else None,
                address6=IPv6Interface(f"{customer_prefix6(i)[2]}/64") if ipv6 else None,
            )
            for i in range(isps)
        ],
        servers=[IPv4Address(f"198.51.100.{k}") for k in range(1, servers + 1)],
        alt_servers=[IPv4Address(f"203.0.113.{k}") for k in range(1, servers + 1)],
        servers6=[IPv6Address(f"2001:db8:100::{k:x}") for k in range(1, servers + 1)]
        if ipv6
        else [],
        workdir=workdir,
        config_path=workdir / CONFIG_FILE,
    )


def build_lab(
    *,
    isps: int = 3,
    rates_mbit: Sequence[int] = (100, 200, 50),
    weights: Sequence[int] | None = None,
    lan: bool = False,
    servers: int = 16,
    workdir: Path,
    prefix: str | None = None,
    shaping: bool = True,
    ipv6: bool = True,
) -> Lab:
    """Builds a lab in fresh namespaces, writes its config and state; on failure leaves nothing."""
    lab = plan_lab(
        isps=isps,
        rates_mbit=rates_mbit,
        weights=weights,
        lan=lan,
        servers=servers,
        workdir=workdir,
        prefix=prefix,
        ipv6=ipv6,
    )
    created: list[str] = []
    try:
        for name in lab.namespaces():
            netns.create_netns(name)
            created.append(name)
        _wire(lab, shaped=shaping)
        write_lab_config(lab, lab.config_path)
        save_lab(lab)
    except BaseException:
        # Only what this call created: a name that already existed may be
        # another lab's (same explicit prefix), which is not ours to remove.
        _remove_all(reversed(created))
        raise
    return lab


def destroy_lab(lab: Lab) -> None:
    """Removes the lab's namespaces (and everything in them); safe to call again."""
    _remove_all(reversed(lab.namespaces()))


@contextlib.contextmanager
def lab_session(**kwargs: Any) -> Iterator[Lab]:
    """Builds a lab (build_lab keywords) and always destroys it afterwards."""
    lab = build_lab(**kwargs)
    try:
        yield lab
    finally:
        destroy_lab(lab)


def isp_link_down(lab: Lab, name: str) -> None:
    """Takes the ISP's router-facing port down: the router's uplink loses carrier."""
    _set_isp_link(lab, name, "down")


def isp_link_up(lab: Lab, name: str) -> None:
    """Brings the ISP's router-facing port back up: the router's uplink regains carrier."""
    _set_isp_link(lab, name, "up")


def add_lan_clients(lab: Lab, n: int) -> list[IPv4Address]:
    """Adds n more client addresses in the LAN namespace and returns them."""
    if lab.lan is None:
        raise ValueError("this lab has no LAN (build it with lan=True)")
    start = len(lab.lan_clients)
    new = [FIRST_LAN_CLIENT + k for k in range(start, start + n)]
    if new and new[-1] >= LAN_PREFIX.broadcast_address:
        raise ValueError(f"{start + n} LAN clients do not fit in {LAN_PREFIX}")
    with _iproute(lab.lan) as ipr:
        index = _index(ipr, LAN_IF)
        for address in new:
            _add_address(ipr, index, IPv4Interface(f"{address}/{LAN_PREFIX.prefixlen}"))
    lab.lan_clients.extend(new)
    return new


def save_lab(lab: Lab) -> Path:
    """Writes the lab's state as JSON in its workdir (for `ecmpd lab down` elsewhere)."""
    path = lab.workdir / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_to_json(lab), indent=2) + "\n", encoding="utf-8")
    return path


def load_lab(path: Path) -> Lab:
    """Reads a lab saved by save_lab; path is the state file or its workdir."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    return _from_json(json.loads(path.read_text(encoding="utf-8")))


def _wire(lab: Lab, *, shaped: bool) -> None:
    """Creates links, addresses, routes and qdiscs in the lab's (empty) namespaces."""
    forwarders = {lab.internet, *(isp.ns for isp in lab.isps)}
    for name in lab.namespaces():
        # Before any link exists, so new interfaces inherit the defaults too.
        values = dict(FORWARDER_SYSCTLS) if name in forwarders else {}
        if lab.ipv6:
            values |= IPV6_LAB_SYSCTLS
            values |= FORWARDER_SYSCTLS6 if name in forwarders else {}
        if values:
            netns.write_sysctls(name, values)
    with contextlib.ExitStack() as stack:
        ipr = {name: stack.enter_context(_iproute(name)) for name in lab.namespaces()}
        for handle in ipr.values():
            handle.link("set", index=LOOPBACK_IFINDEX, state="up")
        _wire_internet(lab, ipr[lab.internet])
        for i, isp in enumerate(lab.isps):
            _wire_isp(lab, i, isp, ipr[lab.router], ipr[isp.ns], ipr[lab.internet], shaped)
        if lab.lan is not None:
            _wire_lan(lab, ipr[lab.router], ipr[lab.lan], ipr[lab.internet])
            for isp in lab.isps:
                # The ISP routes its customer's LAN to it, as a real ISP would
                # for a routed prefix (used only when the router does not NAT).
                ipr[isp.ns].route("add", dst=str(LAN_PREFIX), gateway=str(isp.address.ip))
                if isp.address6 is not None:
                    _route6(ipr[isp.ns], LAN_PREFIX6, isp.address6.ip)
        _wait_operstate_up(list(ipr.values()))


@contextlib.contextmanager
def _iproute(name: str) -> Iterator[IPRoute]:
    """An rtnetlink handle in the namespace; closed after, with the raw socket beside it."""
    with netns.iproute(name) as ipr:
        try:
            yield ipr
        finally:
            release(ipr)


def _wait_operstate_up(handles: Sequence[IPRoute], timeout: float = OPERSTATE_TIMEOUT) -> None:
    """Waits until every veth in the namespaces is operationally up."""
    # Carrier-up is applied by the kernel's linkwatch (up to a second later);
    # until then a veth has no real qdisc and drops what is sent, which would
    # make the first pings or probes of a fresh lab fail at random.
    deadline = time.monotonic() + timeout
    while True:
        pending = [
            f"{h.status.get('netns')}:{link.get_attr('IFLA_IFNAME')}"
            for h in handles
            for link in h.get_links()
            if link.get_attr("IFLA_IFNAME") != "lo" and link.get_attr("IFLA_OPERSTATE") != "UP"
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"links not up after {timeout}s: {', '.join(pending)}")
        time.sleep(0.01)


def _wire_internet(lab: Lab, ipr: IPRoute) -> None:
    """Adds the server addresses in the internet namespace."""
    index = _index(ipr, SERVER_IF)
    for address in (*lab.servers, *lab.alt_servers):
        _add_address(ipr, index, IPv4Interface(f"{address}/32"))
    for address6 in lab.servers6:
        _add_address(ipr, index, IPv6Interface(f"{address6}/128"))


def _wire_isp(
    lab: Lab, i: int, isp: IspInfo, router: IPRoute, ispr: IPRoute, inet: IPRoute, shaped: bool
) -> None:
    """Links ISP i to the router and to the internet, with addresses, routes and shaping."""
    _veth(router, isp.uplink_if, UPLINK_IFINDEX + i, isp.ns, ISP_CUSTOMER_IF)
    _veth(ispr, ISP_CORE_IF, CORE_IFINDEX, lab.internet, isp.name)
    isp_side, inet_side = core_link(i)
    gateway = IPv4Interface(f"{isp.gateway}/{isp.address.network.prefixlen}")
    # Each end's addresses, both families: one interface lookup and one `up` per end.
    wan: list[IPv4Interface | IPv6Interface] = [isp.address]
    customer: list[IPv4Interface | IPv6Interface] = [gateway]
    core: list[IPv4Interface | IPv6Interface] = [isp_side]
    peer: list[IPv4Interface | IPv6Interface] = [inet_side]
    isp_side6, inet_side6 = core_link6(i)
    if isp.address6 is not None and isp.gateway6 is not None:
        wan.append(isp.address6)
        customer += [IPv6Interface(f"{isp.gateway6}/64"), LINK_LOCAL_GATEWAY6]
        core.append(isp_side6)
        peer.append(inet_side6)
    wan_index = _address_up(router, isp.uplink_if, *wan)
    customer_index = _address_up(ispr, ISP_CUSTOMER_IF, *customer)
    _address_up(ispr, ISP_CORE_IF, *core)
    _address_up(inet, isp.name, *peer)
    ispr.route("add", dst="0.0.0.0/0", gateway=str(inet_side.ip))
    inet.route("add", dst=str(customer_prefix(i)), gateway=str(isp_side.ip))
    if isp.address6 is not None:
        _route6(ispr, IPv6Network("::/0"), inet_side6.ip)
        _route6(inet, customer_prefix6(i), isp_side6.ip)
    if shaped:
        shape(router, wan_index, isp.rate_mbit)  # upload
        shape(ispr, customer_index, isp.rate_mbit)  # download


def _wire_lan(lab: Lab, router: IPRoute, lanr: IPRoute, inet: IPRoute) -> None:
    """Links the router to the LAN namespace, whose default route points at the router."""
    assert lab.lan is not None
    _veth(router, ROUTER_LAN_IF, LAN_IFINDEX, lab.lan, LAN_IF)
    _address_up(router, ROUTER_LAN_IF, LAN_ROUTER, *([LAN_ROUTER6] if lab.ipv6 else []))
    _address_up(lanr, LAN_IF, LAN_HOST, *([LAN_HOST6] if lab.ipv6 else []))
    lanr.route("add", dst="0.0.0.0/0", gateway=str(LAN_ROUTER.ip))
    # Without NAT the internet needs one way back to the LAN; the first ISP it is.
    inet.route("add", dst=str(LAN_PREFIX), gateway=str(core_link(0)[0].ip))
    if lab.ipv6:
        _route6(lanr, IPv6Network("::/0"), LAN_ROUTER6.ip)
        # ISP a delegated the LAN's prefix: the internet routes it back through ISP a.
        _route6(inet, LAN_PREFIX6, core_link6(0)[0].ip)


def _veth(ipr: IPRoute, ifname: str, index: int, peer_ns: str, peer_ifname: str) -> None:
    """Creates a veth (this end at ifindex index) with its peer created in peer_ns."""
    # Both ends are born in their own namespaces: no interface ever appears
    # in the root namespace, not even for a moment. The explicit ifindex keeps
    # it different from the peer's (fresh namespaces all count from 2): with
    # equal indexes the kernel treats carrier-up as non-urgent and delays it
    # by up to a second (linkwatch_urgent_event), per link.
    with netns.netns_fd(peer_ns) as fd:
        ipr.link(
            "add",
            ifname=ifname,
            index=index,
            kind="veth",
            peer={"ifname": peer_ifname, "net_ns_fd": fd},
        )


def _address_up(ipr: IPRoute, ifname: str, *addresses: IPv4Interface | IPv6Interface) -> int:
    """Adds addresses to an interface, sets it up and returns its ifindex."""
    index = _index(ipr, ifname)
    for address in addresses:
        _add_address(ipr, index, address)
    ipr.link("set", index=index, state="up")
    return index


def _add_address(ipr: IPRoute, index: int, address: IPv4Interface | IPv6Interface) -> None:
    """Adds one address to the interface at index (`ip address add`)."""
    # Raw RTM_NEWADDR: pyroute2 spends ~0.3 ms a request in its asyncio loop, ten times
    # the kernel's work, and a dual-stack lab adds dozens of addresses.
    # nodad: usable at once, whatever the namespace's accept_dad says.
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    flags = IFA_F_NODAD if address.version == 6 else 0
    packed = address.ip.packed
    body = IFADDRMSG.pack(family, address.network.prefixlen, flags, 0, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    netlink_for(ipr).request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def _route6(ipr: IPRoute, dst: IPv6Network, gateway: IPv6Address) -> None:
    """Adds an IPv6 route via a gateway in the handle's namespace."""
    ipr.route("add", family=socket.AF_INET6, dst=str(dst), gateway=str(gateway))


def _index(ipr: IPRoute, ifname: str) -> int:
    """Returns the ifindex of an interface in the handle's namespace."""
    # One RTM_GETLINK by name on the raw socket beside the handle, for the reason
    # _add_address gives (pyroute2's link_lookup dumps every link first).
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, ifname)
    try:
        answers = netlink_for(ipr).request(RTM_GETLINK, 0, body)
    except NetlinkError as exc:
        if exc.errno != errno.ENODEV:
            raise
        answers = []
    if not answers:
        raise LookupError(f"no interface {ifname!r} in {ipr.status.get('netns')}")
    return int(IFINFOMSG.unpack_from(answers[0][1])[2])


def _set_isp_link(lab: Lab, name: str, state: str) -> None:
    """Sets the ISP's customer-facing interface up or down."""
    with _iproute(lab.isp(name).ns) as ipr:
        ipr.link("set", index=_index(ipr, ISP_CUSTOMER_IF), state=state)


def _remove_all(names: Iterator[str] | Sequence[str]) -> None:
    """Removes namespaces, carrying on past errors (and Ctrl-C) and raising the first."""
    pending: BaseException | None = None
    for name in names:
        try:
            netns.remove_netns(name)
        except BaseException as exc:  # finish the rest before reporting
            pending = pending or exc
    if pending is not None:
        raise pending


def _to_json(lab: Lab) -> dict[str, Any]:
    """Returns the lab as JSON-ready data."""
    return {
        "version": 1,
        "prefix": lab.prefix,
        "router": lab.router,
        "internet": lab.internet,
        "lan": lab.lan,
        "isps": [
            {
                "name": isp.name,
                "ns": isp.ns,
                "uplink_if": isp.uplink_if,
                "gateway": str(isp.gateway),
                "address": str(isp.address),
                "rate_mbit": isp.rate_mbit,
                "weight": isp.weight,
                "gateway6": str(isp.gateway6) if isp.gateway6 is not None else None,
                "address6": str(isp.address6) if isp.address6 is not None else None,
            }
            for isp in lab.isps
        ],
        "servers": [str(a) for a in lab.servers],
        "alt_servers": [str(a) for a in lab.alt_servers],
        "lan_clients": [str(a) for a in lab.lan_clients],
        "servers6": [str(a) for a in lab.servers6],
        "workdir": str(lab.workdir),
        "config_path": str(lab.config_path),
    }


def _from_json(data: dict[str, Any]) -> Lab:
    """Returns the Lab described by _to_json data."""
    if data.get("version") != 1:
        raise ValueError(f"unsupported lab state version {data.get('version')!r}")
    isps = [
        IspInfo(
            name=d["name"],
            ns=netns.check_name(d["ns"]),
            uplink_if=d["uplink_if"],
            gateway=IPv4Address(d["gateway"]),
            address=IPv4Interface(d["address"]),
            rate_mbit=int(d["rate_mbit"]),
            weight=int(d["weight"]),
            # Absent from labs saved before IPv6, and null in labs built without it.
            gateway6=IPv6Address(d["gateway6"]) if d.get("gateway6") else None,
            address6=IPv6Interface(d["address6"]) if d.get("address6") else None,
        )
        for d in data["isps"]
    ]
    return Lab(
        prefix=data["prefix"],
        router=netns.check_name(data["router"]),
        internet=netns.check_name(data["internet"]),
        lan=netns.check_name(data["lan"]) if data["lan"] is not None else None,
        isps=isps,
        servers=[IPv4Address(a) for a in data["servers"]],
        alt_servers=[IPv4Address(a) for a in data["alt_servers"]],
        lan_clients=[IPv4Address(a) for a in data["lan_clients"]],
        servers6=[IPv6Address(a) for a in data.get("servers6", [])],
        workdir=Path(data["workdir"]),
        config_path=Path(data["config_path"]),
    )

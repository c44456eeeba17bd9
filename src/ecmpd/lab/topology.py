"""The lab made real: its namespaces created and wired (veths, addresses, routes, shaping),
its config and state written, and all of it removed again (lab.layout plans it)."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from ecmpd.kernel.transport import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NetlinkError,
    attr,
    attr_str,
    netlink_for,
    release,
)
from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import (
    CORE_IFINDEX,
    FIRST_LAN_CLIENT,
    ISP_CORE_IF,
    ISP_CUSTOMER_IF,
    LAN_HOST,
    LAN_HOST6,
    LAN_IF,
    LAN_IFINDEX,
    LAN_PREFIX,
    LAN_PREFIX6,
    LAN_ROUTER,
    LAN_ROUTER6,
    LINK_LOCAL_GATEWAY6,
    ROUTER_LAN_IF,
    SERVER_IF,
    STATE_FILE,
    UPLINK_IFINDEX,
    IspInfo,
    Lab,
    core_link,
    core_link6,
    customer_prefix,
    customer_prefix6,
    from_json,
    plan_lab,
    to_json,
)
from ecmpd.lab.shaping import shape

IFA_F_NODAD = 0x02  # linux/if_addr.h
IFA_ADDRESS, IFA_LOCAL = 1, 2  # linux/if_addr.h
IFLA_IFNAME = 3  # linux/if_link.h
RTM_GETLINK, RTM_NEWADDR = 18, 20  # linux/rtnetlink.h
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, ifindex
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, ifindex, flags, change
LOOPBACK_IFINDEX = 1  # lo, in every namespace (include/net/flow.h)
OPERSTATE_TIMEOUT = 5.0
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
    path.write_text(json.dumps(to_json(lab), indent=2) + "\n", encoding="utf-8")
    return path


def load_lab(path: Path) -> Lab:
    """Reads a lab saved by save_lab; path is the state file or its workdir."""
    path = Path(path)
    if path.is_dir():
        path = path / STATE_FILE
    return from_json(json.loads(path.read_text(encoding="utf-8")))


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
    _address_up(router, isp.uplink_if, *wan)
    customer_index = _address_up(ispr, ISP_CUSTOMER_IF, *customer)
    core_index = _address_up(ispr, ISP_CORE_IF, *core)
    _address_up(inet, isp.name, *peer)
    ispr.route("add", dst="0.0.0.0/0", gateway=str(inet_side.ip))
    inet.route("add", dst=str(customer_prefix(i)), gateway=str(isp_side.ip))
    if isp.address6 is not None:
        _route6(ispr, IPv6Network("::/0"), inet_side6.ip)
        _route6(inet, customer_prefix6(i), isp_side6.ip)
    if shaped:
        # The line's capacity is the ISP's side of it, as a modem's is: uploads queue on
        # the way from the ISP to the internet, downloads on the way to the router. The
        # router's own interface keeps the kernel's default qdisc, free for an uplink's
        # `queue` (ecmpd.queues), which moves the upload queue into the router.
        shape(ispr, core_index, isp.rate_mbit)  # upload
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

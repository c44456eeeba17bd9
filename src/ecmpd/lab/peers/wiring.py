"""Real peers placed on a lab's ISPs: a DHCP line, router advertisements, a VPN tunnel.

The lab's router has a static address on every uplink; these turn one ISP's line
into what a user's machine has: an address and default route from dnsmasq via dhcpcd,
an IPv6 default router from radvd, or an OpenVPN `tun` uplink through the ISP.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

from ecmpd.lab import netns
from ecmpd.lab.layout import ISP_CUSTOMER_IF, Lab, core_link
from ecmpd.lab.peers.dhcpcd import DhcpClient
from ecmpd.lab.peers.dnsmasq import DhcpPool, DhcpServer
from ecmpd.lab.peers.openvpn import TunnelClient, TunnelPlan, TunnelServer, make_identity
from ecmpd.lab.peers.radvd import Advertisement, RouterAdvertiser

# Leases come from the top of the ISP's /24, far from the lab's static .1/.2 and
# from second routers a test adds (.254).
POOL_FIRST, POOL_LAST = 50, 99
TUNNEL_PREFIX = IPv4Network("10.240.0.0/16")  # 10.240.<i+1>.1 (ISP) <-> .2 (router)


def dhcp_pool(lab: Lab, isp: str) -> DhcpPool:
    """The pool an ISP's DHCP server hands out on the router's line."""
    info = lab.isp(isp)
    network = info.address.network
    return DhcpPool(network, network[POOL_FIRST], network[POOL_LAST], info.gateway)


def dhcp_server(lab: Lab, isp: str, workdir: Path) -> DhcpServer:
    """dnsmasq on the ISP's customer port (not started: use it as a context manager)."""
    return DhcpServer(lab.ns(isp), ISP_CUSTOMER_IF, dhcp_pool(lab, isp), workdir)


def dhcp_client(lab: Lab, isp: str, workdir: Path) -> DhcpClient:
    """dhcpcd on the router's line to the ISP, whose static IPv4 address is removed first."""
    info = lab.isp(isp)
    netns.run_in(
        lab.router,
        ["ip", "-4", "addr", "flush", "dev", info.uplink_if],
        check=True,
        capture_output=True,
    )
    return DhcpClient(lab.router, info.uplink_if, workdir)


def router_advertiser(
    lab: Lab, isp: str, source: IPv6Address, workdir: Path, lifetime_s: int = 600
) -> RouterAdvertiser:
    """radvd on the ISP's customer port announcing `source` (added to the port if new)."""
    ns = lab.ns(isp)
    netns.run_in(
        ns,
        ["ip", "-6", "addr", "replace", f"{source}/64", "dev", ISP_CUSTOMER_IF, "nodad"],
        check=True,
        capture_output=True,
    )
    ad = Advertisement(source, lifetime_s)
    return RouterAdvertiser(ns, ISP_CUSTOMER_IF, ad, workdir)


@dataclass(frozen=True)
class Tunnel:
    """Both ends of an OpenVPN tunnel through one ISP (neither started)."""

    plan: TunnelPlan
    server: TunnelServer
    client: TunnelClient


def tunnel_plan(lab: Lab, isp: str, device: str = "tun0") -> TunnelPlan:
    """Addresses of a tunnel through the ISP: outer the ISP's gateway, inner a /30 pair."""
    i = lab.isps.index(lab.isp(isp))
    base = TUNNEL_PREFIX.network_address + ((i + 1) << 8)
    return TunnelPlan(lab.isp(isp).gateway, IPv4Address(base + 1), IPv4Address(base + 2), device)


def tunnel(
    lab: Lab, isp: str, workdir: Path, device: str = "tun0", persist_tun: bool = False
) -> Tunnel:
    """An OpenVPN tunnel from the router to a server in the ISP, routed back by the internet.

    The internet learns to reach the router's inner address through the ISP, as it
    does for the ISP's customer prefix; the ISP reaches it through its tun device.
    """
    plan = tunnel_plan(lab, isp, device)
    i = lab.isps.index(lab.isp(isp))
    isp_side, _ = core_link(i)
    netns.run_in(
        lab.internet,
        ["ip", "route", "replace", f"{plan.client_inner}/32", "via", str(isp_side.ip)],
        check=True,
        capture_output=True,
    )
    keys = workdir / f"openvpn-keys-{device}"
    keys.mkdir(parents=True)
    keys.chmod(0o700)
    server_id, client_id = make_identity(keys, "server"), make_identity(keys, "client")
    return Tunnel(
        plan,
        TunnelServer(lab.ns(isp), plan, server_id, client_id, workdir),
        TunnelClient(lab.router, plan, client_id, server_id, workdir, persist_tun),
    )

"""The scale-out lab made real: namespaces and links (lab.edgelayout), FRR and ecmpd in them.

Links are made with `ip -n NS -batch -` (argv lists, no shell): every veth is born with
its two ends in their own namespaces, never in the root one. `EdgeRouters` starts, per
edge, FRR (the config `ecmpd export --format frr` writes) and `ecmpd run`, and on the
core FRR and (unless left out) ecmpd; it stops all of them on exit, and destroy_edge_lab
removes the namespaces (which ends any straggler).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import yaml

from ecmpd.config import load_config
from ecmpd.export.frr import FrrOptions, render
from ecmpd.kernel.routemsg import scan_routes
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon
from ecmpd.lab.edgelayout import (
    CORE_ASN,
    CORE_LAN_IF,
    EDGE_CORE_IF,
    LAN,
    LAN6,
    LAN_IF,
    Edge,
    EdgeLab,
    core_config,
    edge_config,
    plan_edge_lab,
)
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import core_link6
from ecmpd.lab.peers.frr import FrrRouter
from ecmpd.lab.running import Running
from ecmpd.lab.topology import FORWARDER_SYSCTLS, FORWARDER_SYSCTLS6, IPV6_LAB_SYSCTLS
from ecmpd.model import Family, IPAddress

BFD_MS, BFD_MULTIPLIER = 100, 3
LINKS_UP_TIMEOUT = 5.0


def _batch(ns: str, commands: Sequence[str]) -> None:
    """Runs `ip` commands in a namespace in one process (`ip -n NS -batch -`)."""
    subprocess.run(
        ["ip", "-n", ns, "-batch", "-"],
        input="\n".join(commands) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )


def _veth(ns: str, ifname: str, index: int, peer_ns: str, peer_ifname: str) -> str:
    # An explicit ifindex unlike the peer's: equal ones delay carrier by up to 1 s.
    return f"link add {ifname} index {index} type veth peer name {peer_ifname} netns {peer_ns}"


def build_edge_lab(edges: int, prefix: str, workdir: Path) -> EdgeLab:
    """Creates the namespaces and links of plan_edge_lab; removes them again on failure."""
    lab = plan_edge_lab(edges, prefix, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for name in lab.namespaces():
            netns.create_netns(name)
            values = {**IPV6_LAB_SYSCTLS, **FORWARDER_SYSCTLS, **FORWARDER_SYSCTLS6}
            if name == lab.lan:
                values = dict(IPV6_LAB_SYSCTLS)
            netns.write_sysctls(name, values)
        _wire(lab)
        for edge in lab.edges:
            load_nft(edge.ns, nat66_ruleset(edge))
        _wait_links_up(lab)
    except BaseException:
        destroy_edge_lab(lab)
        raise
    return lab


def destroy_edge_lab(lab: EdgeLab) -> None:
    """Removes every namespace of the lab (ending the processes in them)."""
    for name in reversed(lab.namespaces()):
        with contextlib.suppress(OSError):
            netns.remove_netns(name)


@contextlib.contextmanager
def edge_lab(edges: int, prefix: str, workdir: Path) -> Iterator[EdgeLab]:
    """The lab for a with block: always removed."""
    lab = build_edge_lab(edges, prefix, workdir)
    try:
        yield lab
    finally:
        destroy_edge_lab(lab)


def _wire(lab: EdgeLab) -> None:
    (host, router, prefix), (host6, router6, prefix6) = LAN, LAN6
    cmds: dict[str, list[str]] = {name: ["link set lo up"] for name in lab.namespaces()}
    cmds[lab.core] += [
        _veth(lab.core, CORE_LAN_IF, 150, lab.lan, LAN_IF),
        f"address add {router} dev {CORE_LAN_IF}",
        f"address add {router6} dev {CORE_LAN_IF} nodad",
        f"link set {CORE_LAN_IF} up",
    ]
    cmds[lab.lan] += [
        f"address add {host} dev {LAN_IF}",
        f"address add {host6} dev {LAN_IF} nodad",
        *(f"address add {c}/{prefix.prefixlen} dev {LAN_IF}" for c in lab.clients),
        *(f"address add {c}/{prefix6.prefixlen} dev {LAN_IF} nodad" for c in lab.clients6),
        f"link set {LAN_IF} up",
        f"route add default via {router.ip}",
        f"route add ::/0 via {router6.ip}",
    ]
    for address in lab.servers:
        cmds[lab.internet].append(f"address add {address}/32 dev lo")
    for address6 in lab.servers6:
        cmds[lab.internet].append(f"address add {address6}/128 dev lo")
    for k, edge in enumerate(lab.edges, start=1):
        _wire_edge(lab, k, edge, cmds)
    # Veths first (they create the peers), then addresses and routes, per namespace.
    order = [
        lab.core,
        lab.switch,
        *(e.ns for e in lab.edges),
        *(i.ns for e in lab.edges for i in e.isps),
    ]
    order += [n for n in lab.namespaces() if n not in order]
    for name in order:
        _batch(name, [c for c in cmds[name] if c.startswith("link add")])
    for name in order:
        _batch(name, [c for c in cmds[name] if not c.startswith("link add")])


def _wire_edge(lab: EdgeLab, k: int, edge: Edge, cmds: dict[str, list[str]]) -> None:
    """Core <-> switch bridge <-> edge, the edge's ISPs, and their way to the internet."""
    sw, bridge = lab.switch, f"br{k}"
    cmds[lab.core] += [
        _veth(lab.core, edge.core_if, 200 + k, sw, f"c{k}"),
        f"address add {edge.core_address} dev {edge.core_if}",
        f"address add {edge.core_address6} dev {edge.core_if} nodad",
        f"link set {edge.core_if} up",
    ]
    cmds[sw] += [
        _veth(sw, f"e{k}", 300 + k, edge.ns, EDGE_CORE_IF),
        f"link add {bridge} type bridge",
        f"link set {bridge} up",
        f"link set c{k} master {bridge}",
        f"link set e{k} master {bridge}",
        f"link set c{k} up",
        f"link set e{k} up",
    ]
    cmds[edge.ns] += [
        f"address add {edge.address} dev {EDGE_CORE_IF}",
        f"address add {edge.address6} dev {EDGE_CORE_IF} nodad",
        f"link set {EDGE_CORE_IF} up",
        f"route add {LAN[2]} via {edge.core_address.ip}",
        f"route add {LAN6[2]} via {edge.core_address6.ip}",
    ]
    for isp in edge.isps:
        isp_side6, inet_side6 = core_link6(isp.index)
        cmds[edge.ns] += [
            _veth(edge.ns, isp.uplink_if, 101 + isp.index, isp.ns, "cust0"),
            f"address add {isp.address} dev {isp.uplink_if}",
            f"address add {isp.address6} dev {isp.uplink_if} nodad",
            f"link set {isp.uplink_if} up",
        ]
        cmds[isp.ns] += [
            _veth(isp.ns, "core0", 200, lab.internet, isp.name),
            f"address add {isp.gateway}/24 dev cust0",
            f"address add {isp.gateway6}/64 dev cust0 nodad",
            f"address add {isp.core} dev core0",
            f"address add {isp_side6} dev core0 nodad",
            "link set cust0 up",
            "link set core0 up",
            f"route add default via {isp.peer.ip}",
            f"route add ::/0 via {inet_side6.ip}",
        ]
        cmds[lab.internet] += [
            f"address add {isp.peer} dev {isp.name}",
            f"address add {inet_side6} dev {isp.name} nodad",
            f"link set {isp.name} up",
            f"route add {isp.address.network} via {isp.core.ip}",
            f"route add {isp.address6.network} via {isp_side6.ip}",
        ]


def nat66_ruleset(edge: Edge) -> str:
    """The edge's own NAT66 (the lab's, not ecmpd's: ecmpd translates IPv4 only): what it
    forwards (the LAN's IPv6, the core's probes) leaves each ISP with its address there."""
    wans = ", ".join(f'"{isp.uplink_if}"' for isp in edge.isps)
    return (
        "table ip6 lab_nat66 {\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f"        oifname {{ {wans} }} masquerade\n"
        "    }\n"
        "}\n"
    )


def _wait_links_up(lab: EdgeLab) -> None:
    """Waits until every veth is operationally up (carrier comes by linkwatch)."""
    deadline = time.monotonic() + LINKS_UP_TIMEOUT
    for name in lab.namespaces():
        while True:
            out = netns.run_in(name, ["ip", "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
            if all("state UP" in line for line in out.splitlines()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"links in {name} not up: {out}")
            time.sleep(0.02)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """An ecmpd YAML config file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def frr_config(config_path: Path, asn: int, neighbors: Sequence[str]) -> str:
    """What `ecmpd export --format frr` writes for this router."""
    options = FrrOptions(asn, tuple(ip_address(n) for n in neighbors), BFD_MS, BFD_MULTIPLIER)
    return render(load_config(config_path), options)


def _neighbors(edge: Edge, core: bool) -> list[str]:
    pair = (edge.address, edge.address6) if core else (edge.core_address, edge.core_address6)
    return [str(a.ip) for a in pair]


class EdgeRouters(Running):
    """FRR and ecmpd on every edge, FRR and (core_ecmpd) ecmpd on the core."""

    def __init__(
        self,
        lab: EdgeLab,
        *,
        core_ecmpd: bool = True,
        edge_check: dict[str, Any] | None = None,
        core_check: dict[str, Any] | None = None,
    ) -> None:
        self.lab = lab
        self.frr: dict[str, FrrRouter] = {}
        self.ecmpd: dict[str, LabDaemon] = {}
        self.configs: dict[str, Path] = {}
        for edge in lab.edges:
            path = write_config(
                lab.workdir / f"{edge.name}.yaml", edge_config(lab, edge, edge_check)
            )
            self.configs[edge.name] = path
        core = write_config(lab.workdir / "core.yaml", core_config(lab, core_check))
        self.configs["core"] = core
        self.core_ecmpd = core_ecmpd

    def start(self) -> None:
        lab = self.lab
        core_neighbors = [n for e in lab.edges for n in _neighbors(e, core=True)]
        self._start(lab.core, "core", frr_config(self.configs["core"], CORE_ASN, core_neighbors))
        for edge in lab.edges:
            text = frr_config(self.configs[edge.name], edge.asn, _neighbors(edge, core=False))
            self._start(edge.ns, edge.name, text)
            self._daemon(edge.ns, edge.name)
        if self.core_ecmpd:
            self._daemon(lab.core, "core")

    def _start(self, ns: str, name: str, text: str) -> None:
        router = FrrRouter(ns, text, name)
        self.frr[name] = router
        router.start()

    def _daemon(self, ns: str, name: str) -> None:
        daemon = LabDaemon(ns, self.configs[name], self.lab.workdir / name / "run",
                           self.lab.workdir / name / "ecmpd.log")  # fmt: skip
        self.ecmpd[name] = daemon
        daemon.start()

    def kill_edge(self, name: str) -> None:
        """The edge dies: its link to the switch down, then ecmpd and FRR SIGKILLed.

        The link first: a killed bgpd's socket would otherwise still send its FIN, and
        the core would hear of the death instead of having to notice it (BFD).
        """
        edge = self.lab.edge(name)
        _batch(edge.ns, [f"link set {EDGE_CORE_IF} down"])
        if name in self.ecmpd:
            self.ecmpd[name].stop(signal.SIGKILL, timeout=2)
        self.frr[name].kill()

    def stop(self) -> None:
        for daemon in reversed(list(self.ecmpd.values())):
            daemon.stop()
        for router in reversed(list(self.frr.values())):
            router.stop()
        self.ecmpd.clear()
        self.frr.clear()


def bgp_gateways(sock: NetlinkSocket, family: Family = Family.INET) -> set[IPAddress]:
    """The gateways of the BGP default route in the main table (zebra's multipath route)
    of the namespace the socket was opened in: one per edge the core balances over."""
    gateways: set[IPAddress] = set()
    for route in scan_routes(sock, int(family), defaults=False, bgp=True).bgp_defaults:
        hops = [route.gateway, *(gateway for _, gateway in route.nexthops)]
        gateways.update(g for g in hops if g is not None)
    return gateways


def bgp_paths(lab: EdgeLab, family: Family = Family.INET) -> set[IPAddress]:
    """The gateways of the core's BGP default route in its FIB, read once."""
    sock = netns.call_in(lab.core, NetlinkSocket.open)
    try:
        return bgp_gateways(sock, family)
    finally:
        sock.close()

"""explain agrees with `ip route get` flow by flow, and new flows split by weight."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest

from ecmpd.explain import Flow
from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.measure import kernel_split, random_flows, shares
from ecmpd.lab.topology import add_lan_clients, lab_session
from tests.integration.fixtures.kernelstate import ecmpd, explain_all, ip_route_get
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

PIN_C = IPv4Network("203.0.113.0/28")
PINNED_CLIENT = IPv4Address("10.200.1.5")
RULES = [
    {"name": "local", "action": "bypass"},
    {"name": "pin-c", "to": str(PIN_C), "action": "pin", "uplink": "isp-c"},
    {"name": "vpn-client", "from": f"{PINNED_CLIENT}/32", "action": "pin", "uplink": "isp-a"},
    {"name": "everything-else", "action": "balance"},
]


@dataclass(frozen=True)
class Applied:
    lab: Lab
    config: Path


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    """A lab with a LAN, forwarding on, and ecmpd applied with pins (shared by the module)."""
    require_netns()
    workdir = tmp_path_factory.mktemp("lab")
    with lab_session(workdir=workdir, isps=3, lan=True, prefix=next_lab_prefix()) as lab:
        add_lan_clients(lab, 20)
        # Host mode here: forwarding is switched on by hand to look up forwarded flows.
        netns.write_sysctls(lab.router, {"net.ipv4.ip_forward": "1"})
        config = write_lab_config(
            lab, workdir / "pins.yaml", extra={"mode": "host", "rules": RULES}
        )
        r = ecmpd(lab.router, config, workdir / "run", "apply")
        assert r.returncode == 0, r.stderr
        yield Applied(lab, config)


def _flows(lab: Lab, n: int, seed: int = 7) -> list[Flow]:
    rng = random.Random(seed)
    sources = [isp.address.ip for isp in lab.isps]
    dsts = [*lab.servers, *lab.alt_servers, *(isp.gateway for isp in lab.isps)]
    flows = []
    for _ in range(n):
        kind = rng.random()
        src: IPv4Address | None = None
        iif = None
        if kind < 0.2:
            src = rng.choice(sources)
        elif kind < 0.45:
            src, iif = rng.choice([*lab.lan_clients, PINNED_CLIENT]), "lan0"
        flows.append(
            Flow(
                dst=rng.choice(dsts),
                src=src,
                iif=iif,
                ip_proto=rng.choice((6, 17)),
                sport=rng.randint(1024, 65535),
                dport=rng.randint(1, 65535),
            )
        )
    return flows


def _expected_rule(lab: Lab, f: Flow) -> tuple[str, str]:
    """(rule, uplink) by the config's semantics, independent of ecmpd's code."""
    by_source: dict[IPv4Address | IPv6Address | None, str] = {
        isp.address.ip: isp.name for isp in lab.isps
    }
    connected = {IPv4Network(f"{isp.gateway}/24", strict=False): isp.name for isp in lab.isps}
    if f.src in by_source and f.iif is None:
        return f"reply:{by_source[f.src]}", by_source[f.src]
    for net, name in connected.items():
        if f.dst in net:
            return "local", name
    if f.dst in PIN_C:
        return "pin-c", "isp-c"
    if f.src == PINNED_CLIENT:
        return "vpn-client", "isp-a"
    return "everything-else", "*"


def test_explain_agrees_with_ip_route_get_for_every_flow(applied: Applied) -> None:
    flows = _flows(applied.lab, 1200)
    kernel = ip_route_get(applied.lab.router, flows)
    explained = explain_all(applied.lab.router, applied.config, flows)
    forwarded = 0
    for flow, ip, ours in zip(flows, kernel, explained, strict=True):
        assert (ours["interface"], ours["gateway"]) == (ip["dev"], ip.get("gateway")), flow
        rule, uplink = _expected_rule(applied.lab, flow)
        assert ours["rule"] == rule, flow
        if uplink != "*":
            assert ours["uplink"] == uplink, flow
        forwarded += flow.iif is not None
    assert forwarded > 200
    assert {e["uplink"] for e in explained} == {"isp-a", "isp-b", "isp-c"}


def test_explain_cli_names_rule_and_uplink(applied: Applied, tmp_path: Path) -> None:
    lab = applied.lab
    r = ecmpd(
        lab.router,
        applied.config,
        tmp_path,
        "explain",
        "203.0.113.3",
        "--proto",
        "tcp",
        "--sport",
        "40000",
        "--dport",
        "443",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["uplink"], doc["rule"], doc["interface"]) == ("isp-c", "pin-c", "wan-c")
    human = ecmpd(
        lab.router,
        applied.config,
        tmp_path,
        "explain",
        "198.51.100.9",
        "--from",
        str(PINNED_CLIENT),
        "--iif",
        "lan0",
        "--proto",
        "udp",
        "--sport",
        "5000",
        "--dport",
        "53",
    )
    assert "leaves by isp-a" in human.stdout and "rule vpn-client" in human.stdout


def test_new_flows_split_by_weight_within_two_points(applied: Applied) -> None:
    lab = applied.lab
    # 20000 flows: the sampling error alone (about 0.35 pp) stays well inside the bound.
    counts = kernel_split(lab, random_flows(lab, 20000, seed=3))
    total_weight = sum(isp.weight for isp in lab.isps)
    measured = shares(counts, [isp.name for isp in lab.isps])
    for isp in lab.isps:
        assert abs(measured[isp.name] - isp.weight / total_weight) < 0.02, (isp, measured)

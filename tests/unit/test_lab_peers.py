"""The lab peers' pure parts: configs they write, files they read, command lines."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest

from ecmpd.lab.peers import mounts
from ecmpd.lab.peers.dnsmasq import DhcpPool, DhcpServer, Lease, parse_leases
from ecmpd.lab.peers.radvd import Advertisement, radvd_config

NET = IPv4Network("10.2.0.0/24")


def test_dnsmasq_lease_file() -> None:
    text = (
        "1796406535 6a:10:b3:55:f3:47 10.2.0.68 * *\n"
        "1796406600 02:00:00:00:00:01 10.2.0.69 host 01:02:00:00:00:00:01\n"
        "\n"
    )
    assert parse_leases(text) == [
        Lease(1796406535, "6a:10:b3:55:f3:47", IPv4Address("10.2.0.68")),
        Lease(1796406600, "02:00:00:00:00:01", IPv4Address("10.2.0.69")),
    ]


@pytest.mark.parametrize(
    ("first", "last", "router", "lease_s"),
    [
        ("10.3.0.50", "10.2.0.99", "10.2.0.1", 120),
        ("10.2.0.50", "10.2.0.99", "10.9.0.1", 120),
        ("10.2.0.50", "10.2.0.99", "10.2.0.1", 60),
    ],
)
def test_dhcp_pool_refuses_what_dnsmasq_would_not_serve(
    first: str, last: str, router: str, lease_s: int
) -> None:
    with pytest.raises(ValueError):
        DhcpPool(NET, IPv4Address(first), IPv4Address(last), IPv4Address(router), lease_s)


def test_dnsmasq_never_reads_the_hosts_config_and_keeps_its_files_private(
    tmp_path: Path,
) -> None:
    pool = DhcpPool(NET, NET[50], NET[99], NET[1])
    server = DhcpServer("ecmpd-x-isp-b", "cust0", pool, tmp_path)
    argv = server.argv()
    assert "--conf-file=/dev/null" in argv and "--port=0" in argv
    assert "--dhcp-range=10.2.0.50,10.2.0.99,255.255.255.0,120" in argv
    private = ("--dhcp-leasefile=", "--pid-file=", "--dhcp-optsfile=")
    files = [a.partition("=")[2] for a in argv if a.startswith(private)]
    assert len(files) == 3
    assert all(Path(f).is_relative_to(tmp_path) for f in files)
    assert server.options_file.read_text() == "option:router,10.2.0.1\n"


def test_radvd_config_pins_the_router_address() -> None:
    ad = Advertisement(IPv6Address("fe80::2"), lifetime_s=0)
    assert radvd_config("cust0", ad) == (
        "interface cust0 {\n"
        "  AdvSendAdvert on;\n"
        "  MinRtrAdvInterval 3;\n"
        "  MaxRtrAdvInterval 4;\n"
        "  AdvDefaultLifetime 0;\n"
        "  AdvRASrcAddress { fe80::2; };\n"
        "};\n"
    )
    with pytest.raises(ValueError, match="link-local"):
        Advertisement(IPv6Address("2001:db8::1"))


def test_mounts_launcher_round_trips_its_binds() -> None:
    binds = [(Path("/tmp/x/db"), Path("/var/lib/dhcpcd")), (Path("/tmp/x/run"), Path("/run"))]
    argv = mounts.launch_argv(binds, ["dhcpcd", "-B", "wan-b"])
    assert argv[:3] == [sys.executable, "-m", "ecmpd.lab.peers.mounts"]
    assert argv[-4:] == ["--", "dhcpcd", "-B", "wan-b"]
    assert argv[3:-4] == ["--bind", "/tmp/x/db:/var/lib/dhcpcd", "--bind", "/tmp/x/run:/run"]

"""One family's probing: its targets, binding, fresh tracker and report (health/probing.py)."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv4Interface, IPv6Address

import pytest

from ecmpd.config import UplinkConfig, parse_config
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.fsm import HealthState
from ecmpd.health.probing import PLACEHOLDER, binding, check_targets, new_family, probed_alike
from ecmpd.model import Family

CONFIG = parse_config(
    textwrap.dedent(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: dhcp}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, check: {targets: [192.0.2.9]}}
          - {name: vpn, interface: tun0}
        """
    ),
    "ecmpd.yaml",
)
LEASE = InterfaceFacts(
    "wan-a", 7, addresses=(IPv4Interface("10.1.0.2/24"),), dhcp_gateway=IPv4Address("10.1.0.1")
)
FACTS = KernelFacts(interfaces={"wan-a": LEASE})


@pytest.mark.parametrize(
    ("extra", "alike"),
    [
        ("weight: 3", True),
        ("on_failure: wait, mptcp: false", True),
        ("data_cap: 20GB/month, failback: keep, nat: false", True),
        ("check: {interval: 0.5}", False),
        ("tier: 2", False),
        ("metered: true", False),
        ("table: 150", False),
        ("source: 10.2.0.9", False),
    ],
)
def test_a_reload_keeps_probing_when_only_the_uplinks_use_changes(extra: str, alike: bool) -> None:
    def isp_b(extra: str) -> UplinkConfig:
        text = f"""
            uplinks:
              - {{name: isp-a, interface: wan-a, gateway: dhcp}}
              - {{name: isp-b, interface: wan-b, gateway: 10.2.0.1{extra}}}
        """
        return parse_config(textwrap.dedent(text), "ecmpd.yaml").uplink("isp-b")

    assert probed_alike(isp_b(""), isp_b(", " + extra)) is alike
    assert probed_alike(isp_b(""), isp_b(""))


def test_targets_are_the_checks_of_the_family_else_the_gateway_the_kernel_gave() -> None:
    assert check_targets(CONFIG.uplink("isp-a"), FACTS, Family.INET) == [IPv4Address("10.1.0.1")]
    assert check_targets(CONFIG.uplink("isp-a"), KernelFacts(), Family.INET) == []  # no lease
    assert check_targets(CONFIG.uplink("isp-b"), FACTS, Family.INET) == [IPv4Address("192.0.2.9")]
    assert check_targets(CONFIG.uplink("isp-b"), FACTS, Family.INET6) == []


def test_a_prober_binds_to_the_interface_index_and_its_source() -> None:
    assert binding(CONFIG.uplink("isp-a"), FACTS, Family.INET) == (7, IPv4Address("10.1.0.2"))
    assert binding(CONFIG.uplink("isp-a"), KernelFacts(), Family.INET) == (None, None)


def test_a_fresh_family_is_unknown_held_while_unusable_and_reports_no_targets_unprobed() -> None:
    fam = new_family(CONFIG.uplink("isp-a"), FACTS, Family.INET, 5.0)
    assert (fam.tracker.state, fam.hold, fam.in_service) == (HealthState.UNKNOWN, None, True)
    held = new_family(CONFIG.uplink("vpn"), FACTS, Family.INET, 5.0)
    assert held.hold == "no interface" and not held.in_service
    # Nothing to probe: the tracker has a placeholder target, the report shows none.
    assert held.targets == [] and [s.target for s in held.tracker.stats()] == [
        PLACEHOLDER[Family.INET]
    ]
    report = held.report()
    assert (report.held, report.targets, report.since) == ("no interface", (), 5.0)
    assert PLACEHOLDER[Family.INET6] == IPv6Address("::")

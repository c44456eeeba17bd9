"""Golden: `mptcp: true` + uplink health and grade in -> the exact MPTCP commands."""

from __future__ import annotations

import textwrap
from ipaddress import ip_address

import pytest

from ecmpd.config import ConfigError, check_against_kernel, parse_config
from ecmpd.desired import desired_state
from ecmpd.export.iptext import state_commands
from ecmpd.facts import KernelFacts
from ecmpd.model import Family
from ecmpd.mptcp import Degraded
from ecmpd.plan import diff
from tests.golden.fixtures import FACTS_IPV6

THREE = """
    mptcp: true
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
      - {name: isp-b, interface: wan-b, gateway: 10.2.0.1}
      - {name: isp-c, interface: wan-c, gateway6: "fe80::1", source6: "2001:db8:3::2"}
"""


def mptcp_commands(
    yaml_text: str,
    health: dict[str, bool] | None = None,
    degraded: Degraded = (),
    facts: KernelFacts = FACTS_IPV6,
) -> list[str]:
    config = parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")
    state = desired_state(config, health or {}, facts, degraded=degraded)
    return [c for c in state_commands(state) if "mptcp" in c]


def test_one_subflow_endpoint_per_uplink_and_family_and_a_limit_for_all() -> None:
    assert mptcp_commands(THREE) == [
        "sysctl -w net.mptcp.enabled=1",
        "ip mptcp limits set subflows 2",  # two uplinks carry each family
        "ip mptcp endpoint add 10.1.0.2 dev wan-a subflow",
        "ip mptcp endpoint add 10.2.0.2 dev wan-b subflow",
        "ip mptcp endpoint add 2001:db8:1::2 dev wan-a subflow",
        "ip mptcp endpoint add 2001:db8:3::2 dev wan-c subflow",
    ]


def test_an_uplink_out_of_service_has_none_and_a_degraded_one_is_backup() -> None:
    cmds = mptcp_commands(THREE, health={"isp-b": False}, degraded={("isp-a", Family.INET6)})
    assert [c for c in cmds if "endpoint" in c] == [
        "ip mptcp endpoint add 10.1.0.2 dev wan-a subflow",
        "ip mptcp endpoint add 2001:db8:1::2 dev wan-a subflow backup",
        "ip mptcp endpoint add 2001:db8:3::2 dev wan-c subflow",
    ]
    # The limit follows the config, not health: no churn while an uplink is down.
    assert "ip mptcp limits set subflows 2" in cmds


def test_opting_out_and_the_global_default() -> None:
    out = THREE.replace("gateway: 10.2.0.1}", "gateway: 10.2.0.1, mptcp: false}")
    assert [c for c in mptcp_commands(out) if "10.2.0.2" in c] == []
    assert "ip mptcp limits set subflows 2" in mptcp_commands(out)  # IPv6 still has two
    assert mptcp_commands(THREE.replace("mptcp: true", "")) == []
    only_b = THREE.replace("mptcp: true", "").replace(
        "gateway: 10.2.0.1}", "gateway: 10.2.0.1, mptcp: true}"
    )
    assert mptcp_commands(only_b) == [
        "sysctl -w net.mptcp.enabled=1",
        "ip mptcp limits set subflows 1",
        "ip mptcp endpoint add 10.2.0.2 dev wan-b subflow",
    ]


def test_an_address_with_a_foreign_endpoint_is_left_to_it() -> None:
    facts = KernelFacts(
        interfaces=FACTS_IPV6.interfaces, foreign_mptcp_endpoints={ip_address("10.1.0.2"): 1}
    )
    assert "ip mptcp endpoint add 10.1.0.2 dev wan-a subflow" not in mptcp_commands(
        THREE, facts=facts
    )


def test_a_returning_uplink_is_one_endpoint_add_and_a_grade_one_flag_change() -> None:
    config = parse_config(textwrap.dedent(THREE), "ecmpd.yaml")
    up = desired_state(config, {}, FACTS_IPV6)
    down = desired_state(config, {"isp-b": False}, FACTS_IPV6)
    slow = desired_state(config, {}, FACTS_IPV6, degraded={("isp-b", Family.INET)})
    assert [str(op) for op in diff(up, down) if "Mptcp" in str(op)] == [
        "add MptcpEndpoint MptcpEndpoint(address=IPv4Address('10.2.0.2'), ifname='wan-b',"
        " backup=False, id=0)"
    ]
    (flip,) = [op for op in diff(slow, up) if "Mptcp" in str(op)]
    assert flip.kind.value == "replace" and flip.obj == next(e for e in slow.endpoints if e.backup)


def test_soft_limits_must_sit_below_the_failure_limits() -> None:
    bad = """
        uplinks:
          - name: isp-a
            interface: wan-a
            gateway: 10.1.0.1
            check: {max_rtt: 100ms, degraded_rtt: 150ms, max_loss: 10%, degraded_loss: 10%}
    """
    with pytest.raises(ConfigError) as err:
        parse_config(textwrap.dedent(bad), "ecmpd.yaml")
    assert [str(i) for i in err.value.issues] == [
        "ecmpd.yaml:6: uplinks[0].check.degraded_loss: must be below max_loss"
        " (degraded comes before down)",
        "ecmpd.yaml:6: uplinks[0].check.degraded_rtt: must be below max_rtt"
        " (degraded comes before down)",
    ]


def test_a_foreign_endpoint_on_an_uplink_address_is_a_conflict_unless_opted_out() -> None:
    foreign = {ip_address("2001:db8:1::2"): 3}
    facts = KernelFacts(interfaces=FACTS_IPV6.interfaces, foreign_mptcp_endpoints=foreign)
    config = parse_config(textwrap.dedent(THREE), "ecmpd.yaml")
    assert [str(i) for i in check_against_kernel(config, facts)] == [
        "ecmpd.yaml:4: uplinks[0]: MPTCP endpoint id 3 on 2001:db8:1::2 is not ecmpd's:"
        " remove it (ip mptcp endpoint delete id 3) or set mptcp: false here"
    ]
    out = THREE.replace('gateway6: "2001:db8:1::1"}', 'gateway6: "2001:db8:1::1", mptcp: false}')
    assert check_against_kernel(parse_config(textwrap.dedent(out), "ecmpd.yaml"), facts) == []


def test_standby_tiers_and_metered_uplinks_are_backup_until_they_carry() -> None:
    tiers = THREE.replace("gateway: 10.2.0.1}", "gateway: 10.2.0.1, tier: 2}").replace(
        'source6: "2001:db8:3::2"}', 'source6: "2001:db8:3::2", metered: true}'
    )
    assert [c for c in mptcp_commands(tiers) if "endpoint" in c] == [
        "ip mptcp endpoint add 10.1.0.2 dev wan-a subflow",
        "ip mptcp endpoint add 10.2.0.2 dev wan-b subflow backup",  # tier 2: standby
        "ip mptcp endpoint add 2001:db8:1::2 dev wan-a subflow",
        "ip mptcp endpoint add 2001:db8:3::2 dev wan-c subflow backup",  # metered
    ]
    # Tier 1 gone: tier 2 carries, its endpoint is a full one.
    failed = mptcp_commands(tiers, health={"isp-a": False})
    assert [c for c in failed if "endpoint" in c] == [
        "ip mptcp endpoint add 10.2.0.2 dev wan-b subflow",
        "ip mptcp endpoint add 2001:db8:3::2 dev wan-c subflow backup",
    ]

"""Who serves (health and drains), announce's known verdicts, the desired state Serving
composes: a supervisor that adopted a kernel, moved by carrier events."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Interface
from pathlib import Path

from ecmpd.config import parse_config
from ecmpd.desired import desired_state
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.probes import Prober
from ecmpd.health.supervisor import HealthChange, Supervisor
from ecmpd.model import DesiredState, Family, IPAddress, nexthop_id
from ecmpd.orderwatch import OrderWatch
from ecmpd.serving import Serving

CONFIG = parse_config(
    textwrap.dedent(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1}
        announce: {table: 150}
        rules:
          - {name: everything-else, action: balance}
        """
    ),
    "ecmpd.yaml",
)
FACTS = KernelFacts(
    interfaces={
        name: InterfaceFacts(name, index, addresses=(IPv4Interface(address),))
        for name, index, address in (("wan-a", 2, "10.1.0.2/24"), ("wan-b", 3, "10.2.0.2/24"))
    }
)


async def never(method: str, ifname: str, source: IPAddress | None, family: Family) -> Prober:
    raise AssertionError("nothing is probed here")


def serving(observed: DesiredState | None = None) -> tuple[Serving, list[HealthChange]]:
    observed = observed or DesiredState()
    changes: list[HealthChange] = []
    supervisor = Supervisor(never, changes.append)
    supervisor.adopt(CONFIG.uplinks, observed, FACTS, CONFIG.balancer.table)
    s = Serving(supervisor)
    s.follow_config(CONFIG, observed)
    return s, changes


def members(state: DesiredState) -> set[int]:
    group = next(g for g in state.groups if g.id == nexthop_id(CONFIG.balancer.table))
    return {nhid for nhid, _ in group.members}


def test_health_and_drains_decide_who_serves_and_the_desired_state(tmp_path: Path) -> None:
    s, _ = serving()
    assert s.service() == {"isp-a": True, "isp-b": True}  # not probed yet: in service
    s.drain("isp-a", True)
    s.supervisor.on_carrier("wan-b", False)
    assert s.service() == {"isp-a": False, "isp-b": False}
    assert s.in_service() == {Family.INET: set(), Family.INET6: set()}
    s.drain("isp-a", False)
    assert s.service() == {"isp-a": True, "isp-b": False}
    # The desired state leaves out the uplink without carrier, and only it.
    state = s.desired(CONFIG, FACTS, OrderWatch.in_run_dir(tmp_path, lambda reason: None))
    assert members(state) == {nexthop_id(101)}


def test_announce_counts_known_verdicts_and_a_restart_adopts_its_route() -> None:
    s, _ = serving()
    # Not probed yet: no verdict counts, so no announce route while nothing is known.
    assert s.known() == {}
    s.supervisor.on_carrier("wan-b", False)  # a verdict: down
    assert s.known() == {}
    # A restart that finds its announce route keeps counting the unprobed uplinks.
    routes = desired_state(CONFIG, {}, FACTS)
    adopted, _ = serving(routes)
    assert adopted.known() == {Family.INET: {"isp-a", "isp-b"}}
    adopted.drain("isp-a", True)
    assert adopted.known() == {Family.INET: {"isp-b"}}


def test_a_reload_forgets_the_drain_of_an_uplink_it_removed() -> None:
    s, _ = serving()
    s.drain("isp-b", True)
    s.supervisor.uplinks.pop("isp-b")  # as Supervisor.reload leaves it
    s.follow_config(CONFIG, DesiredState())
    assert s.drained == set()

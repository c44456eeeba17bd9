"""ecmpd beside the real FRR (Debian 8.4): the export loads, and zebra in the same namespace.

zebra, by default, takes other programs' nexthop groups for its own business: it reverts
a change ("Kernel updated a nexthop group ... sending it back down") and, once all members
vanished, re-creates the id as its own. With `zebra nexthop proto only` (what
`ecmpd export --format frr` writes) it leaves them alone: through a failure, all uplinks
down and the heal, ecmpd must not fail a single reconcile after the heal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.peers.frr import FrrRouter, frr_available
from ecmpd.lab.wait import wait_for
from ecmpd.model import nexthop_id
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd, ip_json

ALL = frozenset({"isp-a", "isp-b", "isp-c"})
EDGE = """
mode: router
uplinks:
  - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1", table: 101}
  - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, gateway6: "2001:db8:2::1", table: 102}
announce: {table: 150, table6: main}
"""
CORE = """
mode: router
uplinks:
  - {name: edge1, interface: core-e1, gateway: bgp, gateway6: bgp, nat: false}
  - {name: edge2, interface: core-e2, gateway: bgp, gateway6: bgp, nat: false}
"""


@pytest.fixture(autouse=True)
def _frr() -> None:
    reason = frr_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def bare_ns(lab_prefix: str) -> Iterator[str]:
    name = f"{lab_prefix}frr"
    netns.create_netns(name)
    try:
        yield name
    finally:
        netns.remove_netns(name)


@pytest.mark.parametrize(
    ("config", "args", "wanted"),
    [
        (
            EDGE,
            ["--bgp-asn", "65001", "--bgp-neighbor", "10.0.1.2", "--bgp-neighbor", "fd00:1::2"],
            [
                "zebra nexthop proto only",
                "ip import-table 150",
                "redistribute table 150 route-map ECMPD-ANNOUNCE4",
                "redistribute kernel route-map ECMPD-ANNOUNCE6",
                " match metric 236",
                " set metric 0",
                " profile ecmpd",
                " neighbor 10.0.1.2 peer-group ECMPD",
                " neighbor ECMPD bfd profile ecmpd",
            ],
        ),
        (
            CORE,
            ["--bgp-asn", "65000", "--bgp-neighbor", "10.0.1.1", "--bfd", "200x4"],
            [
                "zebra nexthop proto only",
                " bgp bestpath as-path multipath-relax",
                "  maximum-paths 2",
                "  receive-interval 200",
                "  detect-multiplier 4",
            ],
        ),
    ],
)
def test_the_export_loads_into_a_real_frr(
    bare_ns: str, tmp_path: Path, config: str, args: list[str], wanted: list[str]
) -> None:
    path = tmp_path / "ecmpd.yaml"
    path.write_text(config)
    r = ecmpd(bare_ns, path, tmp_path / "run", "export", "--format", "frr", "--offline", *args)
    assert r.returncode == 0, r.stderr
    with FrrRouter(bare_ns, r.stdout, "export") as frr:
        assert frr.refused == [], frr.refused
        running = [line.strip() for line in frr.running_config().splitlines()]
    for line in wanted:
        assert line.strip() in running, (line, running)


STOCK = "frr defaults traditional\n"
PROTO_ONLY = STOCK + "zebra nexthop proto only\n"


def _events(log: str, *names: str) -> int:
    """How many log lines carry one of these event names."""
    return sum(any(f'"event": "{n}"' in line for n in names) for line in log.splitlines())


def _reconcile_failures(log: str) -> int:
    # What the kernel refused (ecmpd.refusals); before that policy, `reconcile.failed`.
    return _events(log, "reconcile.failed", "kernel.refused", "kernel.conflict", "kernel.held")


# Tries of one refused operation within 3 s, at most: backoff 1 s doubling (tries at
# +0, +1, +3 s), the immediate re-try after a re-read not counted as a try of its own.
TRIES_IN_3_S = 3


@pytest.mark.parametrize("frr_config", [PROTO_ONLY, STOCK], ids=["proto-only", "stock"])
def test_zebra_beside_ecmpd_failure_all_down_heal(
    lab: Lab, tmp_path: Path, frr_config: str
) -> None:
    """Down, all down (the group goes: when_all_down main), heal: ecmpd ends right.

    With `zebra nexthop proto only` nothing of ecmpd's is touched: 0 failed reconciles
    after the heal. With stock zebra (it takes the group id once the group's members
    went) ecmpd must not loop on what zebra took, must say which object is foreign,
    and must keep the rest of its state right (ecmpd.refusals).
    """
    extra = {"balancer": {"when_all_down": "main"}}
    config = write_lab_config(lab, tmp_path / "ecmpd.yaml", extra=extra)
    with (
        FrrRouter(lab.router, frr_config, "zebra", daemons=("zebra",)),
        running_daemon(lab, config, tmp_path) as daemon,
    ):
        wait_for(lambda: group_members(lab) == ALL, 10, "all in the balancer")
        gray_failure(lab.ns("isp-a"))
        wait_for(lambda: group_members(lab) == ALL - {"isp-a"}, 5, "isp-a out")
        for isp in ("isp-b", "isp-c"):
            gray_failure(lab.ns(isp))
        wait_for(lambda: daemon.uplink("isp-c").health == "down", 5, "all down")
        wait_for(lambda: daemon.uplink("isp-b").health == "down", 5, "all down")
        time.sleep(1.0)  # zebra's reaction to the group going
        for isp in sorted(ALL):
            heal(lab.ns(isp))
        wait_for(lambda: all(u.health == "up" for u in daemon.uplinks().values()), 10, "heal")
        settled = _reconcile_failures(daemon.log())
        time.sleep(3.0)  # a loop would fail again every second
        after = _reconcile_failures(daemon.log()) - settled
        members = group_members(lab)
        if frr_config == PROTO_ONLY:
            assert after == 0, daemon.log()
            assert _reconcile_failures(daemon.log()) == 0, daemon.log()
            assert members == ALL
            return
        # Stock zebra took the balancer group's id as its own. ecmpd names it, never
        # routes through it nor takes it over, and does not loop: each refused operation
        # is tried on its backoff only; every uplink of its own is right.
        conflicts = _events(daemon.log(), "kernel.conflict")
        assert conflicts > 0, daemon.log()
        assert _events(daemon.log(), "kernel.conflict") - conflicts <= TRIES_IN_3_S
        status = daemon.status()
        refused = {(r.kind.value, r.op) for r in status.refused or ()}
        group = nexthop_id(200)
        assert any(k == "conflict" and f"id {group} " in op for k, op in refused), refused
        assert any(k == "held" and f"nhid {group}" in op for k, op in refused), refused
        assert not any(r.uplink for r in status.refused or ()), refused  # nothing of an uplink
        assert all(u.health == "up" for u in status.uplinks)
        for uplink in status.uplinks:
            nhid = str(nexthop_id(uplink.table))
            (nexthop,) = ip_json(lab.router, "nexthop", "show", "id", nhid)
            assert nexthop["protocol"] in ("236", 236), nexthop

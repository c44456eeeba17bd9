"""Router mode end to end: LAN clients behind the real daemon, NAT, failures, pins, stickiness.

Every lab here proves NAT: the internet's route back to the LAN is removed, so a LAN
client reaches a server only through the router's translation, and the server sees an
uplink's address (which names the uplink). A NATed flow that moves to another uplink
breaks: for masquerade the kernel kills its conntrack entry when the output interface
changes (nf_nat_oif_changed) and the server resets the re-translated packets. The ISPs
also validate source addresses (BCP 38), so a moved flow that kept its old address
(an snat uplink, a race) is dropped too, and each ISP records its (address, port).
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from ecmpd.kernel import conntrack as ct
from ecmpd.kernel import ctmessages as ctm
from ecmpd.lab import netns
from ecmpd.lab.chat import ChatServer, by_public, chat, chat_specs, public_addresses
from ecmpd.lab.chatpool import CHAT_PORT
from ecmpd.lab.faults import gray_failure, heal_gray_failure, load_nft
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import LAN_PREFIX, ROUTER_LAN_IF, Lab
from ecmpd.lab.sources import moved_flows, nat_only, validate_sources
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.labs import LabFactory

ALL = {"isp-a", "isp-b", "isp-c"}
CLIENTS = 100
CONNECTIONS = 300
FAILED = "isp-a"
ECHO_TIMEOUT = 4.0  # a stall this long on a healthy connection counts as broken
RESET_BOUND = 5.0  # fault -> every dead-uplink connection has seen its reset


def nat_lab(lab_factory: LabFactory, clients: int) -> Lab:
    """A 3-ISP lab, `clients` LAN addresses, return paths only by NAT, source-validating ISPs."""
    lab = lab_factory(isps=3, lan=True, shaping=False)
    nat_only(lab)
    validate_sources(lab)
    add_lan_clients(lab, clients)
    return lab


def lan_entries(lab: Lab, public: IPv4Address) -> dict[int, ctm.Flow]:
    """The router's conntrack entries of LAN clients translated to `public`, by entry id."""
    flows = netns.call_in(lab.router, lambda: ct.uplink_flows(public))
    return {f.ct_id: f for f in flows if f.orig_src in LAN_PREFIX}


def nft_tables(ns: str) -> str:
    """`nft list tables` in a namespace."""
    return str(
        netns.run_in(
            ns, ["nft", "list", "tables"], capture_output=True, text=True, check=True
        ).stdout
    )


def isp_of(lab: Lab) -> dict[str, str]:
    """Uplink public address -> ISP name."""
    return {str(isp.address.ip): isp.name for isp in lab.isps}


def test_failure_moves_only_the_dead_uplinks_connections_and_recovery_none(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = nat_lab(lab_factory, CLIENTS)
    names = isp_of(lab)
    dead_ip = str(lab.isp(FAILED).address.ip)
    healthy_ips = {str(isp.address.ip) for isp in lab.isps if isp.name != FAILED}
    specs = chat_specs(lab, CONNECTIONS)
    config = write_lab_config(lab, tmp_path / "router.yaml")
    run_dir = tmp_path / "daemon" / "run"
    with running_daemon(lab, config, tmp_path / "daemon") as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 10, "up")
        with chat(lab, specs, echo_timeout=ECHO_TIMEOUT) as (_, pool):
            pool.wait_ready(30)
            time.sleep(0.5)
            before = {isp.name: lan_entries(lab, isp.address.ip) for isp in lab.isps}
            fault = time.monotonic()
            gray_failure(lab.ns(FAILED))
            wait_for(lambda: group_members(lab) == ALL - {FAILED}, 5, f"{FAILED} out")
            groups = by_public(pool.snapshot(), fault)
            dead = [s.index for s in groups.get(dead_ip, [])]
            healthy = [s.index for ip in healthy_ips for s in groups.get(ip, [])]
            assert len(dead) + len(healthy) == CONNECTIONS, groups.keys()
            assert len(dead) > CONNECTIONS // 10 and len(healthy) > CONNECTIONS // 2

            def dead_ones_reconnected() -> bool:
                slots = pool.snapshot()
                return all(
                    slots[i].errors_since(fault)
                    and slots[i].public in healthy_ips
                    and slots[i].last_echo > slots[i].errors[-1].at
                    for i in dead
                )

            wait_for(dead_ones_reconnected, 15, "dead-uplink connections reset and reconnected")
            time.sleep(1.0)  # the healthy ones keep talking meanwhile
            slots = pool.snapshot()
            reset_after = [slots[i].errors_since(fault)[0].at - fault for i in dead]
            kinds = {slots[i].errors_since(fault)[0].kind for i in dead}
            print(
                f"\n{len(dead)} connections on {FAILED}, {len(healthy)} on the others; "
                f"reset {min(reset_after):.2f}..{max(reset_after):.2f} s after the fault "
                f"({kinds})"
            )
            assert max(reset_after) < RESET_BOUND, reset_after
            assert kinds == {"reset"}, kinds  # reset by the server, not timed out
            for i in healthy:
                assert slots[i].errors_since(fault) == [], (i, slots[i].errors)
                assert slots[i].last_echo > time.monotonic() - 1.0, i

            # Conntrack: the dead uplink's LAN entries are gone or closed (as conntrack closes
            # a connection it saw reset, for a late answer to meet), every other one is still
            # there.
            dead_entries = lan_entries(lab, lab.isp(FAILED).address.ip).values()
            assert [f for f in dead_entries if f.tcp_state != ctm.TCP_CONNTRACK_CLOSE] == []
            for isp in lab.isps:
                if isp.name != FAILED:
                    after = lan_entries(lab, isp.address.ip)
                    assert set(before[isp.name]) <= set(after), isp.name
            moved = moved_flows(lab)
            for name, flows in moved.items():
                foreign = {ip for ip, _ in flows} & healthy_ips
                assert not foreign, f"{name} saw moved flows of healthy uplinks {foreign}"

            heal = time.monotonic()
            heal_gray_failure(lab.ns(FAILED))
            wait_for(lambda: group_members(lab) == ALL, 10, f"{FAILED} back")
            back = time.monotonic()
            time.sleep(ECHO_TIMEOUT + 1.5)  # longer than a broken connection can hide
            slots = pool.snapshot()
            broken = {s.index: s.errors_since(heal) for s in slots if s.errors_since(heal)}
            print(
                f"{FAILED} back in the group {back - heal:.2f} s after the heal; "
                f"{len(broken)} connections broken during recovery"
            )
            assert broken == {}
            assert all(s.last_echo > time.monotonic() - 1.0 for s in slots)
            assert moved_flows(lab) == moved  # not one flow moved at recovery
            counts = {
                names[ip]: len(group)
                for ip, group in by_public(slots, time.monotonic()).items()
                if ip is not None
            }
            assert FAILED not in counts  # its new share fills only with new flows

        assert daemon.stop() == 0
    assert "ecmpd" in nft_tables(lab.router)  # SIGTERM leaves forwarding (and NAT) in place
    done = ecmpd(lab.router, config, run_dir, "down")
    assert done.returncode == 0, done.stderr
    assert "ecmpd" not in nft_tables(lab.router)
    assert group_members(lab) == set()


PIN_RULES = [
    {"name": "local", "action": "bypass"},
    {"name": "vpn", "from": "10.200.1.5/32", "action": "pin", "uplink": "isp-a"},
    {"name": "docs", "to": "203.0.113.0/28", "action": "pin", "uplink": "isp-c"},
    {"name": "everything-else", "action": "balance"},
]
# The l4 fields as an explicit custom hash, and the default `hash: l4`, which router mode
# turns into the same custom hash: policy 1 would hash a forwarded packet by the L4 hash
# it already carries (a NIC's RSS hash, or here the LAN sender's socket txhash, re-drawn
# on every retransmission timeout), which explain cannot predict and which moves flows.
L4_FIELDS = ["src-ip", "dst-ip", "proto", "src-port", "dst-port"]
# The lab fixes the multipath hash seed (netns.LAB_HASH_SEED) where the kernel can
# (6.11+); elsewhere the key is random per boot, and 24 flows all hash to one uplink
# with a chance of (4/7)^24 + (2/7)^24 + (1/7)^24 < 2e-6 (weights 2/4/1).
EXPLAINED_FLOWS = 24


def explain(
    lab: Lab, config: Path, run_dir: Path, dst: IPv4Address, src: IPv4Address, sport: int
) -> dict[str, Any]:
    """`ecmpd explain` for a forwarded TCP flow from a LAN client to the chat port."""
    done = ecmpd(
        lab.router,
        config,
        run_dir,
        "explain",
        str(dst),
        "--from",
        str(src),
        "--iif",
        ROUTER_LAN_IF,
        "--proto",
        "tcp",
        "--sport",
        str(sport),
        "--dport",
        str(CHAT_PORT),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_pins_hold_for_forwarded_traffic_and_explain_names_them(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = nat_lab(lab_factory, 10)
    names = isp_of(lab)
    pinned, other = IPv4Address("10.200.1.5"), IPv4Address("10.200.1.7")
    docs = [IPv4Address(f"203.0.113.{k}") for k in range(1, 15)]
    config = write_lab_config(lab, tmp_path / "pins.yaml", extra={"rules": PIN_RULES})
    run_dir = tmp_path / "daemon" / "run"
    with running_daemon(lab, config, tmp_path / "daemon") as daemon, ChatServer(lab.internet):
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 10, "up")

        # A pinned source: every connection, to any server, leaves by isp-a.
        flows = [(pinned, server, 0) for server in [*lab.servers, *docs[:4]] for _ in range(2)]
        assert {names[ip] for ip in public_addresses(lab, flows)} == {"isp-a"}

        # A pinned destination: every other client's connections to it leave by isp-c.
        others = [c for c in lab.lan_clients if c != pinned]
        flows = [(c, d, 0) for c in others for d in docs[::3]]
        assert {names[ip] for ip in public_addresses(lab, flows)} == {"isp-c"}
        outside = IPv4Address("203.0.113.16")  # just past the /28: balanced again
        flows = [(c, outside, 0) for c in others for _ in range(3)]
        assert len({names[ip] for ip in public_addresses(lab, flows)}) >= 2

        server = lab.servers[2]
        answer = explain(lab, config, run_dir, server, pinned, 41100)
        assert (answer["uplink"], answer["rule"]) == ("isp-a", "vpn")
        (public,) = public_addresses(lab, [(pinned, server, 41100)])
        assert names[public] == "isp-a"
        answer = explain(lab, config, run_dir, docs[5], other, 41200)
        assert (answer["uplink"], answer["rule"]) == ("isp-c", "docs")
        (public,) = public_addresses(lab, [(other, docs[5], 41200)])
        assert names[public] == "isp-c"


@pytest.mark.parametrize(
    "hash_spec",
    [
        pytest.param(L4_FIELDS, id="l4-fields"),
        pytest.param(None, id="default-l4"),
    ],
)
def test_explain_agrees_with_the_uplink_a_forwarded_flow_takes(
    lab_factory: LabFactory, tmp_path: Path, hash_spec: list[str] | None
) -> None:
    lab = nat_lab(lab_factory, 10)
    names = isp_of(lab)
    client, server = IPv4Address("10.200.1.7"), lab.servers[2]
    extra = {"hash": hash_spec} if hash_spec else {}
    config = write_lab_config(lab, tmp_path / "explain.yaml", extra=extra)
    run_dir = tmp_path / "daemon" / "run"
    with running_daemon(lab, config, tmp_path / "daemon") as daemon, ChatServer(lab.internet):
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 10, "up")
        predicted, seen = {}, {}
        for sport in range(41000, 41000 + EXPLAINED_FLOWS):
            answer = explain(lab, config, run_dir, server, client, sport)
            assert answer["rule"] == "everything-else"
            predicted[sport] = answer["uplink"]
            # Twice, each from a fresh socket: the 5-tuple alone must decide.
            publics = public_addresses(lab, [(client, server, sport)] * 2)
            seen[sport] = {names[ip] for ip in publics}
    assert all(seen[p] == {predicted[p]} for p in predicted), (predicted, seen)
    assert len(set(predicted.values())) >= 2  # the balanced client really spreads


@pytest.mark.parametrize(
    "hash_spec",
    [
        pytest.param(L4_FIELDS, id="l4-fields"),
        pytest.param(None, id="default-l4"),
    ],
)
def test_a_loss_burst_on_the_lan_moves_no_connection(
    lab_factory: LabFactory, tmp_path: Path, hash_spec: list[str] | None
) -> None:
    lab = nat_lab(lab_factory, 20)
    extra = {"hash": hash_spec} if hash_spec else {}
    config = write_lab_config(lab, tmp_path / "burst.yaml", extra=extra)
    specs = chat_specs(lab, 60)
    with running_daemon(lab, config, tmp_path / "daemon") as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 10, "up")
        with chat(lab, specs, echo_timeout=ECHO_TIMEOUT) as (_, pool):
            pool.wait_ready(20)
            start = time.monotonic()
            # Half a second of loss between the LAN and the router: every connection
            # retransmits after a timeout, nothing about the uplinks changes.
            load_nft(
                lab.router,
                """
                table inet burst {
                    chain lossy {
                        type filter hook forward priority -5; policy accept;
                        iifname "lan0" drop
                    }
                }
            """,
            )
            time.sleep(0.5)
            load_nft(lab.router, "delete table inet burst\n")
            time.sleep(ECHO_TIMEOUT + 1.5)
            broken = [s.errors_since(start) for s in pool.snapshot() if s.errors_since(start)]
    assert broken == [], f"{len(broken)} of {len(specs)} connections broken"


def test_sticky_clients_keep_one_public_address(lab_factory: LabFactory, tmp_path: Path) -> None:
    clients = 120
    lab = nat_lab(lab_factory, clients)
    names = isp_of(lab)
    config = write_lab_config(lab, tmp_path / "sticky.yaml", extra={"hash": ["src-ip"]})
    destinations = [*lab.servers, *lab.alt_servers[:4]]
    with running_daemon(lab, config, tmp_path / "daemon") as daemon, ChatServer(lab.internet):
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 10, "up")
        flows = [
            (client, destinations[(k * 7 + j) % len(destinations)], 0)
            for k, client in enumerate(lab.lan_clients)
            for j in range(6)
        ]
        seen = public_addresses(lab, flows)
    per_client: dict[IPv4Address, set[str]] = {}
    for (client, _, _), public in zip(flows, seen, strict=True):
        per_client.setdefault(client, set()).add(public)
    spread = {c: p for c, p in per_client.items() if len(p) != 1}
    assert spread == {}, f"clients with several public addresses: {spread}"
    counts = {isp.name: 0 for isp in lab.isps}
    for publics in per_client.values():
        counts[names[next(iter(publics))]] += 1
    total_weight = sum(isp.weight for isp in lab.isps)
    print(f"\nclients per uplink: {counts} (weights {[i.weight for i in lab.isps]})")
    for isp in lab.isps:
        share = counts[isp.name] / clients
        assert counts[isp.name] > 0
        assert abs(share - isp.weight / total_weight) < 0.15, counts

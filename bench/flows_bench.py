"""Benchmark router mode: flows moved on failure and recovery, a recovered uplink's share, goodput.

Each part runs in fresh lab namespaces (router, ISPs, internet, LAN) that are removed
afterwards; the internet has no route back to the LAN, so LAN traffic works only NATed.

  moved_lookups    >= 10000 forwarded flows asked of the router's FIB (route get, iif
                   lan0, full L4 keys) with 3 equal uplinks: before a failure of one,
                   during it and after its recovery. ecmpd's resilient group (the real
                   daemon, a gray failure), its hash-threshold option, and the anchor:
                   a classic multipath default route, replaced by hand at once.
  moved_tcp        the same with long-lived TCP connections from LAN clients through
                   NAT (each sends a line every 100 ms and checks its echo); ISPs drop
                   foreign sources (BCP 38), so a moved NATed flow breaks as in reality.
  recovered_share  how long a recovered uplink takes to get its weighted share of new
                   flows: resilient buckets move to it only once idle for idle_timer.
                   Measured with short idle timers under a busy LAN, scaled to 60 s.
  goodput          bulk TCP from LAN clients through NAT over TBF-shaped uplinks
                   (100 + 200 Mbit/s; and 4 uplinks), as a fraction of the summed
                   rates, against the anchor: a single default route.

    python bench/flows_bench.py [--quick] [--prefix P] [--seed N]

Prints one JSON document on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml
from common import (
    Daemon,
    emit,
    gray_failure,
    install_sigterm,
    machine,
    nft,
    progress,
    ratio,
    running_daemon,
    thread_in,
    wait_until,
)

from ecmpd.config.hashspec import parse_hash
from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.desired import nexthop_id
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.netlink import open_iproute
from ecmpd.lab import netns
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.topology import (
    FIRST_LAN_CLIENT,
    ROUTER_LAN_IF,
    Lab,
    add_lan_clients,
    lab_session,
)

# The chat connections and the ISPs' source validation are the integration tests'.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.lanconns import (  # noqa: E402
    ClientPool,
    Slot,
    by_public,
    chat,
    moved_flows,
    nat_only,
    validate_sources,
)


@dataclass(frozen=True)
class Plan:
    """How much of each part a run does."""

    lookup_flows: int
    connections: int
    idle_timers: tuple[int, ...]
    share_connections: int
    goodput_s: float
    warmup_s: float
    hash_threshold: bool  # also ecmpd's hash-threshold group in moved_lookups
    default_hash_tcp: bool  # moved_tcp also with the default `hash: l4` (policy 1)
    four_uplinks: bool
    ceiling: bool  # Python's unshaped throughput through the router


FULL = Plan(
    lookup_flows=12000,
    connections=300,
    idle_timers=(2, 5),
    share_connections=100,
    goodput_s=10.0,
    warmup_s=2.0,
    hash_threshold=True,
    default_hash_tcp=True,
    four_uplinks=True,
    ceiling=True,
)
QUICK = Plan(
    lookup_flows=3000,
    connections=60,
    # 4 s, not 2: a LAN client thread stalled that long on a loaded 2-core machine
    # looks idle to the kernel, and its bucket may then legitimately move.
    idle_timers=(4,),
    share_connections=30,
    goodput_s=3.0,
    warmup_s=1.0,
    hash_threshold=False,
    default_hash_tcp=False,
    four_uplinks=False,
    ceiling=False,
)
FAILED = "isp-a"
BALANCER_TABLE = 200
# The l4 fields as a custom hash (policy 3): the kernel hashes each forwarded packet's
# 5-tuple, as it does for packets from a physical LAN. Policy 1 (`hash: l4`) would use
# the hash a packet already carries, here the LAN sender's socket txhash, which crosses
# the veth and is re-drawn on every retransmission timeout: flows then move on their own.
L4_FIELDS = ["src-ip", "dst-ip", "proto", "src-port", "dst-port"]
BUCKETS = 512
DEFAULT_IDLE_TIMER = 60
# Fast, so a benchmark's failures and recoveries take a second, not several; how the
# daemon detects a failure does not change which flows move.
TUNED_CHECK = {"interval": "50ms", "timeout": "80ms", "down_after": 3, "up_after": 3}
START_TIMEOUT = 20.0
GROUP_TIMEOUT = 15.0
ECHO_TIMEOUT = 2.0  # a stall this long on a chat connection counts as broken
LAN_CLIENTS = 100
# Sustained new-flow load in the recovered-share runs: each bucket is hit this many
# times per idle_timer on average (a per-bucket gap >= idle_timer then has e^-2 odds).
SUSTAINED_HITS_PER_IDLE = 2.0
BULK_PORT = 5201
BULK_CHUNK = 1 << 20
# TCP payload per Ethernet frame with timestamps: 1448 of 1514 bytes; TBF counts frames.
L2_CEILING = 1448 / 1514
TARGETS = {
    "healthy_moved_on_failure": 0,
    "moved_on_recovery": 0,
    "goodput_fraction": 0.95,
}
NOTES = [
    "moved_lookups: each flow's uplink is the router's answer to RTM_GETROUTE with iif "
    "lan0, the LAN source, the destination and the L4 keys (what a forwarded packet of "
    "that flow gets). healthy_moved counts flows that were on a surviving uplink before "
    "the failure and are on another during it; recovery_moved counts flows whose uplink "
    "differs between the failed state and after recovery. 3 equal uplinks, as in the "
    "issue (hash-threshold: 1/4 of healthy flows move on failure, 1/2 of all on recovery).",
    "The anchor's route is replaced at once by hand (an ideal monitor); ecmpd's group "
    "changes through the real daemon after a gray failure (nftables drop-all in the ISP).",
    "moved_tcp: public address per connection as the server saw it; broken = any error "
    "(reset, eof, a 2 s echo stall) on the connection. A masqueraded flow that changes "
    "uplink is killed by the kernel (nf_nat_oif_changed) and reset by the server; one "
    "that kept its address is dropped by the new ISP (moved_by_source_check). Both sides "
    "hash the 5-tuple as a custom hash (policy 3, `hash` below), as the kernel does for "
    "packets from a physical LAN. The *_default_hash variants (full runs) use policy 1 "
    "(`hash: l4`, ecmpd's default): here forwarded packets carry the LAN sender's socket "
    "hash (skb->l4_hash crosses the veth) and the kernel uses it, and a sender re-draws "
    "it at every retransmission timeout, so flows also move on their own. The anchor "
    "breaks fewer than half of the connections at recovery: the ones its failure left "
    "intact are exactly those a hash-threshold recovery returns to their old uplink; "
    "the fixed flow set of moved_lookups shows the 1/2.",
    "recovered_share: time from the uplink's return to the group until it holds its "
    "weighted share of the resilient group's buckets (kernel wants; new flows hash "
    "uniformly over buckets, so this is its share of new flows). A bucket of an "
    "overweight uplink moves only once unused for idle_timer (at once if unused since "
    "its last move); the kernel checks at the earliest idle point, at most every 0.5 s.",
    "recovered_share load 'stops': new flows (route lookups, one packet each) hit every "
    "bucket until the uplink is back, then only the long-lived connections remain: "
    "t_share ~ idle_timer (+ up to 0.5 s). load 'sustained': new flows keep arriving at "
    "lambda = 2 * buckets / idle_timer per second: a bucket needs a gap >= idle_timer, "
    "mean wait (e^(lambda*T/B) - 1) * B / lambda, so t_share scales with idle_timer at "
    "fixed lambda*T/B. With the default 60 s and unbalanced_timer 0 (never force), a LAN "
    "that hits every bucket more often than once a minute keeps the recovered uplink "
    "below its share until the load drops.",
    "goodput: bulk TCP (Python sockets, 1 MiB sendall per call) from distinct LAN clients "
    "to a sink in the internet namespace, through the router's NAT and the ISPs' TBF "
    "(both directions shaped), counted at the sink over goodput_s after warmup_s. "
    "l2_ceiling_fraction: the payload share of a full frame, the most TBF lets through.",
]


# --- labs, configs, the daemon ------------------------------------------------------


@contextlib.contextmanager
def nat_lab(prefix: str, workdir: Path, **kwargs: Any) -> Iterator[Lab]:
    """A lab whose LAN reaches the internet only through the router's NAT."""
    with lab_session(lan=True, workdir=workdir, prefix=prefix, **kwargs) as lab:
        nat_only(lab)
        add_lan_clients(lab, LAN_CLIENTS)
        yield lab


def router_config(
    lab: Lab, path: Path, balancer: dict[str, Any] | None = None, hash_spec: Any = None
) -> Path:
    """The lab's router-mode config with the fast check (and balancer/hash overrides)."""
    extra: dict[str, Any] = {"balancer": balancer or {}}
    if hash_spec is not None:
        extra["hash"] = hash_spec
    data = lab_config(lab, extra=extra)
    for uplink in data["uplinks"]:
        uplink["check"] = {**uplink["check"], **TUNED_CHECK}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ecmpd_cli(lab: Lab, config: Path, run_dir: Path, *args: str) -> None:
    """Runs the real CLI in the router's namespace; raises on failure."""
    argv = [sys.executable, "-m", "ecmpd", "-c", str(config), "--run-dir", str(run_dir), *args]
    done = netns.run_in(lab.router, argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ecmpd {' '.join(args)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def daemon_session(lab: Lab, config: Path, workdir: Path) -> Iterator[Daemon]:
    """The daemon, every uplink in service; afterwards stopped and `ecmpd down`."""
    try:
        with running_daemon(lab.router, config, workdir) as daemon:
            wait_until(daemon.all_in_service, START_TIMEOUT, "every uplink in service", 0.02)
            yield daemon
    finally:
        ecmpd_cli(lab, config, workdir / "run", "down")


class GroupWatch:
    """The uplinks in the router's balancer group, over one rtnetlink socket."""

    def __init__(self, lab: Lab) -> None:
        self.group = nexthop_id(BALANCER_TABLE)
        self.names = {
            nexthop_id(FIRST_UPLINK_TABLE + i): isp.name for i, isp in enumerate(lab.isps)
        }
        self.ipr = netns.iproute(lab.router)

    def members(self) -> frozenset[str]:
        """The uplinks in the group now."""
        group = nl.get_nexthop(self.ipr, self.group)
        if group is None or group.members is None:
            return frozenset()
        return frozenset(self.names.get(m, str(m)) for m, _ in group.members)

    def wait(self, check: Callable[[frozenset[str]], bool], what: str) -> float:
        """Polls every 2 ms until check(members) holds; returns the monotonic time it did."""
        return wait_until(lambda: check(self.members()), GROUP_TIMEOUT, what, step=0.002)

    def close(self) -> None:
        """Closes the socket."""
        self.ipr.close()


def heal_gray(lab: Lab, isp: str) -> None:
    """Undoes common.gray_failure only (the ISP's source validation stays)."""
    nft(lab.ns(isp), "delete table inet gray\n")


# --- the anchor: a classic multipath default route, by hand -------------------------


def anchor_setup(lab: Lab, nat: bool, hash_spec: Any = "l4") -> None:
    """Forwarding, the hash ecmpd would set, and (for real traffic) masquerade by hand."""
    spec = parse_hash(hash_spec)
    sysctls = {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": str(spec.policy)}
    if spec.fields:
        sysctls["net.ipv4.fib_multipath_hash_fields"] = str(spec.fields_mask())
    netns.write_sysctls(lab.router, sysctls)
    anchor_route(lab, {isp.name for isp in lab.isps})
    if nat:
        rules = "\n".join(f'oifname "{isp.uplink_if}" masquerade' for isp in lab.isps)
        nft(
            lab.router,
            f"""
            table inet anchor {{
                chain post {{
                    type nat hook postrouting priority srcnat; policy accept;
                    {rules}
                }}
            }}
        """,
        )


def anchor_route(lab: Lab, members: set[str]) -> None:
    """`ip route replace default` with one nexthop per member uplink (weights as configured)."""
    argv = ["ip", "route", "replace", "default"]
    for isp in lab.isps:
        if isp.name in members:
            argv += [
                "nexthop",
                "via",
                str(isp.gateway),
                "dev",
                isp.uplink_if,
                "weight",
                str(isp.weight),
            ]
    netns.run_in(lab.router, argv, check=True, capture_output=True)


def anchor_teardown(lab: Lab) -> None:
    """Removes the anchor's route and NAT table."""
    netns.run_in(lab.router, ["ip", "route", "del", "default"], capture_output=True)
    netns.run_in(lab.router, ["nft", "delete", "table", "inet", "anchor"], capture_output=True)


# --- (a) flows moved, by kernel lookups ----------------------------------------------


@dataclass(frozen=True)
class Forwarded:
    """One flow from a LAN client, as the router's FIB sees it arrive on lan0."""

    src: IPv4Address
    dst: IPv4Address
    proto: int
    sport: int
    dport: int


def forwarded_flows(lab: Lab, n: int, rng: random.Random) -> list[Forwarded]:
    """n distinct flows from 250 LAN client addresses to the lab's servers."""
    destinations = [*lab.servers, *lab.alt_servers]
    flows: set[Forwarded] = set()
    while len(flows) < n:
        flows.add(
            Forwarded(
                src=FIRST_LAN_CLIENT + rng.randrange(250),
                dst=rng.choice(destinations),
                proto=rng.choice((socket.IPPROTO_TCP, socket.IPPROTO_UDP)),
                sport=rng.randint(1024, 65535),
                dport=rng.choice((53, 80, 443, 8080, rng.randint(1, 65535))),
            )
        )
    return sorted(flows, key=lambda f: (f.src, f.dst, f.proto, f.sport, f.dport))


def fib_uplinks(lab: Lab, flows: Sequence[Forwarded]) -> list[str]:
    """The uplink the router's kernel forwards each flow by."""
    uplink_of = {isp.uplink_if: isp.name for isp in lab.isps}

    def lookup() -> list[str]:
        ipr = open_iproute()
        try:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            lan = next(i for i, name in names.items() if name == ROUTER_LAN_IF)
            out = []
            for f in flows:
                answer = nl.route_get(
                    ipr, f.dst, src=f.src, iif=lan, ip_proto=f.proto, sport=f.sport, dport=f.dport
                )
                ifname = names.get(answer.ifindex or 0, "?")
                out.append(uplink_of.get(ifname, ifname))
            return out
        finally:
            ipr.close()

    return netns.call_in(lab.router, lookup)


def moved_summary(before: list[str], failed: list[str], recovered: list[str]) -> dict[str, Any]:
    """What moved on failure (healthy and dead flows apart) and on recovery."""
    n = len(before)
    on_dead = [i for i in range(n) if before[i] == FAILED]
    on_healthy = [i for i in range(n) if before[i] != FAILED]
    healthy_moved = sum(1 for i in on_healthy if failed[i] != before[i])
    dead_moved = sum(1 for i in on_dead if failed[i] != before[i])
    recovery_moved = sum(1 for i in range(n) if recovered[i] != failed[i])
    return {
        "flows": n,
        "split_before": dict(sorted(Counter(before).items())),
        "failure": {
            "on_failed_uplink": len(on_dead),
            "on_healthy_uplinks": len(on_healthy),
            "dead_moved": dead_moved,
            "healthy_moved": healthy_moved,
            "healthy_moved_fraction": round(healthy_moved / max(len(on_healthy), 1), 4),
            "still_on_failed_uplink": sum(1 for u in failed if u == FAILED),
        },
        "recovery": {
            "moved": recovery_moved,
            "moved_fraction": round(recovery_moved / max(n, 1), 4),
            "on_recovered_uplink": sum(1 for u in recovered if u == FAILED),
        },
    }


def lookups_ecmpd(
    lab: Lab, workdir: Path, flows: Sequence[Forwarded], balancer: dict[str, Any]
) -> dict[str, Any]:
    """Lookups before, during and after a gray failure, with the real daemon."""
    config = router_config(lab, workdir / "ecmpd.yaml", balancer=balancer)
    watch = GroupWatch(lab)
    try:
        with daemon_session(lab, config, workdir):
            before = fib_uplinks(lab, flows)
            gray_failure(lab.isp(FAILED).ns)
            watch.wait(lambda m: FAILED not in m, f"{FAILED} out of the group")
            failed = fib_uplinks(lab, flows)
            heal_gray(lab, FAILED)
            watch.wait(lambda m: len(m) == len(lab.isps), f"{FAILED} back in the group")
            recovered = fib_uplinks(lab, flows)
    finally:
        watch.close()
    return moved_summary(before, failed, recovered)


def lookups_anchor(lab: Lab, flows: Sequence[Forwarded]) -> dict[str, Any]:
    """The same with a classic multipath route replaced by hand."""
    everyone = {isp.name for isp in lab.isps}
    anchor_setup(lab, nat=False)
    try:
        before = fib_uplinks(lab, flows)
        anchor_route(lab, everyone - {FAILED})
        failed = fib_uplinks(lab, flows)
        anchor_route(lab, everyone)
        recovered = fib_uplinks(lab, flows)
    finally:
        anchor_teardown(lab)
    return moved_summary(before, failed, recovered)


def bench_lookups(
    prefix: str, workdir: Path, n: int, seed: int, hash_threshold: bool
) -> dict[str, Any]:
    """Part (a): ecmpd's resilient group (and hash-threshold option) vs the anchor."""
    with nat_lab(prefix, workdir / "lab", isps=3, weights=(1, 1, 1), shaping=False) as lab:
        flows = forwarded_flows(lab, n, random.Random(seed))
        variants: dict[str, Any] = {}
        progress(f"moved_lookups: ecmpd resilient, {n} flows")
        variants["ecmpd_resilient"] = lookups_ecmpd(lab, workdir / "res", flows, {})
        if hash_threshold:
            progress("moved_lookups: ecmpd hash-threshold group")
            variants["ecmpd_hash_threshold"] = lookups_ecmpd(
                lab, workdir / "ht", flows, {"group": "hash-threshold"}
            )
        progress("moved_lookups: anchor multipath route")
        variants["anchor_multipath_route"] = lookups_anchor(lab, flows)
    ecmpd, anchor = variants["ecmpd_resilient"], variants["anchor_multipath_route"]
    return {
        "flows": n,
        "uplinks": 3,
        "weights": [1, 1, 1],
        "failed": FAILED,
        "variants": variants,
        "ratio_healthy_moved_vs_anchor": ratio(
            ecmpd["failure"]["healthy_moved"], anchor["failure"]["healthy_moved"]
        ),
        "ratio_recovery_moved_vs_anchor": ratio(
            ecmpd["recovery"]["moved"], anchor["recovery"]["moved"]
        ),
    }


# --- (b) flows moved, over real TCP connections --------------------------------------


def chat_specs(lab: Lab, n: int) -> list[tuple[IPv4Address, IPv4Address, int]]:
    """n long-lived connections from the LAN clients to the servers, round robin."""
    return [
        (lab.lan_clients[i % len(lab.lan_clients)], lab.servers[i % len(lab.servers)], 0)
        for i in range(n)
    ]


def tcp_run(
    lab: Lab,
    n: int,
    fail: Callable[[], object],
    wait_out: Callable[[], object],
    restore: Callable[[], object],
    wait_back: Callable[[], object],
) -> dict[str, Any]:
    """n chat connections through a failure and a recovery; what broke when."""
    public = {str(isp.address.ip): isp.name for isp in lab.isps}
    with chat(lab, chat_specs(lab, n), echo_timeout=ECHO_TIMEOUT) as (_, pool):
        pool.wait_ready(30)
        time.sleep(0.3)
        moved_before = moved_flows(lab)
        fault = time.monotonic()
        fail()
        wait_out()
        removed = time.monotonic() - fault
        groups = by_public(pool.snapshot(), fault)
        dead = [s.index for s in groups.get(str(lab.isp(FAILED).address.ip), [])]
        healthy = [
            s.index
            for ip, group in groups.items()
            if ip is not None and public.get(ip) != FAILED
            for s in group
        ]

        def settled() -> bool:
            slots = pool.snapshot()
            return all(slots[i].errors_since(fault) and slots[i].public is not None for i in dead)

        with contextlib.suppress(TimeoutError):
            wait_until(settled, 15, "dead-uplink connections reset and reconnected", 0.05)
        time.sleep(ECHO_TIMEOUT + 1.0)  # a moved healthy connection has failed by now
        slots = pool.snapshot()
        moved_failure = _moved_since(moved_before, moved_flows(lab), lab, healthy_only=True)
        failure = _failure_stats(slots, dead, healthy, fault, public)
        failure["removal_s"] = round(removed, 3)
        failure["moved_by_source_check"] = moved_failure

        moved_mid = moved_flows(lab)
        heal = time.monotonic()
        restore()
        wait_back()
        back = time.monotonic() - heal
        time.sleep(ECHO_TIMEOUT + 1.0)
        slots = pool.snapshot()
        broken = [s for s in slots if s.errors_since(heal)]
        recovery = {
            "back_in_group_s": round(back, 3),
            "connections": len(slots),
            "broken": len(broken),
            "broken_fraction": round(len(broken) / max(len(slots), 1), 4),
            "moved_by_source_check": _moved_since(
                moved_mid, moved_flows(lab), lab, healthy_only=False
            ),
            "on_recovered_uplink": sum(1 for s in slots if public.get(s.public or "") == FAILED),
        }
    return {"connections": n, "failure": failure, "recovery": recovery}


def _failure_stats(
    slots: list[Slot], dead: list[int], healthy: list[int], fault: float, public: dict[str, str]
) -> dict[str, Any]:
    """The failure half of a TCP run."""
    first_errors = [slots[i].errors_since(fault)[0] for i in dead if slots[i].errors_since(fault)]
    after = [e.at - fault for e in first_errors]
    broken_healthy = [i for i in healthy if slots[i].errors_since(fault)]
    return {
        "on_failed_uplink": len(dead),
        "on_healthy_uplinks": len(healthy),
        "healthy_broken": len(broken_healthy),
        "healthy_broken_fraction": round(len(broken_healthy) / max(len(healthy), 1), 4),
        "dead_broken": len(first_errors),
        "dead_error_kinds": dict(Counter(e.kind for e in first_errors)),
        "dead_first_error_s": {
            "median": round(statistics.median(after), 3) if after else None,
            "max": round(max(after), 3) if after else None,
        },
        "dead_reconnected_elsewhere": sum(
            1 for i in dead if public.get(slots[i].public or "") not in (None, FAILED)
        ),
    }


def _moved_since(
    old: dict[str, set[tuple[str, int]]],
    new: dict[str, set[tuple[str, int]]],
    lab: Lab,
    healthy_only: bool,
) -> int:
    """Flows an ISP newly dropped for carrying another uplink's address."""
    dead_ip = str(lab.isp(FAILED).address.ip)
    return sum(
        1
        for isp, flows in new.items()
        for ip, _ in flows - old.get(isp, set())
        if not healthy_only or ip != dead_ip
    )


def bench_tcp(prefix: str, workdir: Path, n: int, default_hash_too: bool) -> dict[str, Any]:
    """Part (b): real connections, ecmpd vs the anchor, in a source-validating lab."""
    variants: dict[str, Any] = {}
    runs: list[tuple[str, Any]] = [("", L4_FIELDS)]
    if default_hash_too:
        runs.append(("_default_hash", "l4"))
    with nat_lab(prefix, workdir / "lab", isps=3, weights=(1, 1, 1), shaping=False) as lab:
        validate_sources(lab)
        for suffix, hash_spec in runs:
            progress(f"moved_tcp: ecmpd resilient{suffix}, {n} connections")
            ecmpd_run = tcp_ecmpd(lab, workdir / f"e{suffix}", n, hash_spec)
            variants[f"ecmpd_resilient{suffix}"] = ecmpd_run
            progress(f"moved_tcp: anchor multipath route{suffix}, {n} connections")
            variants[f"anchor_multipath_route{suffix}"] = tcp_anchor(lab, n, hash_spec)
    ecmpd, anchor = variants["ecmpd_resilient"], variants["anchor_multipath_route"]
    return {
        "connections": n,
        "hash": L4_FIELDS,
        "uplinks": 3,
        "weights": [1, 1, 1],
        "failed": FAILED,
        "echo_timeout_s": ECHO_TIMEOUT,
        "variants": variants,
        "ratio_healthy_broken_vs_anchor": ratio(
            ecmpd["failure"]["healthy_broken"], anchor["failure"]["healthy_broken"]
        ),
        "ratio_recovery_broken_vs_anchor": ratio(
            ecmpd["recovery"]["broken"], anchor["recovery"]["broken"]
        ),
    }


def tcp_ecmpd(lab: Lab, workdir: Path, n: int, hash_spec: Any) -> dict[str, Any]:
    """A TCP run through the real daemon: a gray failure, then healing."""
    everyone = frozenset(isp.name for isp in lab.isps)
    config = router_config(lab, workdir / "ecmpd.yaml", hash_spec=hash_spec)
    watch = GroupWatch(lab)
    try:
        with daemon_session(lab, config, workdir):
            return tcp_run(
                lab,
                n,
                fail=lambda: gray_failure(lab.isp(FAILED).ns),
                wait_out=lambda: watch.wait(lambda m: FAILED not in m, "out"),
                restore=lambda: heal_gray(lab, FAILED),
                wait_back=lambda: watch.wait(lambda m: m == everyone, "back"),
            )
    finally:
        watch.close()


def tcp_anchor(lab: Lab, n: int, hash_spec: Any) -> dict[str, Any]:
    """A TCP run with the classic route, replaced by hand right after the fault and the heal."""
    everyone = {isp.name for isp in lab.isps}
    anchor_setup(lab, nat=True, hash_spec=hash_spec)

    def fail() -> None:
        gray_failure(lab.isp(FAILED).ns)
        anchor_route(lab, everyone - {FAILED})

    def restore() -> None:
        heal_gray(lab, FAILED)
        anchor_route(lab, everyone)

    try:
        return tcp_run(lab, n, fail, lambda: None, restore, lambda: None)
    finally:
        anchor_teardown(lab)


# --- (c) a recovered uplink's share of new flows -------------------------------------


class NewFlows:
    """New one-packet flows through the router's FIB (route lookups, random 5-tuples).

    A lookup marks its bucket used, as a forwarded packet does. rate None: as fast as
    one thread goes (every bucket hit many times a second); else about rate per second.
    """

    def __init__(self, lab: Lab, seed: int) -> None:
        self.lab = lab
        self.rng = random.Random(seed)
        self.count = 0
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._rate: float | None = None

    def start(self) -> None:
        """Starts at full speed."""
        self._thread = thread_in(self.lab.router, self._loop, "new-flows")

    def set_rate(self, rate: float | None) -> None:
        """Changes the rate (None: full speed)."""
        self._rate = rate

    def stop(self) -> None:
        """Stops; raises what the thread died of."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._errors:
            raise self._errors[0]

    def _loop(self) -> None:
        try:
            ipr = open_iproute()
            try:
                lan = ipr.link_lookup(ifname=ROUTER_LAN_IF)[0]
                destinations = [*self.lab.servers, *self.lab.alt_servers]
                started, done = time.monotonic(), 0
                while not self._stop.is_set():
                    rate = self._rate
                    if rate is not None:
                        # Paced against the clock since the last rate change would be
                        # exact; against the start is close enough and never bursts.
                        ahead = done / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(min(ahead, 0.01))
                            continue
                    nl.route_get(
                        ipr,
                        self.rng.choice(destinations),
                        src=FIRST_LAN_CLIENT + self.rng.randrange(250),
                        iif=lan,
                        ip_proto=socket.IPPROTO_UDP,
                        sport=self.rng.randint(1024, 65535),
                        dport=self.rng.randint(1, 65535),
                    )
                    done += 1
                    self.count += 1
                    if rate is None:
                        started, done = time.monotonic(), 0
            finally:
                ipr.close()
        except BaseException as exc:  # reported by stop()
            self._errors.append(exc)


def bucket_counts(lab: Lab) -> Counter[str]:
    """How many of the resilient group's buckets each uplink holds (read-only dump)."""
    names = {nexthop_id(FIRST_UPLINK_TABLE + i): isp.name for i, isp in enumerate(lab.isps)}

    def dump() -> str:
        # The child inherits this thread's namespace; `ip netns exec` would cost more.
        argv = ["ip", "-j", "nexthop", "bucket", "show", "id", str(nexthop_id(BALANCER_TABLE))]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    buckets = json.loads(netns.call_in(lab.router, dump) or "[]")
    return Counter(names.get(b["bucket"]["nhid"], "?") for b in buckets)


def wants(lab: Lab, name: str, buckets: int = BUCKETS) -> int:
    """The kernel's bucket target for an uplink (nh_res_group_rebalance's rounding)."""
    total = sum(isp.weight for isp in lab.isps)
    cumulative, previous = 0, 0
    for isp in lab.isps:
        cumulative += isp.weight
        upper = (buckets * cumulative + total // 2) // total
        if isp.name == name:
            return upper - previous
        previous = upper
    raise KeyError(name)


def share_run(
    lab: Lab,
    watch: GroupWatch,
    pool: ClientPool,
    idle_timer: int,
    load: str,
    seed: int,
) -> dict[str, Any]:
    """One failure and recovery; the recovered uplink's bucket count over time."""
    timeout = idle_timer + 3.0 if load == "stops" else 6.0 * idle_timer + 2
    everyone = frozenset(isp.name for isp in lab.isps)
    target = wants(lab, FAILED)
    flows = NewFlows(lab, seed)
    flows.start()
    try:
        time.sleep(0.5)  # every bucket has been hit
        gray_failure(lab.isp(FAILED).ns)
        watch.wait(lambda m: FAILED not in m, f"{FAILED} out")
        # Heal only once every connection of the failed uplink has seen its reset and
        # reconnected elsewhere: a reset noticed after the heal is the failure's, and
        # must not be counted as a connection broken by the recovery.
        dead = str(lab.isp(FAILED).address.ip)
        deadline = time.monotonic() + 15.0
        while any(slot.public in (None, dead) for slot in pool.snapshot()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections still on {FAILED} or reconnecting")
            time.sleep(0.05)
        heal = time.monotonic()
        heal_gray(lab, FAILED)
        back = watch.wait(lambda m: m == everyone, f"{FAILED} back")
        if load == "stops":
            flows.stop()
        else:
            flows.set_rate(SUSTAINED_HITS_PER_IDLE * BUCKETS / idle_timer)
        samples: list[tuple[float, int]] = []
        t_half = t_share = None
        while time.monotonic() - back < timeout:
            held = bucket_counts(lab)[FAILED]
            now = time.monotonic() - back
            samples.append((round(now, 3), held))
            if t_half is None and held >= target / 2:
                t_half = now
            if held >= target:
                t_share = now
                break
            time.sleep(0.05)
    finally:
        flows.stop()
    final = bucket_counts(lab)
    return {
        "idle_timer_s": idle_timer,
        "load": load,
        "new_flows_per_s_after": (
            0 if load == "stops" else round(SUSTAINED_HITS_PER_IDLE * BUCKETS / idle_timer, 1)
        ),
        "wanted_buckets": target,
        "t_half_s": round(t_half, 3) if t_half is not None else None,
        "t_share_s": round(t_share, 3) if t_share is not None else None,
        "timeout_s": timeout,
        "buckets_at_end": dict(sorted(final.items())),
        "buckets_at_return": samples[0][1] if samples else None,
        "trace": _thin(samples),
        "long_lived_broken_at_recovery": sum(1 for s in pool.snapshot() if s.errors_since(heal)),
        "new_flow_share_after": new_flow_share(lab, 6000, seed + 1),
    }


def _thin(samples: list[tuple[float, int]], keep: int = 12) -> list[tuple[float, int]]:
    """At most `keep` samples: the changes of count first, then evenly spread."""
    changes = [s for k, s in enumerate(samples) if k == 0 or s[1] != samples[k - 1][1]]
    if len(changes) <= keep:
        return changes
    step = len(changes) / keep
    return [changes[math.floor(k * step)] for k in range(keep)] + [changes[-1]]


def new_flow_share(lab: Lab, n: int, seed: int) -> float:
    """The recovered uplink's share of n fresh forwarded flows (kernel lookups)."""
    uplinks = fib_uplinks(lab, forwarded_flows(lab, n, random.Random(seed)))
    return round(sum(1 for u in uplinks if u == FAILED) / n, 4)


def bench_share(
    prefix: str, workdir: Path, idle_timers: Sequence[int], connections: int, seed: int
) -> dict[str, Any]:
    """Part (c): time to the weighted share, per idle timer and load."""
    runs = []
    with nat_lab(prefix, workdir / "lab", isps=3, shaping=False) as lab:
        for idle_timer in idle_timers:
            where = workdir / f"t{idle_timer}"
            config = router_config(lab, where / "ecmpd.yaml", balancer={"idle_timer": idle_timer})
            with contextlib.ExitStack() as stack:
                watch = GroupWatch(lab)
                stack.callback(watch.close)
                stack.enter_context(daemon_session(lab, config, where))
                specs = chat_specs(lab, connections)
                _, pool = stack.enter_context(chat(lab, specs, echo_timeout=ECHO_TIMEOUT))
                pool.wait_ready(30)
                for load in ("stops", "sustained"):
                    progress(f"recovered_share: idle_timer {idle_timer} s, load {load}")
                    runs.append(share_run(lab, watch, pool, idle_timer, load, seed))
        weights = [isp.weight for isp in lab.isps]
        share = lab.isp(FAILED).weight / sum(weights)
    return {
        "buckets": BUCKETS,
        "weights": weights,
        "recovered": FAILED,
        "weighted_share": round(share, 4),
        "long_lived_connections": connections,
        "runs": runs,
        "default_idle_timer_s": DEFAULT_IDLE_TIMER,
        "extrapolated_default": _extrapolate(runs),
    }


def _extrapolate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the runs predict for the default idle timer (see NOTES for the model)."""
    stops = [r for r in runs if r["load"] == "stops" and r["t_share_s"] is not None]
    sustained = [r for r in runs if r["load"] == "sustained" and r["t_share_s"] is not None]
    # Load that stops: the idle timer plus the kernel's upkeep delay (additive).
    overhead = max((r["t_share_s"] - r["idle_timer_s"] for r in stops), default=None)
    # Sustained load: the same lambda*T per bucket takes T/T_run times as long.
    scaled = max((r["t_share_s"] / r["idle_timer_s"] for r in sustained), default=None)
    return {
        "load_stops_t_share_s": (
            round(DEFAULT_IDLE_TIMER + overhead, 1) if overhead is not None else None
        ),
        "load_sustained_t_share_s": (
            round(scaled * DEFAULT_IDLE_TIMER, 1) if scaled is not None else None
        ),
        "load_sustained_new_flows_per_s": round(
            SUSTAINED_HITS_PER_IDLE * BUCKETS / DEFAULT_IDLE_TIMER, 1
        ),
    }


# --- (d) goodput ----------------------------------------------------------------------


class Sink:
    """Accepts bulk connections in the internet namespace and counts bytes per connection."""

    def __init__(self, lab: Lab) -> None:
        self.bytes: dict[tuple[str, int], int] = {}
        self._listener = netns.socket_in(lab.internet, socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", BULK_PORT))
        self._listener.listen(128)
        self._conns: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="sink", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._drain, args=(conn, peer), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drain(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        buf = bytearray(BULK_CHUNK)
        view = memoryview(buf)
        self.bytes[peer] = 0
        with contextlib.suppress(OSError):
            while n := conn.recv_into(view):
                self.bytes[peer] += n

    def snapshot(self) -> dict[tuple[str, int], int]:
        """Bytes received so far, per (public address, port)."""
        return dict(self.bytes)

    def close(self) -> None:
        """Closes everything (the listener first: no new connection after this)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5)


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def bulk(lab: Lab, flows: int, seconds: float, warmup: float) -> dict[str, Any]:
    """flows bulk TCP senders on distinct LAN clients; goodput counted at the sink."""
    assert lab.lan is not None
    sink = Sink(lab)
    stop = threading.Event()
    senders: list[socket.socket] = []
    for k in range(flows):
        sock = netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((str(lab.lan_clients[k]), 0))
        sock.connect((str(lab.servers[k % len(lab.servers)]), BULK_PORT))
        senders.append(sock)

    def send(sock: socket.socket) -> None:
        data = bytes(BULK_CHUNK)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                sock.sendall(data)

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in senders]
    try:
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        start, cpu0, t0 = sink.snapshot(), cpu_busy(), time.monotonic()
        time.sleep(seconds)
        end, cpu1, t1 = sink.snapshot(), cpu_busy(), time.monotonic()
    finally:
        stop.set()
        for sock in senders:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        for sock in senders:
            sock.close()
        sink.close()
    elapsed = t1 - t0
    per_uplink: Counter[str] = Counter()
    per_uplink_flows: Counter[str] = Counter()
    names = {str(isp.address.ip): isp.name for isp in lab.isps}
    for peer, total in end.items():
        name = names.get(peer[0], peer[0])
        per_uplink[name] += total - start.get(peer, 0)
        per_uplink_flows[name] += 1
    mbit = sum(per_uplink.values()) * 8 / elapsed / 1e6
    busy = (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1)
    return {
        "mbit": round(mbit, 1),
        "per_uplink_mbit": {
            k: round(v * 8 / elapsed / 1e6, 1) for k, v in sorted(per_uplink.items())
        },
        "flows_per_uplink": dict(sorted(per_uplink_flows.items())),
        "machine_cpu_busy": round(busy, 3),
    }


def bench_goodput(
    prefix: str,
    workdir: Path,
    rates: Sequence[int],
    flows: int,
    seconds: float,
    warmup: float,
    shaped: bool = True,
) -> dict[str, Any]:
    """Part (d) for one set of uplinks: ecmpd's balanced NAT vs a single default route."""
    total = sum(rates)
    with nat_lab(prefix, workdir / "lab", isps=len(rates), rates_mbit=rates, shaping=shaped) as lab:
        config = router_config(lab, workdir / "ecmpd.yaml")
        run_dir = workdir / "run"
        progress(f"goodput: ecmpd, {len(rates)} uplinks {list(rates)} Mbit/s, {flows} flows")
        ecmpd_cli(lab, config, run_dir, "apply")
        try:
            ecmpd = bulk(lab, flows, seconds, warmup)
        finally:
            ecmpd_cli(lab, config, run_dir, "down")
        if not shaped:
            return {"flows": flows, "ecmpd": ecmpd}
        progress("goodput: anchor, one default route")
        netns.write_sysctls(lab.router, {"net.ipv4.ip_forward": "1"})
        first = lab.isps[0]
        netns.run_in(
            lab.router,
            [
                "ip",
                "route",
                "replace",
                "default",
                "via",
                str(first.gateway),
                "dev",
                first.uplink_if,
            ],
            check=True,
        )
        nft(
            lab.router,
            f"""
            table inet anchor {{
                chain post {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname "{first.uplink_if}" masquerade
                }}
            }}
        """,
        )
        try:
            anchor = bulk(lab, flows, seconds, warmup)
        finally:
            anchor_teardown(lab)
    ecmpd["fraction"] = round(ecmpd["mbit"] / total, 4)
    anchor["fraction"] = round(anchor["mbit"] / total, 4)
    return {
        "rates_mbit": list(rates),
        "summed_mbit": total,
        "flows": flows,
        "seconds": seconds,
        "ecmpd": ecmpd,
        "anchor_single_route": anchor,
        "ratio_vs_anchor": ratio(ecmpd["mbit"], anchor["mbit"]),
        "l2_ceiling_fraction": round(L2_CEILING, 4),
    }


# --- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer flows, shorter runs")
    p.add_argument("--prefix", help="namespace name prefix (default: a fresh ecmpd-xxxx-)")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = parse_args(argv)
    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"flows_bench: {reason}", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    prefix = args.prefix or netns.new_prefix()
    install_sigterm()
    progress(f"namespaces {prefix}*")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ecmpd-flows-") as tmp:
        work = Path(tmp)
        lookups = bench_lookups(
            f"{prefix}m-", work / "m", plan.lookup_flows, args.seed, plan.hash_threshold
        )
        tcp = bench_tcp(f"{prefix}t-", work / "t", plan.connections, plan.default_hash_tcp)
        share = bench_share(
            f"{prefix}s-", work / "s", plan.idle_timers, plan.share_connections, args.seed
        )
        seconds, warmup = plan.goodput_s, plan.warmup_s
        goodput: dict[str, Any] = {
            "2_uplinks": bench_goodput(
                f"{prefix}g2-", work / "g2", (100, 200), 16, seconds, warmup
            ),
        }
        if plan.four_uplinks:
            # 32 flows: with 16, an uplink of weight 1/6 gets none one run in 20.
            goodput["4_uplinks"] = bench_goodput(
                f"{prefix}g4-", work / "g4", (100, 200, 100, 200), 32, seconds, warmup
            )
        if plan.ceiling:
            ceiling = bench_goodput(
                f"{prefix}gc-", work / "gc", (100, 200), 16, 3.0, 1.0, shaped=False
            )
            goodput["python_unshaped_ceiling_mbit"] = ceiling["ecmpd"]["mbit"]
    emit(_document(args, prefix, lookups, tcp, share, goodput, time.monotonic() - started))
    return 0


def _document(
    args: argparse.Namespace,
    prefix: str,
    lookups: dict[str, Any],
    tcp: dict[str, Any],
    share: dict[str, Any],
    goodput: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The JSON document: machine, parts, targets and whether they were met."""
    res_l = lookups["variants"]["ecmpd_resilient"]
    res_t = tcp["variants"]["ecmpd_resilient"]
    fractions = [g["ecmpd"]["fraction"] for k, g in goodput.items() if k.endswith("uplinks")]
    return {
        "benchmark": "flows",
        **machine(),
        "netns_prefix": prefix,
        "quick": args.quick,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
        "moved_lookups": lookups,
        "moved_tcp": tcp,
        "recovered_share": share,
        "goodput": goodput,
        "targets": TARGETS,
        "met": {
            "healthy_moved_on_failure": res_l["failure"]["healthy_moved"] == 0
            and res_t["failure"]["healthy_broken"] == 0,
            "moved_on_recovery": res_l["recovery"]["moved"] == 0
            and res_t["recovery"]["broken"] == 0,
            "goodput_fraction": all(f >= TARGETS["goodput_fraction"] for f in fractions),
        },
        "notes": NOTES,
    }


if __name__ == "__main__":
    sys.exit(main())

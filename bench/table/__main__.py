"""`python -m bench.table`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench import table
from bench.common import (
    arguments,
    check,
    emit,
    install_sigterm,
    machine,
    progress,
    ratio,
    summary,
    timed,
)
from bench.veth import Namespaces, build_uplinks, ip_batch, plan_uplinks, run_dir, uplinks_config
from ecmpd.config import parse_config
from ecmpd.desired import desired_state
from ecmpd.kernel.apply import KernelWriter, execute_all, reconcile
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.kernel.routemsg import RTM_GETROUTE, RTM_NEWROUTE
from ecmpd.kernel.transport import netlink_for
from ecmpd.lab import netns
from ecmpd.plan import diff

T = TypeVar("T")
FULL_ROUTES, QUICK_ROUTES = 500_000, 50_000
FULL_REPS, QUICK_REPS = 7, 3
UPLINKS = 4
BATCH_LINES = 50_000  # routes per `ip -batch` run while loading the table
RTPROT_BGP = 186
# The routes sit behind uplink 0's gateway: what a BGP session on that uplink installs.
ROUTE_BASE = 0xAC100000  # 172.16.0.0: N /32s counted up from here (172.16.0.0/12 fits 1M)


def route_lines(first: int, count: int, gateway: str) -> list[str]:
    """`ip -batch` lines adding `count` /32 routes of protocol bgp to main."""
    lines = []
    for i in range(first, first + count):
        a = ROUTE_BASE + i
        addr = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
        lines.append(f"route add {addr}/32 via {gateway} proto bgp")
    return lines


def load_table(ns: str, routes: int, gateway: str) -> float:
    """Adds the routes in batches (with progress); returns the seconds it took."""
    total = 0.0
    for first in range(0, routes, BATCH_LINES):
        count = min(BATCH_LINES, routes - first)
        lines = route_lines(first, count, gateway)
        total += netns.call_in(ns, functools.partial(ip_batch, lines))
        progress(f"table: {first + count}/{routes} routes in main")
    return total / 1000


def unfiltered_dump(writer: KernelWriter) -> int:
    """Every route of both families, read from the fixed header only; returns the count."""
    sock = netlink_for(writer.nl)
    count = 0
    for family in (socket.AF_INET, socket.AF_INET6):
        body = bytes([family]) + bytes(11)  # struct rtmsg, all zero but the family
        count += sum(1 for kind, _ in sock.dump(RTM_GETROUTE, body) if kind == RTM_NEWROUTE)
    return count


def sample(reps: int, func: Callable[[], T]) -> tuple[list[float], T]:
    """reps timed runs of func; (milliseconds, the last result)."""
    times, result = [], None
    for _ in range(reps):
        ms, result = timed(func)
        times.append(ms)
    assert result is not None
    return times, result


def measure(writer: KernelWriter, config_text: str, reps: int) -> dict[str, Any]:
    """observe, carrier path and the unfiltered anchor, on the namespace as it is now."""
    config = parse_config(config_text, "bench.yaml")
    observe_ms, (observed, facts) = sample(reps, writer.observe)
    healthy = desired_state(config, {}, facts)
    check(observed == healthy, "observe does not read back what ecmpd applied")
    first = config.uplinks[0].name
    failed = desired_state(config, {first: False}, facts)

    def carrier_path() -> int:
        # What the daemon does on carrier loss: re-read links and nexthops, plan, execute.
        now, _ = writer.observe_links(observed, facts)
        ops = diff(failed, now)
        execute_all(writer, ops)
        return len(ops)

    carrier_ms: list[float] = []
    for _ in range(reps):
        ms, ops = timed(carrier_path)
        check(ops == 1, f"taking one uplink out took {ops} operations, not 1")
        carrier_ms.append(ms)
        reconcile(writer, healthy)  # back, untimed: only the way out is quoted
    links_ms, _ = sample(reps, lambda: writer.observe_links(observed, facts))
    anchor_ms, seen = sample(reps, lambda: unfiltered_dump(writer))
    return {
        "routes_in_kernel": seen,
        "observe_ms": summary(observe_ms),
        "carrier_path_ms": summary(carrier_ms),
        "observe_links_ms": summary(links_ms),
        "anchor_unfiltered_dump_ms": summary(anchor_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = arguments(table, f"{QUICK_ROUTES} routes")
    parser.add_argument("--routes", type=int, help=f"routes in main (default {FULL_ROUTES})")
    parser.add_argument("--reps", type=int, help="timed runs per figure")
    args = parser.parse_args(argv)
    args.prefix = args.prefix or netns.new_prefix()
    routes = args.routes or (QUICK_ROUTES if args.quick else FULL_ROUTES)
    reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    install_sigterm()
    uplinks = plan_uplinks(UPLINKS)
    config_text = uplinks_config(uplinks)
    with Namespaces(args.prefix) as spaces, run_dir() as run:
        host, gateways = spaces.create("tbl"), spaces.create("gw")
        build_uplinks(host, gateways, uplinks)
        writer = netns.call_in(host, lambda: KernelWriter(open_iproute(), Record(Path(run))))
        try:
            config = parse_config(config_text, "bench.yaml")
            writer.use_config(config)  # reads what the daemon's writer reads
            _, facts = netns.call_in(host, writer.observe)
            netns.call_in(host, lambda: reconcile(writer, desired_state(config, {}, facts)))
            progress("ecmpd applied; measuring with an empty main table")
            empty = netns.call_in(host, lambda: measure(writer, config_text, reps))
            load_s = load_table(host, routes, str(uplinks[0].gateway.ip))
            progress("measuring with the full table")
            full = netns.call_in(host, lambda: measure(writer, config_text, reps))
        finally:
            netns.call_in(host, writer.close)
            netns.call_in(host, writer.ipr.close)
    check(full["routes_in_kernel"] >= routes, "the table did not load")

    def med(doc: dict[str, Any], key: str) -> float:
        return float(doc[key]["median"])

    emit(
        {
            "benchmark": "table",
            "netns_prefix": args.prefix,
            **machine(),
            "routes": routes,
            "uplinks": UPLINKS,
            "table_load_s": round(load_s, 2),
            "empty_table": empty,
            "full_table": full,
            "ratio_observe_full_vs_empty": ratio(med(full, "observe_ms"), med(empty, "observe_ms")),
            "ratio_observe_vs_unfiltered_dump": ratio(
                med(full, "observe_ms"), med(full, "anchor_unfiltered_dump_ms")
            ),
            "ratio_carrier_path_full_vs_empty": ratio(
                med(full, "carrier_path_ms"), med(empty, "carrier_path_ms")
            ),
            "notes": [
                "All figures in-process wall ms in the benchmark namespace, anchors in the "
                "same run. observe_ms with kernel-side dump filters (protocol/table); the "
                "anchor is one unfiltered dump of both families parsed from the header only.",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

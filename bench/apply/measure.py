"""One uplink count: ecmpd's apply, re-apply and failover replace, and the `ip` anchor."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.common import (
    check,
    progress,
    ratio,
    summary,
    timed,
)
from bench.veth import (
    Namespaces,
    VethUplink,
    build_uplinks,
    ip_batch,
    nft_file,
    plan_uplinks,
    run_dir,
    uplinks_config,
)
from ecmpd.config import Config, parse_config
from ecmpd.desired import desired_state
from ecmpd.export.iptext import state_commands
from ecmpd.kernel.apply import KernelWriter, reconcile
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.kernel.sysctl import write_sysctl
from ecmpd.lab import netns
from ecmpd.model import DesiredState, NexthopGroup, Sysctl
from ecmpd.plan import Op, OpKind, diff

T = TypeVar("T")


def netlink_ops(ops: Sequence[Op]) -> int:
    """How many of the operations are netlink requests (sysctls are file writes)."""
    return sum(1 for op in ops if not isinstance(op.obj, Sysctl))


@dataclass
class Host:
    """One benchmark namespace with an rtnetlink socket and ecmpd's writer bound to it."""

    ns: str
    writer: KernelWriter

    def call(self, func: Callable[[], T]) -> T:
        """Runs func in a thread inside the namespace (sysctls follow the thread)."""
        return netns.call_in(self.ns, func)

    def close(self) -> None:
        """Closes the writer's raw socket and the IPRoute (either keeps the namespace alive)."""
        self.writer.close()
        self.writer.ipr.close()


def open_host(ns: str, run: Path) -> Host:
    """A Host whose socket was opened inside ns (a socket stays in its namespace).

    The writer opens its raw netlink socket in the IPRoute's namespace itself.
    """
    ipr = netns.call_in(ns, open_iproute)
    return Host(ns, KernelWriter(ipr, Record(run)))


def desired_for(host: Host, config: Config, health: dict[str, bool] | None = None) -> DesiredState:
    """The desired state against the host's facts, as `ecmpd apply` computes it."""
    _, facts = host.call(host.writer.observe)
    return desired_state(config, health or {}, facts)


@dataclass
class Samples:
    """Raw millisecond samples of one uplink count, summarised at the end."""

    apply: list[float]
    reapply: list[float]
    down: list[float]
    observe_empty: list[float]
    observe_applied: list[float]
    desired: list[float]
    diff: list[float]
    batch_raw: list[float]
    batch_empty: list[float]
    batch_net: list[float]
    sysctl_direct: list[float]
    nft_file: list[float]

    @classmethod
    def new(cls) -> Samples:
        """Empty sample lists."""
        return cls(*([] for _ in range(12)))


def ecmpd_round(host: Host, config: Config, samples: Samples) -> tuple[int, int]:
    """Apply from scratch, re-apply, `down`; returns (netlink ops, sysctl writes)."""

    def run() -> tuple[int, int]:
        writer = host.writer
        ms, (empty, facts) = timed(writer.observe)
        samples.observe_empty.append(ms)
        check(empty == DesiredState(), "the namespace is not empty before apply")
        ms, desired = timed(lambda: desired_state(config, {}, facts))
        samples.desired.append(ms)
        ms, planned = timed(lambda: diff(desired, empty))
        samples.diff.append(ms)

        ms, first = timed(lambda: reconcile(writer, desired))
        samples.apply.append(ms)
        check(first.ops == planned, "apply executed something other than the plan")
        ms, _ = timed(writer.observe)
        samples.observe_applied.append(ms)
        ms, second = timed(lambda: reconcile(writer, desired))
        samples.reapply.append(ms)
        check(not second.ops, f"re-apply executed {len(second.ops)} operations")
        ms, gone = timed(lambda: reconcile(writer, DesiredState()))
        samples.down.append(ms)
        check(len(gone.ops) == len(first.ops), "down did not undo every operation")
        return netlink_ops(first.ops), len(first.ops) - netlink_ops(first.ops)

    return host.call(run)


def write_sysctls(sysctls: Sequence[Sysctl]) -> None:
    """Writes sysctls straight to /proc/sys, as the by-hand recipe would."""
    for s in sysctls:
        write_sysctl(s.name, s.value)


def anchor_round(host: Host, desired: DesiredState, samples: Samples) -> None:
    """The same state by hand: `ip -batch` (after an empty one), sysctls written directly,
    and the connection-mark table by `nft -j -f` (a process, as by hand: its start-up
    is not subtracted)."""
    commands = [c.removeprefix("ip ") for c in state_commands(desired) if c.startswith("ip ")]
    sysctls = sorted(desired.sysctls, key=lambda s: s.name)
    without_sysctls = DesiredState(
        rules=desired.rules,
        routes=desired.routes,
        nexthops=desired.nexthops,
        groups=desired.groups,
        nft=desired.nft,
    )

    def run() -> None:
        empty = ip_batch([])
        raw = ip_batch(commands)
        ms, _ = timed(lambda: write_sysctls(sysctls))
        tables = [nft_file(t) for t in desired.nft]
        samples.nft_file.append(sum(tables))
        samples.batch_empty.append(empty)
        samples.batch_raw.append(raw)
        samples.batch_net.append(raw - empty)
        samples.sysctl_direct.append(ms)
        # The anchor must have built exactly ecmpd's state, or the ratio means nothing.
        observed, _ = host.writer.observe()
        check(observed == without_sysctls, "ip -batch built a different state than ecmpd")
        reconcile(host.writer, DesiredState())

    host.call(run)


def group_flip(
    host: Host, config: Config, first: str, flips: int
) -> tuple[list[float], list[float]]:
    """Times ecmpd's failover (uplink `first` out of the group) and failback, alternating."""
    writer = host.writer

    def run() -> tuple[list[float], list[float]]:
        _, facts = writer.observe()
        healthy = desired_state(config, {}, facts)
        applied = reconcile(writer, healthy)
        check(bool(applied.ops), "nothing applied before the failover")
        observed, facts = writer.observe()
        failed = desired_state(config, {first: False}, facts)
        out, back = diff(failed, observed), diff(healthy, failed)
        for ops in (out, back):
            check(
                len(ops) == 1
                and ops[0].kind is OpKind.REPLACE
                and isinstance(ops[0].obj, NexthopGroup),
                f"failover is not one group replace: {[str(op) for op in ops]}",
            )
        down_ms, up_ms = [], []
        for _ in range(flips):
            down_ms.append(timed(lambda: writer.execute(out[0]))[0])
            up_ms.append(timed(lambda: writer.execute(back[0]))[0])
        check(not reconcile(writer, healthy).ops, "the kernel drifted during the flips")
        reconcile(writer, DesiredState())
        return down_ms, up_ms

    return host.call(run)


def multipath_flip(
    host: Host, uplinks: Sequence[VethUplink], flips: int
) -> tuple[list[float], list[float], list[float]]:
    """The classic recipe: replace a hash-threshold multipath default route without uplink 0.

    Returns (raw `ip route replace` ms, empty `ip -batch` ms, in-process netlink ms).
    """
    ipr = host.writer.ipr
    host.call(host.writer.observe)  # fills writer.ifindex
    index = dict(host.writer.ifindex)

    def hops(members: Sequence[VethUplink]) -> str:
        return " ".join(
            f"nexthop via {u.gateway.ip} dev {u.ifname} weight {u.weight}" for u in members
        )

    def multipath(members: Sequence[VethUplink]) -> list[dict[str, Any]]:
        return [
            {"gateway": str(u.gateway.ip), "oif": index[u.ifname], "hops": u.weight - 1}
            for u in members
        ]

    full, failed = (
        f"route replace default {hops(uplinks)}",
        f"route replace default {hops(uplinks[1:])}",
    )
    nl_full, nl_failed = multipath(uplinks), multipath(uplinks[1:])

    def run() -> tuple[list[float], list[float], list[float]]:
        raw, empty, inproc = [], [], []
        ip_batch([full])
        for _ in range(flips):
            empty.append(ip_batch([]))
            raw.append(ip_batch([failed]))
            ip_batch([full])
        for _ in range(flips):
            inproc.append(
                timed(lambda: ipr.route("replace", dst="0.0.0.0/0", multipath=nl_failed))[0]
            )
            ipr.route("replace", dst="0.0.0.0/0", multipath=nl_full)
        ipr.route("del", dst="0.0.0.0/0")
        return raw, empty, inproc

    return host.call(run)


def bench_uplinks(spaces: Namespaces, n: int, reps: int, flips: int) -> dict[str, Any]:
    """All measurements for N uplinks, in four fresh namespaces removed afterwards."""
    uplinks = plan_uplinks(n)
    names = [spaces.create(f"{n}{role}") for role in ("e", "e-gw", "a", "a-gw")]
    hosts: list[Host] = []
    try:
        progress(f"{n} uplinks: building veths")
        build_uplinks(names[0], names[1], uplinks)
        build_uplinks(names[2], names[3], uplinks)
        config = parse_config(uplinks_config(uplinks), f"<{n} uplinks>")
        threshold = parse_config(
            uplinks_config(uplinks, {"balancer": {"group": "hash-threshold"}}), "<threshold>"
        )
        with run_dir() as run_e, run_dir() as run_a:
            ecmpd_host, anchor = open_host(names[0], run_e), open_host(names[2], run_a)
            hosts += [ecmpd_host, anchor]
            for host in (ecmpd_host, anchor):
                # As `ecmpd apply` builds it: no dhcp/ra uplink, no main defaults to read.
                host.writer.use_config(config)
            return measure(ecmpd_host, anchor, uplinks, config, threshold, reps, flips)
    finally:
        for host in hosts:
            host.close()
        spaces.remove(names[::-1])


def measure(
    ecmpd_host: Host,
    anchor: Host,
    uplinks: Sequence[VethUplink],
    config: Config,
    threshold: Config,
    reps: int,
    flips: int,
) -> dict[str, Any]:
    """Interleaves ecmpd's rounds with the anchor's, then the failover flips; one result."""
    n = len(uplinks)
    desired = desired_for(anchor, config)
    check(desired == desired_for(ecmpd_host, config), "the two namespaces want different states")
    samples = Samples.new()
    counts = set()
    for rep in range(reps):
        progress(f"{n} uplinks: round {rep + 1}/{reps}")
        # Interleaved, so drift in the machine's load hits both sides alike.
        counts.add(ecmpd_round(ecmpd_host, config, samples))
        anchor_round(anchor, desired, samples)
    check(len(counts) == 1, f"apply did different amounts of work: {counts}")
    ((ops, sysctl_writes),) = counts

    progress(f"{n} uplinks: failover flips")
    first = uplinks[0].name
    out_ms, back_ms = group_flip(ecmpd_host, config, first, flips)
    ht_out_ms, _ = group_flip(ecmpd_host, threshold, first, flips)
    mp_raw, mp_empty, mp_netlink = multipath_flip(anchor, uplinks, flips)
    mp_net = [r - e for r, e in zip(mp_raw, mp_empty, strict=True)]

    apply_ms = summary(samples.apply)
    failover_ms = summary(out_ms)
    batch_ms = (
        statistics.median(samples.batch_net)
        + statistics.median(samples.sysctl_direct)
        + statistics.median(samples.nft_file)
    )
    multipath_ms = statistics.median(mp_net)
    return {
        "uplinks": n,
        "apply_ms": apply_ms,
        "apply_ops": ops,
        "apply_sysctl_writes": sysctl_writes,
        "reapply_ms": summary(samples.reapply),
        "reapply_ops": 0,
        "down_ms": summary(samples.down),
        "phases_ms": {
            "observe_empty": _median(samples.observe_empty),
            "desired_state": _median(samples.desired),
            "diff": _median(samples.diff),
            "observe_applied": _median(samples.observe_applied),
            # What is left of apply once it has observed and planned: the operations.
            "execute_estimate": round(
                apply_ms["median"]
                - statistics.median(samples.observe_empty)
                - statistics.median(samples.diff),
                4,
            ),
        },
        "failover_ms": failover_ms,
        "failover_ops": 1,
        "failback_ms": summary(back_ms),
        "failover_hash_threshold_group_ms": summary(ht_out_ms),
        "anchor_ip_batch_ms": round(batch_ms, 4),
        "anchor_ip_batch": {
            "commands": len([c for c in state_commands(desired) if c.startswith("ip ")]),
            "raw_ms": summary(samples.batch_raw),
            "empty_ms": summary(samples.batch_empty),
            "sysctl_direct_ms": _median(samples.sysctl_direct),
            "nft_file_ms": _median(samples.nft_file),
        },
        "anchor_multipath_replace_ms": round(multipath_ms, 4),
        "anchor_multipath_replace": {
            "raw_ms": summary(mp_raw),
            "empty_ms": summary(mp_empty),
            "netlink_ms": summary(mp_netlink),
        },
        "ratio_apply_vs_ip_batch": ratio(apply_ms["median"], batch_ms),
        "ratio_failover_vs_multipath_replace": ratio(failover_ms["median"], multipath_ms),
        "ratio_failover_vs_multipath_netlink": ratio(
            failover_ms["median"], statistics.median(mp_netlink)
        ),
    }


def _median(samples: Sequence[float]) -> float:
    return round(statistics.median(samples), 4)

"""Test helpers: run ecmpd inside a lab namespace and snapshot kernel state with `ip`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ecmpd.cli.explain import explain_flow
from ecmpd.config import load_config
from ecmpd.explain import Flow
from ecmpd.kernel.apply import KernelWriter
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.lab import netns
from ecmpd.model import RTPROT_ECMPD

SYSCTLS = ("net.ipv4.fib_multipath_hash_policy", "net.ipv4.fib_multipath_hash_fields")


def ecmpd(
    ns: str,
    config: Path,
    run_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    fail_after: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI inside a namespace, as a user would.

    `fail_after`: its kernel writer refuses the operation after that many (a test double,
    tests/integration/faultywriter.py).
    """
    program = (
        ["ecmpd"] if fail_after is None else ["tests.integration.faultywriter", str(fail_after)]
    )
    argv = [sys.executable, "-m", *program, "-c", str(config), "--run-dir", str(run_dir), *args]
    if env:
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    return netns.run_in(ns, argv, capture_output=True, text=True, timeout=120)


def ip_json(ns: str, *args: str) -> Any:
    out = netns.run_in(ns, ["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def snapshot(ns: str) -> dict[str, Any]:
    """Every rule, route (all tables), nexthop and the hash sysctls, comparable with ==."""
    routes = ip_json(ns, "route", "show", "table", "all") + ip_json(
        ns, "-6", "route", "show", "table", "all"
    )
    # IPv6 link-local routes appear whenever the kernel finishes autoconfiguring a
    # fresh veth (DAD), independent of ecmpd; they would make snapshots racy.
    routes = [
        r
        for r in routes
        if not (r.get("protocol") == "kernel" and str(r.get("dst", "")).startswith("fe80:"))
    ]
    for r in routes:  # link state flags change with carrier, not with ecmpd
        r.pop("flags", None)
    return {
        "rules": ip_json(ns, "rule", "show"),
        "routes": sorted(routes, key=json.dumps),
        "nexthops": sorted(ip_json(ns, "-d", "nexthop", "show"), key=json.dumps),
        "sysctls": {k: netns.read_sysctl(ns, k) for k in SYSCTLS},
    }


def owned(snap: dict[str, Any]) -> dict[str, Any]:
    """Only the objects carrying ecmpd's protocol id."""
    mine = {str(RTPROT_ECMPD), "236"}
    return {
        kind: [o for o in snap[kind] if str(o.get("protocol")) in mine]
        for kind in ("rules", "routes", "nexthops")
    }


def foreign(snap: dict[str, Any]) -> dict[str, Any]:
    """Everything not carrying ecmpd's protocol id."""
    mine = {str(RTPROT_ECMPD), "236"}
    return {
        kind: [o for o in snap[kind] if str(o.get("protocol")) not in mine]
        for kind in ("rules", "routes", "nexthops")
    }


@contextmanager
def netlink_monitor(ns: str) -> Iterator[list[str]]:
    """Collects route, rule and nexthop change notifications in the namespace while active.

    Routes the kernel makes itself (`proto kernel`: IPv6 link-local autoconfiguration
    finishing on fresh veths) are left out; ecmpd never creates one.
    """
    proc = netns.popen_in(
        ns,
        ["ip", "-o", "monitor", "route", "rule", "nexthop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    time.sleep(0.3)  # let it subscribe before the change under test
    try:
        yield lines
    finally:
        time.sleep(0.3)  # let late notifications arrive
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        lines.extend(
            line for line in out.splitlines() if line.strip() and "proto kernel" not in line
        )


def ip_route_get(ns: str, flows: Sequence[Flow]) -> list[dict[str, Any]]:
    """`ip route get` for every flow in one `ip -batch` (the family from the addresses)."""
    lines = []
    for f in flows:
        words = ["route", "get", str(f.dst)]
        if f.src:
            words += ["from", str(f.src)]
        if f.iif:
            words += ["iif", f.iif]
        words += [
            "ipproto",
            {6: "tcp", 17: "udp"}[f.ip_proto or 6],
            "sport",
            str(f.sport),
            "dport",
            str(f.dport),
        ]
        lines.append(" ".join(words))
    family = ["-6"] if flows and flows[0].dst.version == 6 else []
    out = netns.run_in(
        ns,
        ["ip", *family, "-j", "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [json.loads(line)[0] for line in out.stdout.splitlines() if line.strip()]
    assert len(answers) == len(flows)
    return answers


def explain_all(ns: str, config_path: Path, flows: Sequence[Flow]) -> list[dict[str, Any]]:
    """ecmpd's explain for every flow, in-process inside the router namespace."""
    config = load_config(config_path)

    def run() -> list[dict[str, Any]]:
        ipr = open_iproute()
        try:
            observed, facts = KernelWriter(ipr, Record(Path("/nonexistent"))).observe()
            return [explain_flow(ipr, config, observed, facts, f) for f in flows]
        finally:
            ipr.close()

    return netns.call_in(ns, run)

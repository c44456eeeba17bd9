"""Bare namespaces with veth uplinks (no lab ISPs), for the apply and table benchmarks."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import yaml

from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.kernel.nftdoc import render_table
from ecmpd.lab import netns
from ecmpd.model import NftTable

OPERSTATE_TIMEOUT = 10.0
# Explicit ifindexes for the uplink ends: a fresh namespace numbers its links from 2,
# and a veth whose two ends share an index gets its carrier-up delayed by the
# kernel's linkwatch (non-urgent) by up to a second per link.
UPLINK_IFINDEX = 1001


class Namespaces:
    """The namespaces one benchmark run creates; every one is removed on close, whatever happened.

    Only names this object created are removed (never by prefix): a prefix given on
    the command line might match namespaces that are not the benchmark's.
    """

    def __init__(self, prefix: str) -> None:
        netns.check_name(f"{prefix}x")
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, suffix: str) -> str:
        """Creates `<prefix><suffix>` (refusing an existing one) and returns its name."""
        name = netns.check_name(f"{self.prefix}{suffix}")
        netns.create_netns(name)
        self.created.append(name)
        return name

    def remove(self, names: Sequence[str]) -> None:
        """Removes some of this run's namespaces now, carrying on past errors."""
        pending: BaseException | None = None
        for name in names:
            try:
                netns.remove_netns(name)
                if name in self.created:
                    self.created.remove(name)
            except BaseException as exc:  # remove the others before reporting
                pending = pending or exc
        if pending is not None:
            raise pending

    def close(self) -> None:
        """Removes every namespace still left."""
        self.remove(list(reversed(self.created)))

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class VethUplink:
    """One uplink of a benchmark host: a veth whose peer (the gateway) is in another namespace."""

    name: str
    ifname: str
    address: IPv4Interface
    gateway: IPv4Interface
    weight: int
    table: int


def plan_uplinks(n: int, weights: Sequence[int] = (1, 2, 3, 4)) -> list[VethUplink]:
    """N uplinks u0..uN-1 on 10.<1+i//256>.<i%256>.0/24, gateway .1, weights cycling."""
    uplinks = []
    for i in range(n):
        net = f"10.{1 + i // 256}.{i % 256}"
        uplinks.append(
            VethUplink(
                name=f"up{i}",
                ifname=f"u{i}",
                address=IPv4Interface(f"{net}.2/24"),
                gateway=IPv4Interface(f"{net}.1/24"),
                weight=weights[i % len(weights)],
                table=FIRST_UPLINK_TABLE + i,
            )
        )
    return uplinks


def build_uplinks(host: str, gateways: str, uplinks: Sequence[VethUplink]) -> None:
    """Creates the veths (host end u<i>, gateway end g<i>), addresses them, waits for carrier."""
    with (
        netns.iproute(host) as hipr,
        netns.iproute(gateways) as gipr,
        netns.netns_fd(gateways) as gw_fd,
    ):
        for handle in (hipr, gipr):
            handle.link("set", index=_index(handle, "lo"), state="up")
        for i, up in enumerate(uplinks):
            # Both ends are born in their namespaces: nothing ever appears in the
            # root namespace, not even for a moment.
            hipr.link(
                "add",
                ifname=up.ifname,
                index=UPLINK_IFINDEX + i,
                kind="veth",
                peer={"ifname": f"g{i}", "net_ns_fd": gw_fd},
            )
            _address_up(gipr, f"g{i}", up.gateway)
            _address_up(hipr, up.ifname, up.address)
        _wait_carrier(hipr, len(uplinks))


def _index(ipr: Any, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname!r} in {ipr.status.get('netns')}")
    return int(found[0])


def _address_up(ipr: Any, ifname: str, address: IPv4Interface) -> None:
    index = _index(ipr, ifname)
    ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    ipr.link("set", index=index, state="up")


def _wait_carrier(ipr: Any, count: int, timeout: float = OPERSTATE_TIMEOUT) -> None:
    """Waits until `count` veths are operationally up (carrier comes from linkwatch, later)."""
    deadline = time.monotonic() + timeout
    while True:
        up = sum(
            1
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFNAME") != "lo" and link.get_attr("IFLA_OPERSTATE") == "UP"
        )
        if up >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {up} of {count} uplinks up after {timeout}s")
        time.sleep(0.01)


def uplinks_config(uplinks: Sequence[VethUplink], extra: dict[str, Any] | None = None) -> str:
    """An ecmpd YAML config with one uplink per veth (defaults for everything else)."""
    data: dict[str, Any] = {
        "uplinks": [
            {
                "name": up.name,
                "interface": up.ifname,
                "gateway": str(up.gateway.ip),
                "weight": up.weight,
                "table": up.table,
            }
            for up in uplinks
        ],
    }
    data.update(extra or {})
    return yaml.safe_dump(data, sort_keys=False)


def ip_batch(commands: Sequence[str]) -> float:
    """Runs `ip -batch` on the commands in the calling thread's namespace; returns wall ms.

    Call it through netns.call_in: the child inherits the thread's namespace, so no
    `ip netns exec` (its mount-namespace set-up) lands in the measurement.
    """
    return _timed_file_run(["ip", "-batch"], "".join(f"{c}\n" for c in commands), ".ip")


def nft_file(table: NftTable) -> float:
    """Runs `nft -j -f` on the table's document in the calling thread's namespace, as a
    by-hand `nft -f` would (its process start included); returns wall ms."""
    return _timed_file_run(["nft", "-j", "-f"], json.dumps(render_table(table)), ".json")


def _timed_file_run(argv: list[str], content: str, suffix: str) -> float:
    """Writes content to a temporary file, runs argv with its name appended (in the
    calling thread's namespace) and returns the run's wall ms; raises if it failed."""
    with tempfile.NamedTemporaryFile("w", prefix="ecmpd-bench-", suffix=suffix) as f:
        f.write(content)
        f.flush()
        start = time.perf_counter_ns()
        done = subprocess.run([*argv, f.name], capture_output=True, text=True, timeout=60)
        elapsed = (time.perf_counter_ns() - start) / 1e6
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


@contextlib.contextmanager
def run_dir() -> Iterator[Path]:
    """A private temporary run dir (ecmpd's sysctl record goes there)."""
    with tempfile.TemporaryDirectory(prefix="ecmpd-bench-run-") as d:
        yield Path(d)

"""The flows benchmark's labs, configs and daemon, and its anchor: a classic multipath route."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from ecmpd.config.hashspec import parse_hash
from ecmpd.lab import netns
from ecmpd.lab.daemon import LabDaemon, running_daemon
from ecmpd.lab.faults import load_nft
from ecmpd.lab.labconfig import lab_config
from ecmpd.lab.layout import IspInfo, Lab
from ecmpd.lab.sources import nat_only
from ecmpd.lab.topology import add_lan_clients, lab_session
from ecmpd.lab.wait import wait_until

FAILED = "isp-a"
# The l4 fields as a custom hash (policy 3): the kernel hashes each forwarded packet's
# 5-tuple, as it does for packets from a physical LAN. Policy 1 (`hash: l4`) would use
# the hash a packet already carries, here the LAN sender's socket txhash, which crosses
# the veth and is re-drawn on every retransmission timeout: flows then move on their own.
L4_FIELDS = ["src-ip", "dst-ip", "proto", "src-port", "dst-port"]
# Fast, so a benchmark's failures and recoveries take a second, not several; how the
# daemon detects a failure does not change which flows move.
TUNED_CHECK = {"interval": "50ms", "timeout": "80ms", "down_after": 3, "up_after": 3}
START_TIMEOUT = 20.0
GROUP_TIMEOUT = 15.0
ECHO_TIMEOUT = 2.0  # a stall this long on a chat connection counts as broken
LAN_CLIENTS = 100


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
def daemon_session(lab: Lab, config: Path, workdir: Path) -> Iterator[LabDaemon]:
    """The daemon, every uplink in service; afterwards stopped and `ecmpd down`."""
    try:
        with running_daemon(lab.router, config, workdir) as daemon:
            wait_until(daemon.all_in_service, START_TIMEOUT, "every uplink in service", 0.02)
            yield daemon
    finally:
        ecmpd_cli(lab, config, workdir / "run", "down")


def anchor_setup(lab: Lab, nat: bool, hash_spec: Any = "l4") -> None:
    """Forwarding, the hash ecmpd would set, and (for real traffic) masquerade by hand."""
    spec = parse_hash(hash_spec)
    sysctls = {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": str(spec.policy)}
    if spec.fields:
        sysctls["net.ipv4.fib_multipath_hash_fields"] = str(spec.fields_mask())
    netns.write_sysctls(lab.router, sysctls)
    anchor_route(lab, {isp.name for isp in lab.isps})
    if nat:
        anchor_nat(lab, lab.isps)


def anchor_nat(lab: Lab, isps: Sequence[IspInfo]) -> None:
    """Masquerade by hand out of these ISPs' uplinks (table inet anchor; see anchor_teardown)."""
    rules = "\n".join(f'oifname "{isp.uplink_if}" masquerade' for isp in isps)
    load_nft(
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

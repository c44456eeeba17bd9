"""One MPTCP connection over every uplink, kept by the real `ecmpd run` (host mode, lab).

An MPTCP server in the internet namespace (Python IPPROTO_MPTCP), one download from the
host: its subflows are read from the kernel (sock_diag) by the uplink they leave by, and
the daemon shows them itself (status, metrics, `ecmpd watch`).
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest
import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import detection_time, recovery_time
from ecmpd.health.window import default_window
from ecmpd.lab.faults import gray_failure, heal, random_loss
from ecmpd.lab.labconfig import lab_config, write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.mptcp import Download, Server, SubflowWatch
from ecmpd.lab.wait import wait_for
from ecmpd.subflows import READ_INTERVAL
from tests.integration.fixtures.daemon import DaemonProc, running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.metrics import PORT, sample, scrape
from tests.integration.fixtures.mptcp import endpoints

CHECK = CheckConfig()
# One endpoint change (one genetlink request) and the polling, with room for a loaded
# 2-core machine, on top of the probing bounds of health.fsm.
KERNEL_MARGIN = 0.5
# The bound: a returning uplink carries the existing connection again within 2 s
# of being back in service (the kernel takes 0.4-0.6 s after the endpoint returns).
RETURN_BOUND = 2.0
# 400 MB at the lab's 300 Mbit/s: about 11 s, long enough for a failure, a return and
# a drain to happen while it runs.
SIZE = 400 * 1000 * 1000


def watch(lab: Lab, v6: bool) -> SubflowWatch:
    """The router's one MPTCP connection, its subflows by uplink."""
    return SubflowWatch(
        lab.router,
        {(i.address6.ip if v6 and i.address6 else i.address.ip): i.name for i in lab.isps},
    )


def mptcp_lab_config(lab: Lab, path: Path, v6: bool) -> Path:
    metrics = {"listen": f"127.0.0.1:{PORT}"}
    return write_lab_config(lab, path, ipv6=v6, extra={"mptcp": True, "metrics": metrics})


def daemon_counts(daemon: DaemonProc) -> dict[str, tuple[int, int]]:
    """(connections, subflows) per uplink as the daemon's own status shows them."""
    return {
        u.name: (u.mptcp.connections, u.mptcp.subflows)
        for u in daemon.status().uplinks
        if u.mptcp is not None
    }


@pytest.mark.parametrize("lab", [{"isps": 2, "servers": 2}], indirect=True)
def test_one_download_uses_every_uplink_survives_a_failure_and_gets_the_uplink_back(
    lab: Lab, tmp_path: Path
) -> None:
    config = mptcp_lab_config(lab, tmp_path / "ecmpd.yaml", v6=False)
    subflows = watch(lab, v6=False)
    a, b = (isp.name for isp in lab.isps)
    try:
        with (
            running_daemon(lab, config, tmp_path / "d") as daemon,
            Server(lab.internet, lab.servers[0]) as server,
        ):
            wait_for(daemon.all_in_service, 10, "both uplinks in service")
            dl = Download(lab.router, lab.servers[0], server.port, SIZE).start()
            assert dl.is_mptcp()
            wait_for(lambda: subflows.carrying(a) and subflows.carrying(b), 5, "every uplink")
            # The daemon reads the subflows itself, on its kernel thread, every READ_INTERVAL.
            one_each = {a: (1, 1), b: (1, 1)}
            fresh = READ_INTERVAL + KERNEL_MARGIN
            wait_for(lambda: daemon_counts(daemon) == one_each, fresh, "the daemon's figures")
            shown = ecmpd(lab.router, config, tmp_path / "d" / "run", "status", "--json")
            assert shown.returncode == 0, shown.stderr
            doc = json.loads(shown.stdout)
            assert doc["source"] == "daemon"
            for entry in doc["uplinks"]:
                isp = lab.isp(entry["name"])
                assert entry["mptcp"] == {
                    "endpoints": [str(isp.address.ip)],
                    "backup": False,
                    "connections": 1,
                    "subflows": 1,
                    "families": {
                        "ipv4": {
                            "endpoint": str(isp.address.ip),
                            "backup": False,
                            "connections": 1,
                            "subflows": 1,
                        }
                    },
                }
            samples = scrape(lab.router)
            for name in (a, b):
                key = {"uplink": name, "family": "ipv4"}
                assert sample(samples, "ecmpd_mptcp_endpoint", **key) == 1
                assert sample(samples, "ecmpd_mptcp_endpoint_backup", **key) == 0
                assert sample(samples, "ecmpd_mptcp_connections", **key) == 1
                assert sample(samples, "ecmpd_mptcp_subflows", **key) == 1
            frame = ecmpd(lab.router, config, tmp_path / "d" / "run", "watch", "--once",
                          env={"COLUMNS": "200"})  # fmt: skip
            assert frame.returncode == 0, frame.stderr
            rows = [line for line in frame.stdout.splitlines() if a in line or b in line]
            assert len(rows) == 2 and all("1 conn, 1 subflows" in r for r in rows), frame.stdout

            # isp-a fails mid-transfer: the daemon takes its endpoint away.
            failed_at = time.monotonic()
            gray_failure(lab.ns(a))
            bound = detection_time(CHECK) + KERNEL_MARGIN
            wait_for(lambda: a not in subflows.now(), bound, f"{a}'s subflow gone")
            wait_for(lambda: daemon_counts(daemon)[a] == (0, 0), fresh, "the daemon saw it")
            assert daemon.uplink(a).mptcp.endpoints == ()  # type: ignore[union-attr]
            before = dl.received
            wait_for(lambda: dl.received > before + 10_000_000, 5, "the transfer going on")
            assert dl.error is None

            # It returns: the same connection has a subflow carrying data on it again.
            heal(lab.ns(a))
            wait_for(lambda: daemon.uplink(a).in_balancer, recovery_time(CHECK) + 2, "back")
            back_at = time.monotonic()
            took = wait_for(lambda: subflows.carrying(a, 0), RETURN_BOUND, f"{a} carrying")
            assert took <= RETURN_BOUND
            assert subflows.token and dl.error is None

            # Drained: its subflow goes; undrained: back again.
            r = ecmpd(lab.router, config, tmp_path / "d" / "run", "drain", b)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: b not in subflows.now(), 1 + KERNEL_MARGIN, f"{b}'s subflow gone")
            r = ecmpd(lab.router, config, tmp_path / "d" / "run", "undrain", b)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: subflows.carrying(b, 0), RETURN_BOUND + 1, f"{b} carrying again")

            # The download completes, with every byte and no error, on one connection.
            assert dl.wait(90), f"download stalled at {dl.received} bytes"
            assert dl.error is None and dl.received == SIZE
            assert back_at > failed_at
    finally:
        subflows.close()


@pytest.mark.parametrize("lab", [{"isps": 2, "servers": 2, "shaping": False}], indirect=True)
def test_ipv6_one_connection_per_uplink_endpoints_follow_a_failure(
    lab: Lab, tmp_path: Path
) -> None:
    config = mptcp_lab_config(lab, tmp_path / "ecmpd.yaml", v6=True)
    subflows = watch(lab, v6=True)
    a, b = (isp.name for isp in lab.isps)
    try:
        with (
            running_daemon(lab, config, tmp_path / "d") as daemon,
            Server(lab.internet, lab.servers6[0]) as server,
        ):
            wait_for(daemon.every_family_in_service, 10, "every family in service")
            families = {type(ip_address(e["address"])) for e in endpoints(lab.router)}
            assert families == {IPv4Address, IPv6Address}
            dl = Download(lab.router, lab.servers6[0], server.port, 1 << 40).start()
            wait_for(lambda: subflows.carrying(a) and subflows.carrying(b), 5, "every uplink")
            gray_failure(lab.ns(b))
            bound = detection_time(CHECK) + KERNEL_MARGIN
            wait_for(lambda: b not in subflows.now(), bound, f"{b}'s subflow gone")
            heal(lab.ns(b))
            wait_for(lambda: subflows.carrying(b, 0), recovery_time(CHECK) + 3, f"{b} back")
            assert dl.error is None and not dl.done.is_set()
    finally:
        subflows.close()


# What the degraded test injects and the soft limit it crosses: each probe target of the
# lossy uplink loses LOSS of its probes, its window of WINDOW rounds passes SOFT_LOSS after
# about (WINDOW * SOFT_LOSS + 1) / LOSS rounds; then down_after rounds over it.
LOSS, SOFT_LOSS = 0.25, 0.05


def degraded_bound(check: CheckConfig) -> float:
    """Expected seconds until degraded, times 3 for the randomness of the losses."""
    window = default_window(check)
    rounds = (window * SOFT_LOSS + 1) / LOSS + check.down_after
    return 3 * rounds * check.interval + KERNEL_MARGIN


@pytest.mark.parametrize("lab", [{"isps": 2, "servers": 2, "shaping": False}], indirect=True)
def test_a_lossy_uplink_turns_backup_on_the_running_connection_and_stays_in_service(
    lab: Lab, tmp_path: Path
) -> None:
    doc = lab_config(lab, extra={"mptcp": True})
    doc["uplinks"][0]["check"]["degraded_loss"] = f"{SOFT_LOSS:.0%}"
    config = tmp_path / "ecmpd.yaml"
    config.write_text(yaml.safe_dump(doc))
    a, b = (isp.name for isp in lab.isps)
    subflows = watch(lab, v6=False)
    try:
        with (
            running_daemon(lab, config, tmp_path / "d") as daemon,
            Server(lab.internet, lab.servers[0]) as server,
        ):
            wait_for(daemon.all_in_service, 10, "both uplinks in service")
            dl = Download(lab.router, lab.servers[0], server.port, 1 << 40).start()
            wait_for(lambda: subflows.carrying(a) and subflows.carrying(b), 5, "every uplink")
            assert not any(s.backup for s in subflows.now().values())
            random_loss(lab.ns(a), round(LOSS * 100))
            bound = degraded_bound(CheckConfig(degraded_loss=SOFT_LOSS))

            def backup_endpoint() -> bool:
                return any(e.get("backup") for e in endpoints(lab.router)
                           if e["address"] == str(lab.isp(a).address.ip))  # fmt: skip

            wait_for(backup_endpoint, bound, f"{a}'s endpoint backup")
            # MP_PRIO on the live connection: its subflow on isp-a is backup now.
            wait_for(lambda: subflows.now()[a].backup, 1 + KERNEL_MARGIN, "subflow backup")
            assert not subflows.now()[b].backup
            shown = json.loads(
                ecmpd(lab.router, config, tmp_path / "d" / "run", "status", "--json").stdout
            )
            entry = next(u for u in shown["uplinks"] if u["name"] == a)
            assert entry["families"]["ipv4"]["grade"] == "degraded"
            assert entry["in_balancer"] and entry["mptcp"]["backup"]
            assert daemon.uplink(a).in_balancer  # degraded is not down
            assert dl.error is None and not dl.done.is_set()
            heal(lab.ns(a))
    finally:
        subflows.close()

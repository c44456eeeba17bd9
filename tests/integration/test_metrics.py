"""The Prometheus endpoint in the lab: served inside the router namespace, scraped from there."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from ecmpd import __version__
from ecmpd.config.schema import MetricsConfig
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.wait import wait_for
from ecmpd.metrics import Metrics
from ecmpd.model import Family
from ecmpd.status import Status
from tests.integration.fixtures.daemon import DaemonProc, running_daemon
from tests.integration.fixtures.metrics import (
    PORT,
    Samples,
    parse_samples,
    sample,
    scrape,
)

FAMILIES = ("ipv4", "ipv6")
ALL = {"isp-a", "isp-b", "isp-c"}


def all_up(daemon: DaemonProc) -> bool:
    """Every uplink probed healthy."""
    return all(u.health == "up" for u in daemon.status().uplinks)


@contextlib.contextmanager
def metrics_in(ns: str, port: int = PORT) -> Iterator[Metrics]:
    """A Metrics endpoint listening inside the namespace; always closed."""
    metrics = Metrics(MetricsConfig(listen=f"127.0.0.1:{port}"))
    # The listening socket is made by the thread that entered the namespace; the
    # server thread only accepts on it, so it serves there whatever its own netns.
    netns.call_in(ns, metrics.start)
    try:
        yield metrics
    finally:
        metrics.close()


def test_metrics_of_a_running_daemon(lab_module: Lab, tmp_path: Path) -> None:
    lab = lab_module
    with running_daemon(lab, lab.config_path, tmp_path) as daemon, metrics_in(lab.router) as m:
        wait_for(lambda: all_up(daemon), 5, "all uplinks up")
        time.sleep(0.3)  # a few probe rounds more
        # Interface counters come from /proc/thread-self/net/dev: read in the router.
        netns.call_in(lab.router, lambda: m.refresh(daemon.status))
        samples = scrape(lab.router)
        for isp in lab.isps:
            up = {"uplink": isp.name, "family": "ipv4"}  # an IPv4-only lab
            assert sample(samples, "ecmpd_uplink_up", **up) == 1
            assert sample(samples, "ecmpd_uplink_state", state="up", **up) == 1
            assert sample(samples, "ecmpd_uplink_state", state="down", **up) == 0
            assert sample(samples, "ecmpd_uplink_in_balancer", **up) == 1
            assert sample(samples, "ecmpd_uplink_weight", **up) == isp.weight
            assert sample(samples, "ecmpd_uplink_carrier", uplink=isp.name) == 1
            assert sample(samples, "ecmpd_uplink_transitions_total", **up) >= 1
            assert sample(samples, "ecmpd_uplink_state_seconds", **up) > 0
            for target in (str(isp.gateway), str(lab.servers[0])):
                probe = {**up, "target": target}
                assert sample(samples, "ecmpd_probes_sent_total", **probe) > 0
                assert sample(samples, "ecmpd_probes_received_total", **probe) > 0
                assert 0 < sample(samples, "ecmpd_probe_rtt_seconds", **probe) < 1
                assert sample(samples, "ecmpd_probe_loss_ratio", **probe) < 0.5
            for direction in ("rx", "tx"):  # the probes and their answers
                where = {"interface": isp.uplink_if, "direction": direction}
                assert sample(samples, "ecmpd_interface_bytes_total", **where) > 0
                assert sample(samples, "ecmpd_interface_packets_total", **where) > 0
        assert sample(samples, "ecmpd_reconciles_total") >= 1
        assert sample(samples, "ecmpd_kernel_ops_total") >= 1
        assert not any(dict(labels).get("family") == "ipv6" for _, labels in samples)
        b4, a4 = {"uplink": "isp-b", "family": "ipv4"}, {"uplink": "isp-a", "family": "ipv4"}
        before = sample(samples, "ecmpd_uplink_transitions_total", **b4)

        gray_failure(lab.ns("isp-b"))
        try:
            # Out of the kernel's group, not only judged down: the health verdict comes
            # first and the reconcile that acts on it a moment later.
            wait_for(lambda: "isp-b" not in group_members(lab), 5, "isp-b out of the group")

            def out_in_status() -> bool:
                # The status follows the kernel thread's view, a moment after the kernel
                # took the group replace (the op returns, then the view moves on).
                netns.call_in(lab.router, lambda: m.refresh(daemon.status))
                return sample(scrape(lab.router), "ecmpd_uplink_in_balancer", **b4) == 0

            wait_for(out_in_status, 1, "isp-b out of the balancer in the metrics")
            samples = scrape(lab.router)
        finally:
            heal(lab.ns("isp-b"))
        assert sample(samples, "ecmpd_uplink_up", **b4) == 0
        assert sample(samples, "ecmpd_uplink_state", state="down", **b4) == 1
        assert sample(samples, "ecmpd_uplink_in_balancer", **b4) == 0
        assert sample(samples, "ecmpd_uplink_transitions_total", **b4) > before
        assert sample(samples, "ecmpd_uplink_up", **a4) == 1
        wait_for(lambda: daemon.uplink("isp-b").state == "up", 10, "isp-b back")


def test_run_loop_refreshes_and_closes_on_cancel(lab_module: Lab, tmp_path: Path) -> None:
    lab = lab_module

    async def scrape_here() -> Samples:
        # This coroutine runs on a thread inside the router namespace (call_in below),
        # so the connection's socket is made there.
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2]
        writer.close()
        await writer.wait_closed()
        return parse_samples(body.decode())

    async def scenario(daemon: DaemonProc) -> tuple[Samples, Samples, bool]:
        metrics = Metrics(MetricsConfig(listen=f"127.0.0.1:{PORT}"))
        task = asyncio.create_task(metrics.run(daemon.status, interval=0.1))
        first: Samples | None = None
        for _ in range(100):
            with contextlib.suppress(ConnectionRefusedError):
                first = await scrape_here()
                if any(name == "ecmpd_uplink_up" for name, _ in first):
                    break
            await asyncio.sleep(0.05)
        assert first is not None
        await asyncio.sleep(1.0)
        second = await scrape_here()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await scrape_here()
        except ConnectionRefusedError:
            closed = True
        else:
            closed = False
        return first, second, closed

    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: all_up(daemon), 5, "all uplinks up")
        first, second, closed = netns.call_in(lab.router, lambda: asyncio.run(scenario(daemon)))
    probe = {"uplink": "isp-a", "family": "ipv4", "target": str(lab.isps[0].gateway)}
    assert sample(second, "ecmpd_probes_sent_total", **probe) > sample(
        first, "ecmpd_probes_sent_total", **probe
    )
    iface = {"interface": lab.isps[0].uplink_if, "direction": "tx"}
    assert sample(second, "ecmpd_interface_packets_total", **iface) > 0
    assert any(name == "process_resident_memory_bytes" for name, _ in second)
    assert closed, "the endpoint still answered after the task was cancelled"


def test_run_survives_a_taken_port(lab_module: Lab, caplog: pytest.LogCaptureFixture) -> None:
    lab = lab_module

    async def scenario() -> None:
        metrics = Metrics(MetricsConfig(listen=f"127.0.0.1:{PORT}"))
        # Logged and the task ends: the daemon around it keeps routing.
        await asyncio.wait_for(metrics.run(lambda: Status(source="daemon", uplinks=())), 5)

    with netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM) as taken:
        # Earlier tests' connections may leave the port in TIME_WAIT.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", PORT))
        taken.listen()
        netns.call_in(lab.router, lambda: asyncio.run(scenario()))
    assert "metrics.listen_failed" in caplog.messages


def test_daemon_serves_metrics_when_configured(lab_module: Lab, tmp_path: Path) -> None:
    lab = lab_module
    config = write_lab_config(
        lab, tmp_path / "metrics.yaml", extra={"metrics": {"listen": f"127.0.0.1:{PORT}"}}
    )
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: all_up(daemon), 5, "all uplinks up")
        samples: Samples = {}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                samples = scrape(lab.router)
            except ConnectionRefusedError:
                time.sleep(0.1)
                continue
            if all(
                ("ecmpd_uplink_up", frozenset({("uplink", i.name), ("family", "ipv4")})) in samples
                for i in lab.isps
            ):
                break
            time.sleep(0.1)
        if not samples:
            pytest.skip("the daemon does not serve metrics yet (Metrics not wired in daemon.py)")
        for isp in lab.isps:
            assert sample(samples, "ecmpd_uplink_up", uplink=isp.name, family="ipv4") == 1
            assert sample(samples, "ecmpd_uplink_in_balancer", uplink=isp.name, family="ipv4") == 1
            where = {"interface": isp.uplink_if, "direction": "tx"}
            assert sample(samples, "ecmpd_interface_bytes_total", **where) > 0
        assert sample(samples, "ecmpd_reconciles_total") >= 1
        assert sample(samples, "ecmpd_build_info", version=__version__) == 1


def all_families_up(daemon: DaemonProc) -> bool:
    """Every family of every uplink probed healthy."""
    return all(f.health == "up" for u in daemon.status().uplinks for f in u.families.values())


@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_metrics_per_family_when_only_ipv6_fails(lab: Lab, tmp_path: Path) -> None:
    """The daemon's own endpoint, dual-stack: isp-b down in IPv6 alone shows as such."""
    config = write_lab_config(
        lab,
        tmp_path / "dual.yaml",
        ipv6=True,
        extra={"metrics": {"listen": f"127.0.0.1:{PORT}"}},
    )
    b4, b6 = {"uplink": "isp-b", "family": "ipv4"}, {"uplink": "isp-b", "family": "ipv6"}

    def scraped(check: Callable[[Samples], bool]) -> Samples:
        """Scrape until check holds (the daemon refreshes its snapshot every second)."""
        found: Samples = {}

        def ok() -> bool:
            nonlocal found
            with contextlib.suppress(ConnectionRefusedError):
                found = scrape(lab.router)
            return bool(found) and check(found)

        wait_for(ok, 5, "the scrape to show it", step=0.1)
        return found

    def shows(key: dict[str, str], up: float) -> Callable[[Samples], bool]:
        return lambda s: s.get(("ecmpd_uplink_up", frozenset(key.items()))) == up

    def healthy(s: Samples) -> bool:
        return all(
            s.get(("ecmpd_uplink_health", frozenset({**key, "health": "up"}.items()))) == 1
            for key in (
                {"uplink": isp.name, "family": family} for isp in lab.isps for family in FAMILIES
            )
        )

    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: all_families_up(daemon), 5, "every family up")
        samples = scraped(healthy)  # a snapshot taken after every family came up
        status = daemon.status()
        for isp in lab.isps:
            families = status.uplink(isp.name).families
            assert set(families) == set(FAMILIES)
            for family, figures in families.items():
                key = {"uplink": isp.name, "family": family}
                assert sample(samples, "ecmpd_uplink_up", **key) == 1
                assert sample(samples, "ecmpd_uplink_in_balancer", **key) == 1
                assert sample(samples, "ecmpd_uplink_weight", **key) == isp.weight
                assert sample(samples, "ecmpd_uplink_transitions_total", **key) >= 1
                version = 6 if family == "ipv6" else 4
                for target in figures.targets:
                    assert ip_address(target.target).version == version
                    probe = {**key, "target": target.target}
                    assert sample(samples, "ecmpd_probes_sent_total", **probe) > 0
                    assert sample(samples, "ecmpd_probes_received_total", **probe) > 0
            assert sample(samples, "ecmpd_uplink_carrier", uplink=isp.name) == 1
        before6 = sample(samples, "ecmpd_uplink_transitions_total", **b6)
        before4 = sample(samples, "ecmpd_uplink_transitions_total", **b4)

        gray_failure(lab.ns("isp-b"), Family.INET6)
        try:
            samples = scraped(shows(b6, 0))
        finally:
            heal(lab.ns("isp-b"))
        assert sample(samples, "ecmpd_uplink_state", state="down", **b6) == 1
        assert sample(samples, "ecmpd_uplink_in_balancer", **b6) == 0
        assert sample(samples, "ecmpd_uplink_transitions_total", **b6) > before6
        lost = [
            sample(samples, "ecmpd_probe_loss_ratio", **b6, target=t.target)
            for t in status.uplink("isp-b").families["ipv6"].targets
        ]
        assert max(lost) > 0
        # IPv4 of the same uplink never noticed, and carrier is the interface's: still 1.
        assert sample(samples, "ecmpd_uplink_up", **b4) == 1
        assert sample(samples, "ecmpd_uplink_state", state="up", **b4) == 1
        assert sample(samples, "ecmpd_uplink_in_balancer", **b4) == 1
        assert sample(samples, "ecmpd_uplink_transitions_total", **b4) == before4
        assert sample(samples, "ecmpd_uplink_carrier", uplink="isp-b") == 1
        scraped(shows(b6, 1))  # and back


def serving(ns: str) -> bool:
    """Whether the endpoint answers a scrape yet."""
    try:
        scrape(ns)
    except ConnectionRefusedError:
        return False
    return True


def test_a_scrape_right_after_a_failover_shows_it(lab_module: Lab, tmp_path: Path) -> None:
    """The exposition is taken at scrape time: no lag behind the kernel's group."""
    lab = lab_module
    config = write_lab_config(
        lab, tmp_path / "metrics.yaml", extra={"metrics": {"listen": f"127.0.0.1:{PORT}"}}
    )
    a4 = {"uplink": "isp-a", "family": "ipv4"}
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: all_up(daemon), 5, "all uplinks up")
        wait_for(lambda: group_members(lab) == ALL, 2, "every uplink in the group")
        wait_for(lambda: serving(lab.router), 3, "the endpoint to listen", step=0.05)
        try:
            gray_failure(lab.ns("isp-a"))
            # Polled at 5 ms: the scrape follows the kernel's change by a few ms, far
            # less than the one-second refresh the exposition had before.
            wait_for(lambda: "isp-a" not in group_members(lab), 10, "isp-a out")
            samples = scrape(lab.router)
            assert sample(samples, "ecmpd_uplink_in_balancer", **a4) == 0
            assert sample(samples, "ecmpd_uplink_up", **a4) == 0
        finally:
            heal(lab.ns("isp-a"))
        wait_for(lambda: group_members(lab) == ALL, 10, "isp-a back")
        samples = scrape(lab.router)
        assert sample(samples, "ecmpd_uplink_in_balancer", **a4) == 1
        assert sample(samples, "ecmpd_uplink_up", **a4) == 1

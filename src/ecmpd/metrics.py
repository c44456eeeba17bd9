"""Prometheus exposition of the daemon's status: uplink health, probes, interface counters.

The failover order's series are metrics_order.py's, Multipath TCP's metrics_mptcp.py's.
Design: one custom collector renders every metric from the latest snapshot (a `Status`
plus the kernel's interface counters) at scrape time. The numbers already live
elsewhere (trackers, probers, the kernel), so mirroring them into prometheus-client's
own Gauge/Counter objects would only add a second copy to keep in step; and uplinks that
disappear on reload vanish from the next scrape with no label bookkeeping. The snapshot
is taken on the daemon's event loop (its state is not thread-safe) and swapped in as one
object, which the HTTP server's threads only read.

Health is tracked per address family (an uplink can be up in IPv4 and down in IPv6),
so every per-uplink health and probe series carries a `family` label (`ipv4`, `ipv6`),
one series per family the uplink carries; carrier belongs to the interface and has none.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from ecmpd import __version__
from ecmpd.config.schema import MetricsConfig
from ecmpd.health.fsm import HealthState
from ecmpd.kernel.netdev import read_interface_counters
from ecmpd.metrics_mptcp import mptcp_metrics
from ecmpd.metrics_order import order_metrics
from ecmpd.status import DaemonCounters, DisplayState, RefusedOp, Status, UplinkStatus

log = logging.getLogger("ecmpd.metrics")

# How long a scrape waits for the daemon's loop to take a fresh snapshot before it
# serves the last one (a busy loop must not hang Prometheus).
SCRAPE_REFRESH_TIMEOUT = 0.5


@dataclass(frozen=True)
class Snapshot:
    """What one scrape renders: a status and interface counters."""

    status: Status | None = None
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


class EcmpdCollector:
    """Renders ecmpd's metric families from the latest snapshot."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.snapshot = Snapshot()
        self._clock = clock
        # Called (on the scraping thread) before each collect, to take a fresh snapshot.
        self.before_collect: Callable[[], None] | None = None

    def update(
        self,
        status: Status | None,
        counters: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Replace the snapshot (one assignment: scrapes never see half an update)."""
        self.snapshot = Snapshot(status, counters or {})

    def collect(self) -> Iterator[Metric]:
        """The metric families, as prometheus-client's registry asks for them."""
        if self.before_collect is not None:
            self.before_collect()
        snap = self.snapshot
        build = GaugeMetricFamily(
            "ecmpd_build_info", "ecmpd's version (always 1).", labels=["version"]
        )
        build.add_metric([__version__], 1)
        yield build
        if snap.status is None:
            return
        uplinks = snap.status.uplinks
        yield from self._uplinks(uplinks)
        yield from self._probes(uplinks)
        yield from order_metrics(uplinks)
        yield from mptcp_metrics(uplinks)
        yield from self._interfaces(snap.counters)
        if snap.status.daemon is not None:
            yield from self._daemon(snap.status.daemon)
        if snap.status.refused is not None:
            yield from self._refused(snap.status.refused)

    def _uplinks(self, uplinks: Sequence[UplinkStatus]) -> Iterator[Metric]:
        per_family = ["uplink", "family"]
        up = _gauge(
            "ecmpd_uplink_up",
            "1 while the uplink may carry the family's traffic (up, or not yet probed), "
            "0 when down or drained.",
            per_family,
        )
        state = _gauge(
            "ecmpd_uplink_state",
            "The uplink's state in the family, one-hot (up, down, unknown, drained).",
            [*per_family, "state"],
        )
        health = _gauge(
            "ecmpd_uplink_health",
            "The family's health checker state, one-hot (unknown, up, falling, down, rising).",
            [*per_family, "health"],
        )
        in_balancer = _gauge(
            "ecmpd_uplink_in_balancer",
            "1 while the uplink is a member of the family's balanced nexthop group.",
            per_family,
        )
        weight = _gauge(
            "ecmpd_uplink_weight", "The uplink's weight in the family's group.", per_family
        )
        carrier = _gauge(
            "ecmpd_uplink_carrier", "1 while the uplink's interface has carrier.", ["uplink"]
        )
        seconds = _gauge(
            "ecmpd_uplink_state_seconds",
            "Seconds since the uplink's health state in the family last changed.",
            per_family,
        )
        transitions = CounterMetricFamily(
            "ecmpd_uplink_transitions_total",
            "Health state changes of the uplink in the family.",
            labels=per_family,
        )
        now = self._clock()
        for u in uplinks:
            # Carrier belongs to the interface, which every family shares.
            if u.carrier is not None:
                carrier.add_metric([u.name], float(u.carrier))
            for family, f in u.families.items():
                key = [u.name, family]
                up.add_metric(key, float(f.state in (DisplayState.UP, DisplayState.UNKNOWN)))
                for s in DisplayState:
                    state.add_metric([*key, s.value], float(f.state is s))
                if f.health is not None:
                    for h in HealthState:
                        health.add_metric([*key, h.value], float(f.health is h))
                in_balancer.add_metric(key, float(f.in_balancer))
                weight.add_metric(key, float(f.weight))
                # From the wall-clock `since`, not `for_s`: the snapshot may be a second
                # old, the scrape is now.
                if f.since is not None:
                    seconds.add_metric(key, max(0.0, now - f.since))
                transitions.add_metric(key, float(f.transitions or 0))
        yield from (up, state, health, in_balancer, weight, carrier, seconds, transitions)

    def _probes(self, uplinks: Sequence[UplinkStatus]) -> Iterator[Metric]:
        labels = ["uplink", "family", "target"]
        rtt = _gauge(
            "ecmpd_probe_rtt_seconds", "Round-trip time of the last answered probe.", labels
        )
        rtt_avg = _gauge(
            "ecmpd_probe_rtt_avg_seconds", "Average round-trip time over the health window.", labels
        )
        loss = _gauge(
            "ecmpd_probe_loss_ratio", "Share of probes lost over the health window (0..1).", labels
        )
        sent = CounterMetricFamily("ecmpd_probes_sent_total", "Probes sent.", labels=labels)
        received = CounterMetricFamily(
            "ecmpd_probes_received_total", "Probes answered.", labels=labels
        )
        for u in uplinks:
            for family, f in u.families.items():
                for t in f.targets:
                    key = [u.name, family, t.target]
                    if t.rtt_ms is not None:
                        rtt.add_metric(key, t.rtt_ms / 1000)
                    if t.rtt_avg_ms is not None:
                        rtt_avg.add_metric(key, t.rtt_avg_ms / 1000)
                    loss.add_metric(key, t.loss)
                    sent.add_metric(key, float(t.sent))
                    received.add_metric(key, float(t.received))
        yield from (rtt, rtt_avg, loss, sent, received)

    def _interfaces(self, counters: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
        labels = ["interface", "direction"]
        families = {
            kind: CounterMetricFamily(
                f"ecmpd_interface_{kind}_total",
                f"The kernel's {kind} counter of the interface.",
                labels=labels,
            )
            for kind in ("bytes", "packets", "errors", "dropped")
        }
        for ifname in sorted(counters):
            for key, value in counters[ifname].items():
                direction, _, kind = key.partition("_")
                if kind in families:
                    families[kind].add_metric([ifname, direction], float(value))
        yield from families.values()

    def _refused(self, refused: Sequence[RefusedOp]) -> Iterator[Metric]:
        gauge = _gauge(
            "ecmpd_kernel_refused_ops",
            "Operations the kernel does not hold now, by kind (refused, conflict, held), "
            "and uplink ('' for the balancer's and shared objects).",
            ["kind", "uplink"],
        )
        counts = Counter((r.kind.value, r.uplink or "") for r in refused)
        for (kind, uplink), count in sorted(counts.items()):
            gauge.add_metric([kind, uplink], float(count))
        yield gauge

    def _daemon(self, daemon: DaemonCounters) -> Iterator[Metric]:
        for value, name, doc in (
            (daemon.reconciles, "ecmpd_reconciles_total", "Reconciles that changed the kernel."),
            (daemon.ops, "ecmpd_kernel_ops_total", "Kernel operations executed."),
            (
                daemon.failures,
                "ecmpd_reconcile_failures_total",
                "Reconciles that met a refused kernel operation (the rest was applied).",
            ),
            (daemon.resyncs, "ecmpd_resyncs_total", "Full re-reads of the kernel state."),
            (
                daemon.refusals,
                "ecmpd_kernel_refusals_total",
                "Kernel operations refused (each try counts; conflicts included).",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))
        yield GaugeMetricFamily(
            "ecmpd_uptime_seconds", "Seconds since the daemon started.", value=daemon.uptime_s
        )


def _gauge(name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def is_loopback(host: str) -> bool:
    """Whether a listen address only accepts connections from this host."""
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Metrics:
    """The metrics endpoint: its own registry, collector and HTTP server."""

    def __init__(self, config: MetricsConfig) -> None:
        self.host, self.port = config.host, config.port
        # Its own registry, not prometheus-client's global one: nothing imported by
        # accident shows up, and tests can run several instances in one process.
        self.registry = CollectorRegistry()
        self.collector = EcmpdCollector()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # process_* (memory, CPU, fds)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen (in the calling thread's network namespace) and serve in a thread."""
        if not is_loopback(self.host):
            log.warning(
                "metrics.not_loopback",
                extra={
                    "listen": f"{self.host}:{self.port}",
                    "note": "the endpoint has no authentication; firewall it",
                },
            )
        self._server, self._thread = start_http_server(
            self.port, addr=self.host, registry=self.registry
        )
        log.info("metrics.listening", extra={"listen": f"{self.host}:{self.port}"})

    @property
    def bound_port(self) -> int:
        """The port actually listened on."""
        assert self._server is not None, "not started"
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and close the listening socket (blocks up to half a second)."""
        if self._server is not None:
            self._server.shutdown()  # serve_forever polls every 0.5 s
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def update(
        self,
        status: Status | None,
        counters: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Show this status (and interface counters) from the next scrape on."""
        self.collector.update(status, counters)

    def refresh(self, status_fn: Callable[[], Status]) -> None:
        """Take a status and the counters of its interfaces (call on the daemon's loop)."""
        status = status_fn()
        try:
            counters = read_interface_counters(status.interfaces())
        except (OSError, ValueError) as err:  # no procfs: still serve the health figures
            log.debug("metrics.counters_unavailable", extra={"error": str(err)})
            counters = {}
        self.update(status, counters)

    def refresh_from_thread(
        self, loop: asyncio.AbstractEventLoop, status_fn: Callable[[], Status]
    ) -> None:
        """Refresh on the daemon's loop and wait for it (call from a scraping thread).

        A scrape right after a failover then shows it, instead of the snapshot of up to
        one interval before; a loop that does not answer in time serves the last one.
        """

        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def refresh() -> None:
            if not done.set_running_or_notify_cancel():
                return  # the scrape gave up waiting
            try:
                self.refresh(status_fn)
            except Exception as err:  # a status hiccup: serve the last snapshot
                log.warning("metrics.refresh_failed", extra={"error": str(err)})
            done.set_result(None)

        try:
            loop.call_soon_threadsafe(refresh)
        except RuntimeError:  # the loop is closed: the last snapshot is all there is
            return
        try:
            done.result(SCRAPE_REFRESH_TIMEOUT)
        except concurrent.futures.TimeoutError:
            done.cancel()
            log.warning("metrics.scrape_refresh_late", extra={"timeout": SCRAPE_REFRESH_TIMEOUT})

    async def run(self, status_fn: Callable[[], Status], interval: float = 1.0) -> None:
        """Serve and refresh from status_fn every interval and at each scrape, until cancelled.

        A listen failure is logged and ends only this task: the daemon keeps routing
        (a missing endpoint shows in Prometheus as a failed scrape, a dead daemon would
        take failover with it).
        """
        loop = asyncio.get_running_loop()
        self.collector.before_collect = lambda: self.refresh_from_thread(loop, status_fn)
        try:
            self.start()
        except OSError as err:
            log.error(
                "metrics.listen_failed",
                extra={"listen": f"{self.host}:{self.port}", "error": str(err)},
            )
            return
        try:
            while True:
                try:
                    self.refresh(status_fn)
                except Exception as err:  # a status hiccup must not stop the endpoint
                    log.warning("metrics.refresh_failed", extra={"error": str(err)})
                await asyncio.sleep(interval)
        finally:
            # In a thread: shutdown() waits for the server's poll, and the loop is
            # still finishing other tasks' cancellation.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.close)

"""The Prometheus collector, rendered from hand-made typed statuses."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ecmpd import __version__
from ecmpd.config.schema import MetricsConfig
from ecmpd.metrics import (
    EcmpdCollector,
    Metrics,
    is_loopback,
)
from ecmpd.status import (
    DisplayState,
    FamilyStatus,
    MptcpFamilyStatus,
    MptcpStatus,
    Status,
    UplinkStatus,
)
from tests.unit.fixtures import COUNTERS, NOW, STATUS, daemon_view, family, target, uplink

EXPECTED = f"""
# TYPE ecmpd_build_info gauge
ecmpd_build_info{{version="{__version__}"}} 1.0
# TYPE ecmpd_uplink_up gauge
ecmpd_uplink_up{{family="ipv4",uplink="isp-a"}} 1.0
ecmpd_uplink_up{{family="ipv6",uplink="isp-a"}} 0.0
ecmpd_uplink_up{{family="ipv4",uplink="isp-b"}} 0.0
ecmpd_uplink_up{{family="ipv6",uplink="isp-b"}} 0.0
ecmpd_uplink_up{{family="ipv4",uplink="lte"}} 0.0
# TYPE ecmpd_uplink_state gauge
ecmpd_uplink_state{{family="ipv4",state="up",uplink="isp-a"}} 1.0
ecmpd_uplink_state{{family="ipv4",state="down",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="unknown",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="drained",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="up",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="down",uplink="isp-a"}} 1.0
ecmpd_uplink_state{{family="ipv6",state="unknown",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="drained",uplink="isp-a"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="up",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="down",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="unknown",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="drained",uplink="isp-b"}} 1.0
ecmpd_uplink_state{{family="ipv6",state="up",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="down",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="unknown",uplink="isp-b"}} 0.0
ecmpd_uplink_state{{family="ipv6",state="drained",uplink="isp-b"}} 1.0
ecmpd_uplink_state{{family="ipv4",state="up",uplink="lte"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="down",uplink="lte"}} 1.0
ecmpd_uplink_state{{family="ipv4",state="unknown",uplink="lte"}} 0.0
ecmpd_uplink_state{{family="ipv4",state="drained",uplink="lte"}} 0.0
# TYPE ecmpd_uplink_health gauge
ecmpd_uplink_health{{family="ipv4",health="unknown",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="up",uplink="isp-a"}} 1.0
ecmpd_uplink_health{{family="ipv4",health="falling",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="down",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="rising",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="unknown",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="up",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="falling",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="down",uplink="isp-a"}} 1.0
ecmpd_uplink_health{{family="ipv6",health="rising",uplink="isp-a"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="unknown",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="up",uplink="isp-b"}} 1.0
ecmpd_uplink_health{{family="ipv4",health="falling",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="down",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="rising",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="unknown",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="up",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="falling",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="down",uplink="isp-b"}} 0.0
ecmpd_uplink_health{{family="ipv6",health="rising",uplink="isp-b"}} 1.0
ecmpd_uplink_health{{family="ipv4",health="unknown",uplink="lte"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="up",uplink="lte"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="falling",uplink="lte"}} 0.0
ecmpd_uplink_health{{family="ipv4",health="down",uplink="lte"}} 1.0
ecmpd_uplink_health{{family="ipv4",health="rising",uplink="lte"}} 0.0
# TYPE ecmpd_uplink_in_balancer gauge
ecmpd_uplink_in_balancer{{family="ipv4",uplink="isp-a"}} 1.0
ecmpd_uplink_in_balancer{{family="ipv6",uplink="isp-a"}} 0.0
ecmpd_uplink_in_balancer{{family="ipv4",uplink="isp-b"}} 0.0
ecmpd_uplink_in_balancer{{family="ipv6",uplink="isp-b"}} 0.0
ecmpd_uplink_in_balancer{{family="ipv4",uplink="lte"}} 0.0
# TYPE ecmpd_uplink_weight gauge
ecmpd_uplink_weight{{family="ipv4",uplink="isp-a"}} 2.0
ecmpd_uplink_weight{{family="ipv6",uplink="isp-a"}} 2.0
ecmpd_uplink_weight{{family="ipv4",uplink="isp-b"}} 1.0
ecmpd_uplink_weight{{family="ipv6",uplink="isp-b"}} 1.0
ecmpd_uplink_weight{{family="ipv4",uplink="lte"}} 1.0
# TYPE ecmpd_uplink_carrier gauge
ecmpd_uplink_carrier{{uplink="isp-a"}} 1.0
ecmpd_uplink_carrier{{uplink="isp-b"}} 1.0
ecmpd_uplink_carrier{{uplink="lte"}} 0.0
# TYPE ecmpd_uplink_state_seconds gauge
ecmpd_uplink_state_seconds{{family="ipv4",uplink="isp-a"}} 42.5
ecmpd_uplink_state_seconds{{family="ipv6",uplink="isp-a"}} 7.25
ecmpd_uplink_state_seconds{{family="ipv4",uplink="isp-b"}} 42.5
ecmpd_uplink_state_seconds{{family="ipv6",uplink="isp-b"}} 42.5
ecmpd_uplink_state_seconds{{family="ipv4",uplink="lte"}} 42.5
# TYPE ecmpd_uplink_transitions_total counter
ecmpd_uplink_transitions_total{{family="ipv4",uplink="isp-a"}} 1.0
ecmpd_uplink_transitions_total{{family="ipv6",uplink="isp-a"}} 2.0
ecmpd_uplink_transitions_total{{family="ipv4",uplink="isp-b"}} 3.0
ecmpd_uplink_transitions_total{{family="ipv6",uplink="isp-b"}} 4.0
ecmpd_uplink_transitions_total{{family="ipv4",uplink="lte"}} 2.0
# TYPE ecmpd_probe_rtt_seconds gauge
ecmpd_probe_rtt_seconds{{family="ipv4",target="10.1.0.1",uplink="isp-a"}} 0.0015
ecmpd_probe_rtt_seconds{{family="ipv6",target="2001:db8:1::1",uplink="isp-a"}} 0.003
# TYPE ecmpd_probe_rtt_avg_seconds gauge
ecmpd_probe_rtt_avg_seconds{{family="ipv4",target="10.1.0.1",uplink="isp-a"}} 0.00225
ecmpd_probe_rtt_avg_seconds{{family="ipv6",target="2001:db8:1::1",uplink="isp-a"}} 0.0045
# TYPE ecmpd_probe_loss_ratio gauge
ecmpd_probe_loss_ratio{{family="ipv4",target="10.1.0.1",uplink="isp-a"}} 0.0
ecmpd_probe_loss_ratio{{family="ipv4",target="198.51.100.1",uplink="isp-a"}} 1.0
ecmpd_probe_loss_ratio{{family="ipv6",target="2001:db8:1::1",uplink="isp-a"}} 0.75
# TYPE ecmpd_probes_sent_total counter
ecmpd_probes_sent_total{{family="ipv4",target="10.1.0.1",uplink="isp-a"}} 40.0
ecmpd_probes_sent_total{{family="ipv4",target="198.51.100.1",uplink="isp-a"}} 40.0
ecmpd_probes_sent_total{{family="ipv6",target="2001:db8:1::1",uplink="isp-a"}} 40.0
# TYPE ecmpd_probes_received_total counter
ecmpd_probes_received_total{{family="ipv4",target="10.1.0.1",uplink="isp-a"}} 40.0
ecmpd_probes_received_total{{family="ipv4",target="198.51.100.1",uplink="isp-a"}} 0.0
ecmpd_probes_received_total{{family="ipv6",target="2001:db8:1::1",uplink="isp-a"}} 10.0
# TYPE ecmpd_uplink_tier gauge
ecmpd_uplink_tier{{uplink="isp-a"}} 1.0
ecmpd_uplink_tier{{uplink="isp-b"}} 1.0
ecmpd_uplink_tier{{uplink="lte"}} 2.0
# TYPE ecmpd_uplink_role gauge
ecmpd_uplink_role{{role="carrying",uplink="isp-a"}} 1.0
ecmpd_uplink_role{{role="standby",uplink="isp-a"}} 0.0
ecmpd_uplink_role{{role="down",uplink="isp-a"}} 0.0
ecmpd_uplink_role{{role="drained",uplink="isp-a"}} 0.0
ecmpd_uplink_role{{role="carrying",uplink="isp-b"}} 0.0
ecmpd_uplink_role{{role="standby",uplink="isp-b"}} 0.0
ecmpd_uplink_role{{role="down",uplink="isp-b"}} 0.0
ecmpd_uplink_role{{role="drained",uplink="isp-b"}} 1.0
ecmpd_uplink_role{{role="carrying",uplink="lte"}} 0.0
ecmpd_uplink_role{{role="standby",uplink="lte"}} 0.0
ecmpd_uplink_role{{role="down",uplink="lte"}} 1.0
ecmpd_uplink_role{{role="drained",uplink="lte"}} 0.0
# TYPE ecmpd_uplink_bytes_total counter
ecmpd_uplink_bytes_total{{direction="in",uplink="isp-a"}} 1000.0
ecmpd_uplink_bytes_total{{direction="out",uplink="isp-a"}} 2000.0
ecmpd_uplink_bytes_total{{direction="in",uplink="lte"}} 3000.0
ecmpd_uplink_bytes_total{{direction="out",uplink="lte"}} 400.0
# TYPE ecmpd_uplink_takeover_seconds gauge
# TYPE ecmpd_uplink_data_used_bytes gauge
ecmpd_uplink_data_used_bytes{{uplink="lte"}} 5e+09
# TYPE ecmpd_uplink_data_cap_bytes gauge
ecmpd_uplink_data_cap_bytes{{uplink="lte"}} 2e+10
# TYPE ecmpd_uplink_last_resort gauge
ecmpd_uplink_last_resort{{uplink="lte"}} 0.0
# TYPE ecmpd_interface_bytes_total counter
ecmpd_interface_bytes_total{{direction="rx",interface="wan-a"}} 1000.0
ecmpd_interface_bytes_total{{direction="tx",interface="wan-a"}} 2000.0
# TYPE ecmpd_interface_packets_total counter
ecmpd_interface_packets_total{{direction="rx",interface="wan-a"}} 10.0
ecmpd_interface_packets_total{{direction="tx",interface="wan-a"}} 20.0
# TYPE ecmpd_interface_errors_total counter
ecmpd_interface_errors_total{{direction="rx",interface="wan-a"}} 0.0
ecmpd_interface_errors_total{{direction="tx",interface="wan-a"}} 2.0
# TYPE ecmpd_interface_dropped_total counter
ecmpd_interface_dropped_total{{direction="rx",interface="wan-a"}} 1.0
ecmpd_interface_dropped_total{{direction="tx",interface="wan-a"}} 0.0
# TYPE ecmpd_reconciles_total counter
ecmpd_reconciles_total 5.0
# TYPE ecmpd_kernel_ops_total counter
ecmpd_kernel_ops_total 17.0
# TYPE ecmpd_reconcile_failures_total counter
ecmpd_reconcile_failures_total 1.0
# TYPE ecmpd_resyncs_total counter
ecmpd_resyncs_total 2.0
# TYPE ecmpd_kernel_refusals_total counter
ecmpd_kernel_refusals_total 4.0
# TYPE ecmpd_uptime_seconds gauge
ecmpd_uptime_seconds 60.5
# TYPE ecmpd_kernel_refused_ops gauge
ecmpd_kernel_refused_ops{{kind="conflict",uplink="isp-a"}} 1.0
ecmpd_kernel_refused_ops{{kind="held",uplink="lte"}} 1.0
ecmpd_kernel_refused_ops{{kind="refused",uplink=""}} 1.0
ecmpd_kernel_refused_ops{{kind="refused",uplink="lte"}} 1.0
"""


def render(collector: EcmpdCollector) -> str:
    """The exposition text without HELP lines (their wording is not the contract)."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if not line.startswith("# HELP"))


def test_collector_renders_every_metric_from_a_status() -> None:
    collector = EcmpdCollector(clock=lambda: NOW)
    collector.update(STATUS, COUNTERS)
    assert render(collector) == EXPECTED.strip()


def test_before_the_first_status_only_build_info_is_shown() -> None:
    lines = render(EcmpdCollector()).splitlines()
    assert lines == [
        "# TYPE ecmpd_build_info gauge",
        f'ecmpd_build_info{{version="{__version__}"}} 1.0',
    ]


def test_unknown_counts_as_up_and_uplinks_gone_on_reload_vanish() -> None:
    collector = EcmpdCollector(clock=lambda: NOW)
    collector.update(daemon_view(uplink("isp-a", "wan-a", "unknown", "unknown")))
    text = render(collector)
    assert 'ecmpd_uplink_up{family="ipv4",uplink="isp-a"} 1.0' in text
    assert 'ecmpd_uplink_state{family="ipv4",state="unknown",uplink="isp-a"} 1.0' in text
    assert "ecmpd_reconciles_total" not in text  # no daemon section: nothing invented
    collector.update(daemon_view(uplink("isp-c", "wan-c", "up", "rising")))
    text = render(collector)
    assert "isp-a" not in text
    assert 'ecmpd_uplink_health{family="ipv4",health="rising",uplink="isp-c"} 1.0' in text


def test_state_seconds_never_goes_negative_when_clocks_step() -> None:
    collector = EcmpdCollector(clock=lambda: NOW - 100)
    collector.update(daemon_view(uplink("isp-a", "wan-a", "up", "up")))
    assert 'ecmpd_uplink_state_seconds{family="ipv4",uplink="isp-a"} 0.0' in render(collector)


def samples(status: Status) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a status rendered at NOW."""
    collector = EcmpdCollector(clock=lambda: NOW)
    collector.update(status)
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for metric in text_string_to_metric_families(generate_latest(registry).decode())
        for s in metric.samples
    }


def families_of(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> set[str]:
    """The family labels of one metric's samples."""
    return {dict(labels)["family"] for metric, labels in found if metric == name}


def test_an_ipv6_only_uplink_shows_only_ipv6_series() -> None:
    v6 = family(
        "up", "up", weight=3, transitions=1, targets=(target("2001:db8:3::1", 2.0, 10, 10),)
    )
    isp_c = UplinkStatus(
        name="isp-c", interface="wan-c", table=103, carrier=True, families={"ipv6": v6}
    )
    found = samples(daemon_view(isp_c))
    for name in (
        "ecmpd_uplink_up",
        "ecmpd_uplink_state",
        "ecmpd_uplink_health",
        "ecmpd_uplink_in_balancer",
        "ecmpd_uplink_weight",
        "ecmpd_uplink_state_seconds",
        "ecmpd_uplink_transitions_total",
        "ecmpd_probes_sent_total",
        "ecmpd_probe_rtt_seconds",
    ):
        assert families_of(found, name) == {"ipv6"}, name
    v6_key = frozenset({("uplink", "isp-c"), ("family", "ipv6")})
    assert found[("ecmpd_uplink_weight", v6_key)] == 3
    assert found[("ecmpd_uplink_carrier", frozenset({("uplink", "isp-c")}))] == 1


def test_one_family_down_leaves_the_other_up() -> None:
    found = samples(STATUS)
    isp_a = {("uplink", "isp-a")}
    assert found[("ecmpd_uplink_up", frozenset(isp_a | {("family", "ipv4")}))] == 1
    assert found[("ecmpd_uplink_up", frozenset(isp_a | {("family", "ipv6")}))] == 0
    assert found[("ecmpd_uplink_in_balancer", frozenset(isp_a | {("family", "ipv6")}))] == 0
    # The top level's all-family sums are not what a family shows.
    assert found[("ecmpd_uplink_transitions_total", frozenset(isp_a | {("family", "ipv4")}))] == 1
    v6_probes = {labels for name, labels in found if name == "ecmpd_probes_sent_total"}
    assert frozenset(isp_a | {("family", "ipv6"), ("target", "2001:db8:1::1")}) in v6_probes
    assert frozenset(isp_a | {("family", "ipv4"), ("target", "2001:db8:1::1")}) not in v6_probes


def test_a_status_without_families_shows_its_top_level_figures_as_ipv4() -> None:
    # A document from before IPv6 existed (an older daemon answering `watch`).
    v4 = uplink(
        "isp-a", "wan-a", "down", "down", weight=2, transitions=5,
        targets=(target("10.1.0.1", None, 20, 0),),
    )  # fmt: skip
    old = v4.model_dump(mode="json")
    del old["families"]
    found = samples(Status.from_json({"source": "daemon", "uplinks": [old]}))
    key = frozenset({("uplink", "isp-a"), ("family", "ipv4")})
    assert found[("ecmpd_uplink_up", key)] == 0
    assert found[("ecmpd_uplink_weight", key)] == 2
    assert found[("ecmpd_uplink_transitions_total", key)] == 5
    assert found[("ecmpd_uplink_state_seconds", key)] == 42.5
    assert found[("ecmpd_probes_sent_total", key | {("target", "10.1.0.1")})] == 20
    assert families_of(found, "ecmpd_uplink_state") == {"ipv4"}


def test_the_kernel_view_gives_each_family_its_group_weight() -> None:
    # As `ecmpd status` builds it without a daemon (cli/status.py kernel_status):
    # per family only state, the weight in that family's group and membership.
    families = {
        "ipv4": FamilyStatus(state=DisplayState.UP, weight=3, in_balancer=True),
        "ipv6": FamilyStatus(state=DisplayState.DOWN, weight=1, in_balancer=False),
    }
    entry = UplinkStatus(name="isp-a", interface="wan-a", table=101, families=families)
    found = samples(Status(source="kernel", uplinks=(entry,)))
    isp_a = {("uplink", "isp-a")}
    assert found[("ecmpd_uplink_weight", frozenset(isp_a | {("family", "ipv4")}))] == 3
    assert found[("ecmpd_uplink_weight", frozenset(isp_a | {("family", "ipv6")}))] == 1
    assert found[("ecmpd_uplink_up", frozenset(isp_a | {("family", "ipv6")}))] == 0
    assert families_of(found, "ecmpd_uplink_health") == set()  # no tracker, nothing invented
    assert not any(name == "ecmpd_uplink_carrier" for name, _ in found)


def test_mptcp_series_per_uplink_and_family_and_none_without_mptcp() -> None:
    mptcp = MptcpStatus(
        endpoints=("10.1.0.2",), backup=True, connections=3, subflows=4,
        families={
            "ipv4": MptcpFamilyStatus(endpoint="10.1.0.2", backup=True, connections=2,
                                      subflows=3),
            # Out of service in IPv6: no endpoint, yet a first subflow still runs there.
            "ipv6": MptcpFamilyStatus(connections=1, subflows=1),
        },
    )  # fmt: skip
    a = uplink("isp-a", "wan-a", "up", "up", ipv6=family("down", "down")).model_copy(
        update={"mptcp": mptcp}
    )
    b = uplink("isp-b", "wan-b", "up", "up")  # `mptcp: false` on it
    collector = EcmpdCollector(clock=lambda: NOW)
    collector.update(daemon_view(a, b))
    lines = [line for line in render(collector).splitlines() if "ecmpd_mptcp" in line]
    assert lines == [
        "# TYPE ecmpd_mptcp_endpoint gauge",
        'ecmpd_mptcp_endpoint{family="ipv4",uplink="isp-a"} 1.0',
        'ecmpd_mptcp_endpoint{family="ipv6",uplink="isp-a"} 0.0',
        "# TYPE ecmpd_mptcp_endpoint_backup gauge",
        'ecmpd_mptcp_endpoint_backup{family="ipv4",uplink="isp-a"} 1.0',
        "# TYPE ecmpd_mptcp_connections gauge",
        'ecmpd_mptcp_connections{family="ipv4",uplink="isp-a"} 2.0',
        'ecmpd_mptcp_connections{family="ipv6",uplink="isp-a"} 1.0',
        "# TYPE ecmpd_mptcp_subflows gauge",
        'ecmpd_mptcp_subflows{family="ipv4",uplink="isp-a"} 3.0',
        'ecmpd_mptcp_subflows{family="ipv6",uplink="isp-a"} 1.0',
    ]
    collector.update(daemon_view(b))
    assert "ecmpd_mptcp" not in render(collector)


def test_metrics_uses_its_own_registry() -> None:
    metrics = Metrics(MetricsConfig(listen="[::1]:9474"))
    assert (metrics.host, metrics.port) == ("::1", 9474)
    metrics.update(STATUS, COUNTERS)
    text = generate_latest(metrics.registry).decode()
    assert 'ecmpd_uplink_up{family="ipv4",uplink="isp-a"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert "ecmpd_" not in generate_latest(REGISTRY).decode()


def test_status_interfaces() -> None:
    assert STATUS.interfaces() == ["ppp0", "wan-a", "wan-b"]
    assert daemon_view().interfaces() == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.0.2.7", False),
        ("::", False),
        ("localhost", True),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_scrape_serves_the_last_snapshot_when_the_loop_does_not_answer() -> None:
    """A loop that is not running never takes the snapshot: the scrape waits, then serves."""
    metrics = Metrics(MetricsConfig(listen="127.0.0.1:9474"))
    metrics.update(daemon_view())
    before = metrics.collector.snapshot
    loop = asyncio.new_event_loop()
    try:
        metrics.refresh_from_thread(loop, lambda: daemon_view(uplink("never", "wan-n", "up", "up")))
    finally:
        loop.close()
    assert metrics.collector.snapshot is before
    # A closed loop (the daemon stopping): no wait at all.
    metrics.refresh_from_thread(loop, lambda: daemon_view(uplink("never", "wan-n", "up", "up")))
    assert metrics.collector.snapshot is before

"""Prometheus series of the failover order, from a status: tier, role, bytes, caps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ecmpd.order import Role
from ecmpd.status import UplinkStatus


def order_metrics(uplinks: Sequence[UplinkStatus]) -> Iterator[Metric]:
    """Per uplink: its tier, role (one-hot), bytes each way, takeover time, data cap."""
    labels = ["uplink"]
    tier = GaugeMetricFamily("ecmpd_uplink_tier", "The uplink's failover tier.", labels=labels)
    role = GaugeMetricFamily(
        "ecmpd_uplink_role",
        "The uplink's role, one-hot (carrying, standby, down, drained).",
        labels=[*labels, "role"],
    )
    moved = CounterMetricFamily(
        "ecmpd_uplink_bytes",
        "Bytes through the uplink's interface (the kernel's counters), in and out.",
        labels=[*labels, "direction"],
    )
    takeover = GaugeMetricFamily(
        "ecmpd_uplink_takeover_seconds",
        "Standing by: worst-case seconds until it carries once every lower tier fails.",
        labels=labels,
    )
    used = GaugeMetricFamily(
        "ecmpd_uplink_data_used_bytes",
        "Bytes counted against the data cap this period.",
        labels=labels,
    )
    cap = GaugeMetricFamily("ecmpd_uplink_data_cap_bytes", "The uplink's data cap.", labels=labels)
    last = GaugeMetricFamily(
        "ecmpd_uplink_last_resort", "1 while the uplink's data cap is reached.", labels=labels
    )
    for u in uplinks:
        key = [u.name]
        tier.add_metric(key, float(u.tier))
        if u.role is not None:
            for r in Role:
                role.add_metric([*key, r.value], float(u.role is r))
        if u.bytes_in is not None and u.bytes_out is not None:
            moved.add_metric([*key, "in"], float(u.bytes_in))
            moved.add_metric([*key, "out"], float(u.bytes_out))
        if u.takeover_time_s is not None:
            takeover.add_metric(key, u.takeover_time_s)
        if u.data_cap is not None:
            cap.add_metric(key, float(u.data_cap))
            used.add_metric(key, float(u.data_used or 0))
            last.add_metric(key, float(bool(u.last_resort)))
    yield from (tier, role, moved, takeover, used, cap, last)

"""Prometheus series of Multipath TCP, from a status: endpoints, backup, connections, subflows.

One series per MPTCP uplink and family it carries (label `family`: ipv4, ipv6), from the
figures the daemon last read (ecmpd.subflows); none for an uplink without `mptcp`, and
no family at all in a config without MPTCP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from ecmpd.status import UplinkStatus


def mptcp_metrics(uplinks: Sequence[UplinkStatus]) -> Iterator[Metric]:
    """Per MPTCP uplink and family: its endpoint, whether backup, connections, subflows."""
    if all(u.mptcp is None for u in uplinks):
        return
    labels = ["uplink", "family"]
    endpoint = GaugeMetricFamily(
        "ecmpd_mptcp_endpoint",
        "1 while ecmpd keeps an MPTCP endpoint on the uplink in the family (in service).",
        labels=labels,
    )
    backup = GaugeMetricFamily(
        "ecmpd_mptcp_endpoint_backup",
        "1 while the uplink's endpoint is backup (degraded, metered, standing by).",
        labels=labels,
    )
    connections = GaugeMetricFamily(
        "ecmpd_mptcp_connections",
        "This host's MPTCP connections with a subflow from the uplink in the family.",
        labels=labels,
    )
    subflows = GaugeMetricFamily(
        "ecmpd_mptcp_subflows", "MPTCP subflows from the uplink in the family.", labels=labels
    )
    for u in uplinks:
        if u.mptcp is None:
            continue
        for family, f in u.mptcp.families.items():
            key = [u.name, family]
            endpoint.add_metric(key, float(f.endpoint is not None))
            if f.endpoint is not None:
                backup.add_metric(key, float(f.backup))
            connections.add_metric(key, float(f.connections))
            subflows.add_metric(key, float(f.subflows))
    yield from (endpoint, backup, connections, subflows)

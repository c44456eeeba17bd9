"""The daemon's status, gathered from its parts (the contract itself is ecmpd.status).

Health per uplink and family from the supervisor; membership, refusals and counters
from the kernel as the reconciler keeps it; drains from Serving; the failover order
(tiers, roles, bytes, caps) from OrderWatch; with `mptcp`, each uplink's endpoints,
connections and subflows from the last read of ecmpd.subflows. Taken on the daemon's
loop: none of those parts is thread-safe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ecmpd.config import Config
from ecmpd.kernel.mptcpdiag import Subflow
from ecmpd.orderwatch import OrderWatch
from ecmpd.reconciler import Reconciler
from ecmpd.serving import Serving
from ecmpd.status import (
    Clock,
    DaemonCounters,
    Status,
    daemon_order_view,
    daemon_status,
    refused_ops,
    with_mptcp,
    with_order,
)


def runtime_status(
    config: Config,
    serving: Serving,
    kernel: Reconciler,
    order: OrderWatch,
    clock: Clock,
    started: float,
    subflows: Sequence[Subflow] = (),
) -> Status:
    """The status at `clock` of a daemon that started at `started` (wall clock)."""
    refused = refused_ops(kernel.refused, kernel.owners, clock.monotonic)
    counters = DaemonCounters(
        pid=os.getpid(),
        uptime_s=round(clock.wall - started, 1),
        reconciles=kernel.counters.reconciles,
        ops=kernel.counters.ops,
        failures=kernel.counters.failures,
        resyncs=kernel.counters.resyncs,
        refusals=kernel.book.total,
    )
    status = daemon_status(
        config.balancer.table,
        serving.supervisor.reports(),
        kernel.observed,
        kernel.facts,
        serving.drained,
        counters,
        clock,
        refused,
    )
    meter = order.meter
    view = daemon_order_view(
        config,
        order.carrying,
        set().union(*serving.in_service().values()),
        serving.drained,
        meter.counters,
        meter.ledgers,
        meter.order.last_resort,
    )
    status = with_order(status, config, view)
    if config.mptcp_uplinks():
        status = with_mptcp(status, config, kernel.observed, kernel.facts, subflows)
    return status

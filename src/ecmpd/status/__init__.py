"""The status contract: frozen types, their two builders, one display-state rule.

Pure (no I/O, no clock). `daemon_status` builds it from the daemon's runtime (health
reports per uplink and family, the refused kernel operations), `kernel_status` from
the kernel alone (what `ecmpd status` shows with no daemon running); both go through
`display_state`. Everything that reads a status — metrics, the live views, `status`,
`watch`, the lab and the benchmarks — takes a `Status`; JSON exists only at the edges
(the control socket, `--json`), through `Status.to_json` and `Status.from_json`.
types.py holds the models and the rule, build.py the builders.
"""

from ecmpd.status.build import (
    Clock,
    FamilyReport,
    UplinkReport,
    daemon_status,
    kernel_status,
    refused_ops,
    with_mptcp,
)
from ecmpd.status.order import OrderView, daemon_order_view, kernel_order_view, with_order
from ecmpd.status.types import (
    BalancerStatus,
    DaemonCounters,
    DisplayState,
    FamilyKey,
    FamilyStatus,
    GroupStatus,
    MptcpFamilyStatus,
    MptcpStatus,
    RefusedOp,
    RuleStatus,
    Status,
    TargetStatus,
    UplinkStatus,
    display_state,
)

__all__ = [
    "BalancerStatus",
    "Clock",
    "DaemonCounters",
    "DisplayState",
    "FamilyKey",
    "FamilyReport",
    "FamilyStatus",
    "GroupStatus",
    "MptcpFamilyStatus",
    "MptcpStatus",
    "OrderView",
    "RefusedOp",
    "RuleStatus",
    "Status",
    "TargetStatus",
    "UplinkReport",
    "UplinkStatus",
    "daemon_order_view",
    "daemon_status",
    "display_state",
    "kernel_order_view",
    "kernel_status",
    "refused_ops",
    "with_mptcp",
    "with_order",
]

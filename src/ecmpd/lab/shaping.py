"""Token-bucket (TBF) shaping of lab links, so each ISP has its own capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyroute2 import IPRoute

# The bucket must refill at least one timer tick's worth of bytes or TBF
# under-delivers: 4 ms covers HZ=250 (HZ=1000 kernels need only 1 ms).
BURST_TIME_S = 0.004
# Below ~32 KiB a single GSO super-packet from a veth barely fits, and TBF
# then segments nearly everything, costing CPU on a 2-core test VM.
MIN_BURST_BYTES = 32 * 1024
# Queue depth in time: enough to absorb TCP bursts without bufferbloat that
# would hide a health-check RTT rise.
LATENCY_MS = 50
# tc_tbf_qopt.rate is a u32 in bytes/s; beyond that TBF needs TCA_TBF_RATE64.
MAX_RATE_MBIT = 34_000


@dataclass(frozen=True)
class Tbf:
    """One TBF qdisc's parameters."""

    rate_mbit: int
    burst_bytes: int
    latency_ms: int

    @property
    def rate_bytes(self) -> int:
        """Returns the rate in bytes per second, as the kernel takes it."""
        return self.rate_mbit * 1_000_000 // 8


def tbf_for(rate_mbit: int) -> Tbf:
    """Returns the TBF parameters the lab uses for a link of rate_mbit."""
    if not 1 <= rate_mbit <= MAX_RATE_MBIT:
        raise ValueError(f"rate {rate_mbit} Mbit/s is outside 1..{MAX_RATE_MBIT}")
    rate_bytes = rate_mbit * 1_000_000 / 8
    burst = max(MIN_BURST_BYTES, math.ceil(rate_bytes * BURST_TIME_S))
    return Tbf(rate_mbit=rate_mbit, burst_bytes=burst, latency_ms=LATENCY_MS)


def shape(ipr: IPRoute, ifindex: int, rate_mbit: int) -> Tbf:
    """Installs (or replaces) a root TBF qdisc on an interface; returns its parameters."""
    tbf = tbf_for(rate_mbit)
    # Plain numbers: pyroute2 takes ints as bytes/s, bytes and microseconds.
    ipr.tc(
        "replace",
        "tbf",
        index=ifindex,
        handle="1:",
        rate=tbf.rate_bytes,
        burst=tbf.burst_bytes,
        latency=tbf.latency_ms * 1000,
    )
    return tbf


def unshape(ipr: IPRoute, ifindex: int) -> None:
    """Removes the root qdisc of an interface, back to the kernel default."""
    ipr.tc("del", index=ifindex, handle="1:")

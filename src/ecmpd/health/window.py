"""Sliding windows of probe results per target: loss and RTT, kept the way dpinger does."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ecmpd.config import CheckConfig

Target = IPv4Address | IPv6Address

# The default window spans this long at the base interval. dpinger defaults to 60 s; half
# of that still averages out random loss while readmitting a repaired path twice as fast
# (a window full of losses must drain below max_loss before any round counts as good).
WINDOW_SPAN = 30.0
# One lost probe then moves the loss by at most 5 %, so it cannot alone trip a sane max_loss.
MIN_WINDOW = 20
# Bounds the per-round median over the window (and the memory) at fast intervals.
MAX_WINDOW = 300


def default_window(check: CheckConfig) -> int:
    """Samples kept per target: WINDOW_SPAN worth of base intervals, within [20, 300]."""
    # The epsilon keeps 30 s / 0.2 s at 150 rather than ceil(150.00000000000003) = 151.
    rounds = math.ceil(WINDOW_SPAN / check.interval - 1e-9)
    return max(MIN_WINDOW, min(MAX_WINDOW, rounds))


def loss_over(lost: int, samples: int, max_loss: float) -> bool:
    """Whether `lost` of `samples` probes exceeds max_loss (the one place this is decided)."""
    return samples > 0 and lost / samples > max_loss


def rounds_to_clear(size: int, max_loss: float) -> int:
    """Good rounds a window of `size` full of losses needs before its loss is <= max_loss."""
    # Counted with loss_over itself, so this agrees with the tracker to the last float bit.
    return next(j for j in range(1, size + 1) if not loss_over(size - j, size, max_loss))


@dataclass(frozen=True, slots=True)
class Quality:
    """Loss and RTT over some probe results (one target's window, or all targets' pooled)."""

    samples: int
    loss: float  # fraction lost, 0..1; 0.0 with no samples
    rtt_mean: float | None  # seconds, over the answered probes; None if none answered
    rtt_median: float | None


def quality(samples: Sequence[float | None]) -> Quality:
    """Loss and mean/median RTT of a sequence of results (None: lost)."""
    rtts = [r for r in samples if r is not None]
    lost = len(samples) - len(rtts)
    return Quality(
        samples=len(samples),
        loss=lost / len(samples) if samples else 0.0,
        rtt_mean=statistics.fmean(rtts) if rtts else None,
        rtt_median=statistics.median(rtts) if rtts else None,
    )


@dataclass(frozen=True, slots=True)
class TargetStats:
    """One target's probe statistics, as `ecmpd status` shows them."""

    target: Target
    rtt_last: float | None  # seconds; None: the last probe was lost, or none was sent yet
    rtt_avg: float | None  # mean RTT of the answered probes in the window
    loss: float  # fraction of the window's probes lost, 0..1
    sent: int  # since start, never reset: usable as Prometheus counters
    received: int
    rtt_median: float | None = None  # the window statistic max_rtt is checked against


class ProbeWindow:
    """The last `size` results of one target, plus lifetime counters."""

    def __init__(self, target: Target, size: int) -> None:
        if size < 1:
            raise ValueError(f"a probe window holds at least one sample, got {size}")
        self.target = target
        self._samples: deque[float | None] = deque(maxlen=size)
        # Kept incrementally: the loss is read every round, the full window only on demand.
        self._lost = 0
        self._sent = 0
        self._received = 0
        self._last: float | None = None

    def record(self, rtt: float | None) -> None:
        """Add one probe result (RTT in seconds, or None for lost), dropping the oldest."""
        if len(self._samples) == self._samples.maxlen and self._samples[0] is None:
            self._lost -= 1
        self._samples.append(rtt)
        self._sent += 1
        self._last = rtt
        if rtt is None:
            self._lost += 1
        else:
            self._received += 1

    @property
    def samples(self) -> tuple[float | None, ...]:
        """The window's results, oldest first."""
        return tuple(self._samples)

    @property
    def lost(self) -> int:
        """Lost probes in the window."""
        return self._lost

    @property
    def size(self) -> int:
        """Results currently in the window (at most its capacity)."""
        return len(self._samples)

    def quality(self) -> Quality:
        """Loss and RTT over the window."""
        return quality(self._samples)

    def stats(self) -> TargetStats:
        """The status view of this target."""
        q = self.quality()
        return TargetStats(
            target=self.target,
            rtt_last=self._last,
            rtt_avg=q.rtt_mean,
            loss=q.loss,
            sent=self._sent,
            received=self._received,
            rtt_median=q.rtt_median,
        )


def pooled_quality(windows: Iterable[ProbeWindow]) -> Quality:
    """Loss and RTT over every target's window together."""
    return quality([r for w in windows for r in w.samples])

"""How long the failover benchmark waits around a fault, and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FAULT_JITTER = 0.2  # random delay before a fault, so it falls anywhere in a probe round
# After the group change: flows move within one 5 ms tick, while TCP attempts launched
# just before it need their 200 ms timeout to say they failed.
SETTLE = 0.8
REMOVAL_TIMEOUT = 5.0
RECOVERY_TIMEOUT = 15.0


def settle_after_removal(
    removal: Callable[[], T], removed_at: Callable[[T], float], undo: Callable[[], object]
) -> tuple[T, float]:
    """Waits for removal() (the faulty uplink leaving), then SETTLE past removed_at; the
    fault is undone if either fails. (removal's answer, the time settling ended)."""
    try:
        removed = removal()
        time.sleep(max(0.0, removed_at(removed) + SETTLE - time.monotonic()))
        return removed, time.monotonic()
    except BaseException:
        undo()
        raise

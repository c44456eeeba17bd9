"""Polling until something holds, for the lab, the benchmarks and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_STEP_S = 0.005


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, step: float = DEFAULT_STEP_S
) -> float:
    """Polls check() until it holds; returns time.monotonic() just after it did.

    Raises TimeoutError after timeout; check() gets one last call after the deadline,
    so a slow poll on a busy machine cannot miss a condition that did come true.
    """
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        if check():
            return time.monotonic()
        if expired:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, step: float = DEFAULT_STEP_S
) -> float:
    """wait_until, returning the seconds it took instead of the moment."""
    start = time.monotonic()
    return wait_until(check, timeout, what, step) - start

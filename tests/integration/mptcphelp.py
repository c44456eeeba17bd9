"""Test helpers for MPTCP: read endpoints and limits with `ip`, wait for the kernel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ecmpd.lab import netns


def endpoints(ns: str) -> list[dict[str, Any]]:
    """`ip -j mptcp endpoint show` in the namespace."""
    out = netns.run_in(ns, ["ip", "-j", "mptcp", "endpoint", "show"], capture_output=True,
                       text=True, check=True)  # fmt: skip
    result: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return result


def limits(ns: str) -> dict[str, int]:
    """`ip mptcp limits show` as numbers (iproute2 6.1 prints no JSON for it)."""
    out = netns.run_in(ns, ["ip", "mptcp", "limits", "show"], capture_output=True, text=True,
                       check=True)  # fmt: skip
    words = out.stdout.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll every 20 ms until done(); the seconds it took (fails the test on timeout)."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout, f"timed out after {timeout}s: {what}"
        time.sleep(0.02)
    return time.monotonic() - start

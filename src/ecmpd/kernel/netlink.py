"""Opening the rtnetlink socket the way the rest of `kernel/` expects it."""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute


def open_iproute() -> Any:
    """An IPRoute in the current network namespace whose requests return tuples.

    pyroute2 0.9.7's `nlm_request` returns a lazy generator unless told otherwise,
    and a generator nobody iterates never sends its request. It also makes each
    thread's socket on that thread's first use, in that thread's namespace: the
    `kernel/` functions and `KernelWriter` follow it (`transport.netlink_for`), and do
    their own requests on a raw socket opened beside it.
    """
    ipr = IPRoute()
    ipr.status["nlm_generator"] = False
    return ipr

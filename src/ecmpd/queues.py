"""Pure: ecmpd's egress queues on the uplinks that have a `queue`.

Where a line is slower than the router's port (a modem, an ONT, an LTE stick), the
queue of what waits to go up forms in the modem: a drop-tail FIFO that a few bulk
uploads keep full. Everything else waits behind them and is dropped with them: the
handshake and first request of a new connection, and after a failover every
reconnecting client's first flight at once (its loss costs TCP's retransmission timer,
200 ms or more, each time).

An uplink's `queue: {rate: ...}` moves that queue into the router: ecmpd shapes the
interface a little below the line's rate (so the modem's queue stays empty) with an HTB
of two classes. The first `first_bytes` bytes each way of every connection (table inet
ecmpd sets their packets' priority to model.QUEUE_FIRST, a quarter of the rate assured)
are served first, with the other three quarters assured to the rest, so bulk data is
never starved; the rest waits in a
FIFO of QUEUE_DEPTH_S at the rate, as the lab's modem does. Not fair queuing (this
kernel has no fq_codel or cake): the one promise is that a connection's start does not
queue behind bulk data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecmpd.config.schema import Config
from ecmpd.facts import KernelFacts
from ecmpd.model import (
    QUEUE_BULK,
    QUEUE_BULK_LEAF,
    QUEUE_FIRST,
    QUEUE_FIRST_LEAF,
    QUEUE_FIRST_LIMIT,
    QUEUE_HANDLE,
    QUEUE_TOP,
    Queue,
)

# The bulk FIFO's depth in time at the shaped rate, and its floor (two GSO
# super-packets of a veth or a NIC with offloads fit).
QUEUE_DEPTH_S = 0.05
MIN_LIMIT = 32 * 1024
# Share of the rate assured to the first-packets class; the rest is the bulk class's
# (each may borrow up to the whole rate when the other is idle).
FIRST_SHARE = 4  # 1/4


def queue_for(ifname: str, rate_bits: int) -> Queue:
    """The queue ecmpd builds on ifname for a `queue.rate` of rate_bits per second."""
    rate = max(1, rate_bits // 8)
    return Queue(
        ifname=ifname,
        rate=rate,
        first=max(1, rate // FIRST_SHARE),
        limit=max(MIN_LIMIT, round(rate * QUEUE_DEPTH_S)),
    )


def desired_queues(config: Config, facts: KernelFacts) -> frozenset[Queue]:
    """One queue per uplink with a `queue` whose interface exists now (the kernel takes
    an interface's qdiscs along when it goes; a returning one gets its queue again)."""
    return frozenset(
        queue_for(u.interface, u.queue.rate)
        for u in config.uplinks
        if u.queue is not None and u.interface in facts.interfaces
    )


def first_bytes(config: Config) -> tuple[tuple[str, int], ...]:
    """(interface, N) for table inet ecmpd: whose connections' first N bytes go first."""
    return tuple(
        sorted((u.interface, u.queue.first_bytes) for u in config.uplinks if u.queue is not None)
    )


@dataclass(frozen=True)
class QueueClass:
    """One HTB class of a queue (rates in bytes/s)."""

    classid: int
    parent: int
    rate: int
    ceil: int
    prio: int


@dataclass(frozen=True)
class QueueLeaf:
    """The FIFO under one class: packets (pfifo) or bytes (bfifo)."""

    handle: int
    parent: int
    kind: str
    limit: int


def queue_classes(queue: Queue) -> tuple[QueueClass, QueueClass, QueueClass]:
    """The top class at the rate, the first-packets class (served first) and the bulk one."""
    return (
        QueueClass(QUEUE_TOP, QUEUE_HANDLE, queue.rate, queue.rate, 0),
        QueueClass(QUEUE_FIRST, QUEUE_TOP, queue.first, queue.rate, 0),
        QueueClass(QUEUE_BULK, QUEUE_TOP, queue.rate - queue.first, queue.rate, 1),
    )


def queue_leaves(queue: Queue) -> tuple[QueueLeaf, QueueLeaf]:
    """The FIFOs under the first-packets and the bulk class."""
    return (
        QueueLeaf(QUEUE_FIRST_LEAF, QUEUE_FIRST, "pfifo", QUEUE_FIRST_LIMIT),
        QueueLeaf(QUEUE_BULK_LEAF, QUEUE_BULK, "bfifo", queue.limit),
    )


# HTB's `default`: the minor number of the class that takes unclassified packets.
DEFAULT_CLASS = QUEUE_BULK & 0xFFFF


def foreign_root(ifname: str, held: str) -> str:
    """What stands in the way of a queue: someone else's root qdisc ("kind handle")."""
    return (
        f"{ifname} has a root qdisc ecmpd does not own ({held}):"
        f" remove it (tc qdisc del dev {ifname} root)"
    )


def show_handle(handle: int) -> str:
    """A qdisc handle or class id as tc writes it (ec:, ec:10)."""
    major, minor = handle >> 16, handle & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"

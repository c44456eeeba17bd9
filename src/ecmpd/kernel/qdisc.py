"""ecmpd's egress queues (ecmpd.queues) as qdiscs and classes, over the raw socket.

Owned: an interface's root qdisc of handle ec: (model.QUEUE_HANDLE) and what hangs
under it. A root of handle 0: is the kernel's default (noqueue, pfifo_fast, mq...),
which ecmpd may replace and gives back by deleting its own; a root of any other handle
is someone else's (tc, systemd-networkd, SQM scripts) and is never touched: building a
queue there is refused, naming it.

The tree: HTB ec: (default class ec:20) > ec:1 at the rate > ec:10 (first packets,
priority 0, pfifo) and ec:20 (the rest, priority 1, bfifo). Leaves have fixed handles
(ed:, ee:) so a second write changes them in place; a class is created or changed by
one message. HTB cannot change its own parameters: a root of handle ec: that is not
the HTB ecmpd builds is deleted and built again.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ecmpd.kernel.transport import (
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NetlinkSocket,
    attr,
    attr_str,
    get_str,
    parse_attrs,
)
from ecmpd.model import QUEUE_BULK, QUEUE_FIRST, QUEUE_HANDLE, QUEUE_TOP, Queue
from ecmpd.queues import (
    DEFAULT_CLASS,
    QueueClass,
    QueueLeaf,
    foreign_root,
    queue_classes,
    queue_leaves,
    show_handle,
)

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTCLASS, RTM_GETTCLASS = 40, 42
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
TC_H_ROOT = 0xFFFFFFFF
TC_HTB_PROTOVER = 3
TC_LINKLAYER_ETHERNET = 1  # no rate table needed (the kernel computes times itself)
# struct tcmsg: family, pad, pad, ifindex, handle, parent, info.
TCMSG = struct.Struct("=BxHiIII")
# struct tc_htb_glob: version, rate2quantum, defcls, debug, direct_pkts.
HTB_GLOB = struct.Struct("=IIIII")
# struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
RATESPEC = struct.Struct("=BBHhHI")
# struct tc_htb_opt: rate, ceil (ratespecs), buffer, cbuffer, quantum, level, prio.
HTB_OPT = struct.Struct("=12s12sIIIII")
FIFO = struct.Struct("=I")  # struct tc_fifo_qopt: limit
U64 = struct.Struct("=Q")
U32_MAX = 0xFFFFFFFF
# Bucket depth in time at a class's rate (and its floor): as the lab's TBF.
BURST_S = 0.004
MIN_BURST = 32 * 1024
# psched ticks are 64 ns (PSCHED_SHIFT 6): what tc_htb_opt's buffer counts in.
TICK_NS = 64
MTU = 1514
MAX_QUANTUM = 200_000  # above it the kernel warns and clamps


@dataclass(frozen=True)
class Qdisc:
    """One qdisc as dumped: where it hangs, its handle, kind and (FIFOs) limit."""

    ifindex: int
    handle: int
    parent: int
    kind: str
    limit: int | None = None
    default_class: int | None = None  # HTB

    @property
    def shown(self) -> str:
        """Its kind and handle, as tc shows them ("tbf 1:")."""
        return f"{self.kind} {show_handle(self.handle)}"


class ForeignQdisc(OSError):
    """The interface's root qdisc is someone else's: ecmpd builds no queue there."""

    def __init__(self, ifname: str, root: Qdisc) -> None:
        super().__init__(
            errno.EBUSY, f"{foreign_root(ifname, root.shown)} or drop the uplink's `queue`"
        )


def _tcmsg(ifindex: int, handle: int, parent: int) -> bytes:
    return TCMSG.pack(0, 0, ifindex, handle, parent, 0)


def read_qdiscs(nl: NetlinkSocket) -> list[Qdisc]:
    """Every qdisc of the namespace."""
    out = []
    for _kind, payload in nl.dump(RTM_GETQDISC, _tcmsg(0, 0, 0)):
        _, _, ifindex, handle, parent, _ = TCMSG.unpack_from(payload)
        attrs = parse_attrs(payload, TCMSG.size)
        kind = get_str(attrs, TCA_KIND) or ""
        options = parse_attrs(attrs.get(TCA_OPTIONS, b""))
        limit = default = None
        if kind in ("pfifo", "bfifo") and len(attrs.get(TCA_OPTIONS, b"")) >= FIFO.size:
            limit = FIFO.unpack_from(attrs[TCA_OPTIONS])[0]
        if kind == "htb" and TCA_HTB_INIT in options:
            default = HTB_GLOB.unpack_from(options[TCA_HTB_INIT])[2]
        out.append(Qdisc(ifindex, handle, parent, kind, limit, default))
    return out


def read_classes(nl: NetlinkSocket, ifindex: int) -> list[QueueClass]:
    """The HTB classes of one interface."""
    out = []
    for _kind, payload in nl.dump(RTM_GETTCLASS, _tcmsg(ifindex, 0, 0)):
        _, _, index, handle, parent, _ = TCMSG.unpack_from(payload)
        attrs = parse_attrs(payload, TCMSG.size)
        if index != ifindex or get_str(attrs, TCA_KIND) != "htb":
            continue
        options = parse_attrs(attrs.get(TCA_OPTIONS, b""))
        if TCA_HTB_PARMS not in options:
            continue
        rate_spec, ceil_spec, _b, _cb, _q, _level, prio = HTB_OPT.unpack_from(
            options[TCA_HTB_PARMS]
        )
        rate = _rate(RATESPEC.unpack(rate_spec)[5], options.get(TCA_HTB_RATE64))
        ceil = _rate(RATESPEC.unpack(ceil_spec)[5], options.get(TCA_HTB_CEIL64))
        # A class right under the qdisc is listed with parent "root": the qdisc it is.
        parent = handle & 0xFFFF0000 if parent == TC_H_ROOT else parent
        out.append(QueueClass(handle, parent, rate, ceil, prio))
    return out


def _rate(rate32: int, rate64: bytes | None) -> int:
    return int(U64.unpack_from(rate64)[0]) if rate64 is not None else rate32


def roots(qdiscs: list[Qdisc]) -> dict[int, Qdisc]:
    """Each interface's root qdisc, by ifindex."""
    return {q.ifindex: q for q in qdiscs if q.parent == TC_H_ROOT}


def observe_queues(
    nl: NetlinkSocket, names: Mapping[int, str]
) -> tuple[frozenset[Queue], dict[str, str]]:
    """ecmpd's queues (every root of handle ec:, as built or marked not intact), and the
    interfaces whose root is someone else's (name -> "kind handle", for the checks)."""
    qdiscs = read_qdiscs(nl)
    found = set()
    foreign = {}
    for ifindex, root in roots(qdiscs).items():
        if ifindex not in names:
            continue
        if root.handle == QUEUE_HANDLE:
            found.add(_held(nl, ifindex, root, qdiscs, names[ifindex]))
        elif root.handle != 0:
            foreign[names[ifindex]] = root.shown
    return frozenset(found), foreign


def _queue(
    ifname: str, root: Qdisc, classes: Mapping[int, QueueClass], leaves: Mapping[int, Qdisc]
) -> Queue:
    """The queue a tree under ec: holds; not intact unless exactly as `write_queue` builds it."""
    top, first, bulk = (classes.get(c) for c in (QUEUE_TOP, QUEUE_FIRST, QUEUE_BULK))
    first_leaf, bulk_leaf = leaves.get(QUEUE_FIRST), leaves.get(QUEUE_BULK)
    if top is None or first is None or bulk is None or bulk_leaf is None or first_leaf is None:
        return Queue(ifname, top.rate if top else 0, 0, 0, intact=False)
    queue = Queue(ifname, top.rate, first.rate, bulk_leaf.limit or 0)
    leaves_have = tuple(
        QueueLeaf(q.handle, q.parent, q.kind, q.limit or 0) for q in (first_leaf, bulk_leaf)
    )
    intact = (
        root.kind == "htb"
        and root.default_class == DEFAULT_CLASS
        and len(classes) == 3
        and (top, first, bulk) == queue_classes(queue)
        and leaves_have == queue_leaves(queue)
    )
    return queue if intact else Queue(ifname, queue.rate, queue.first, queue.limit, intact=False)


def write_queue(nl: NetlinkSocket, ifindex: int, queue: Queue) -> None:
    """Build or change ecmpd's queue on an interface; ForeignQdisc if its root is not ours.

    A tree under ec: as ecmpd builds it is changed in place (rates, depth); one changed
    otherwise (a class or FIFO gone or of another kind) is deleted and built again.
    """
    qdiscs = read_qdiscs(nl)
    root = roots(qdiscs).get(ifindex)
    ours = root is not None and root.handle == QUEUE_HANDLE
    if root is not None and not ours and root.handle != 0:
        raise ForeignQdisc(queue.ifname, root)
    if root is not None and ours and not _held(nl, ifindex, root, qdiscs, queue.ifname).intact:
        _delete_root(nl, ifindex)
        ours = False
    flags = NLM_F_CREATE | NLM_F_REPLACE
    if not ours:
        glob = HTB_GLOB.pack(TC_HTB_PROTOVER, 10, DEFAULT_CLASS, 0, 0)
        body = _tcmsg(ifindex, QUEUE_HANDLE, TC_H_ROOT) + attr_str(TCA_KIND, "htb")
        nl.request(RTM_NEWQDISC, flags, body + attr(TCA_OPTIONS, attr(TCA_HTB_INIT, glob)))
    for c in queue_classes(queue):
        nl.request(RTM_NEWTCLASS, NLM_F_CREATE, _class_message(ifindex, c))
    for leaf in queue_leaves(queue):
        body = _tcmsg(ifindex, leaf.handle, leaf.parent) + attr_str(TCA_KIND, leaf.kind)
        nl.request(RTM_NEWQDISC, flags, body + attr(TCA_OPTIONS, FIFO.pack(leaf.limit)))


def _held(nl: NetlinkSocket, ifindex: int, root: Qdisc, qdiscs: list[Qdisc], ifname: str) -> Queue:
    """The queue the tree under an ec: root holds (`intact` says whether ecmpd built it so)."""
    leaves = {q.parent: q for q in qdiscs if q.ifindex == ifindex and q.parent != TC_H_ROOT}
    classes = {c.classid: c for c in read_classes(nl, ifindex)} if root.kind == "htb" else {}
    return _queue(ifname, root, classes, leaves)


def _class_message(ifindex: int, c: QueueClass) -> bytes:
    """RTM_NEWTCLASS's body for one HTB class (rates in bytes/s)."""
    rate, ceil = c.rate, c.ceil

    def spec(r: int) -> bytes:
        return RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, 0, 0, min(r, U32_MAX))

    def ticks(r: int) -> int:
        burst = max(MIN_BURST, r * BURST_S)
        return min(U32_MAX, int(burst / r * 1e9 / TICK_NS))

    quantum = min(MAX_QUANTUM, max(MTU, rate // 10))
    opt = HTB_OPT.pack(spec(rate), spec(ceil), ticks(rate), ticks(ceil), quantum, 0, c.prio)
    options = attr(TCA_HTB_PARMS, opt)
    if rate > U32_MAX:
        options += attr(TCA_HTB_RATE64, U64.pack(rate))
    if ceil > U32_MAX:
        options += attr(TCA_HTB_CEIL64, U64.pack(ceil))
    body = _tcmsg(ifindex, c.classid, c.parent) + attr_str(TCA_KIND, "htb")
    return body + attr(TCA_OPTIONS, options)


def delete_queue(nl: NetlinkSocket, ifindex: int) -> None:
    """Delete ecmpd's root qdisc (and all under it): the kernel's default comes back.
    Nothing happens when the root is not ec: (someone else's is never deleted)."""
    root = roots(read_qdiscs(nl)).get(ifindex)
    if root is not None and root.handle == QUEUE_HANDLE:
        _delete_root(nl, ifindex)


def _delete_root(nl: NetlinkSocket, ifindex: int) -> None:
    nl.request(RTM_DELQDISC, 0, _tcmsg(ifindex, QUEUE_HANDLE, TC_H_ROOT))

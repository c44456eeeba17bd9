"""The daemon's reconcile policy, "apply what can, report and retry the rest". Pure.

The CLI's `apply` is a one-shot with exit codes: all or nothing (kernel/apply.py
`reconcile` rolls back). A daemon must instead keep as much of the kernel right as
it can while one object is refused, so `ecmpd run` reconciles like this:

1. The plan is executed in its order (plan.py: add before delete), one operation at a
   time; a refusal never stops the operations after it. The kernel refuses what
   depends on a refused object too (a route on a refused nexthop): each is reported.
2. One uplink's refused nexthop never holds up another uplink's failover: a group is
   sent without the members whose nexthop is not in the kernel (`prune_group`).
3. A deletion waits (`held`) while what was to take the deleted object's place was
   refused, so traffic is never left with nothing: a changed rule's new twin, a
   group's swap twin or a route meant to move off the group (`held_by`). A route
   whose nexthop group is not in the kernel waits for it (`missing_group`). A held
   operation has no backoff of its own: it goes with what it waits for.
4. After a pass with refusals the kernel is re-read and the plan re-made once at once
   (the kernel may just have moved under us: a link went, a DHCP client acted). What
   is refused again is retried with backoff, RETRY_FIRST_S doubling to RETRY_MAX_S:
   the same operation is not sent again before its time (`RefusalBook.due`), a
   changed one (new health, a reload) is. A timer wakes the daemon at the next retry;
   nothing loops.
5. An operation that would take over a foreign object holding one of ecmpd's ids, or
   route through one, is not sent (`foreign_use`): a conflict, or held.
6. Each refusal is reported: a `kernel.refused` log event, the status' `refused` list
   (with the uplink it belongs to), the metrics ecmpd_kernel_refusals_total and
   ecmpd_kernel_refused_ops. EEXIST on an add means a foreign object holds one of
   ecmpd's ids or keys (as FRR's zebra can): a `conflict`, named as such.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from ecmpd.config import Config
from ecmpd.model import Family, Nexthop, NexthopGroup, Queue, Route, Rule, Sysctl, nexthop_id
from ecmpd.plan import SWAP_ID_OFFSET, KernelObject, Op, OpKind

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0

OpKey = tuple[OpKind, str, object]


def op_key(op: Op) -> OpKey:
    """What makes two operations the same one to retry: kind, object type and key."""
    return (op.kind, type(op.obj).__name__, op.obj.key)


class RefusalKind(StrEnum):
    """Why an operation is not in the kernel."""

    REFUSED = "refused"  # the kernel said no
    CONFLICT = "conflict"  # a foreign object holds ecmpd's id or key (EEXIST)
    HELD = "held"  # not sent: it would undo what a refused operation was to replace


@dataclass(frozen=True)
class Refusal:
    """One operation the kernel does not hold, and when it is tried again."""

    op: Op
    kind: RefusalKind
    error: str
    attempts: int
    since: float  # first refused (the book's clock)
    retry_at: float


def refusal_kind(exc: OSError, op: Op) -> RefusalKind:
    """A conflict when an add finds its id or key taken, else a plain refusal."""
    if exc.errno == errno.EEXIST and op.kind is OpKind.ADD:
        return RefusalKind.CONFLICT
    if exc.errno == errno.EBUSY and isinstance(op.obj, Queue):
        return RefusalKind.CONFLICT  # someone else's root qdisc (kernel/qdisc.ForeignQdisc)
    return RefusalKind.REFUSED


def describe(exc: OSError, op: Op) -> str:
    """The kernel's answer in words, conflicts spelt out."""
    text = exc.strerror or str(exc)
    if refusal_kind(exc, op) is RefusalKind.CONFLICT and not isinstance(op.obj, Queue):
        return f"{text}: a foreign object holds this {type(op.obj).__name__.lower()}'s id or key"
    return text


def held_by(op: Op, refused: Iterable[Op]) -> Op | None:
    """The refused operation this deletion must wait for, if any (policy point 3)."""
    if op.kind is not OpKind.DELETE:
        return None
    for r in refused:
        if isinstance(op.obj, Rule) and isinstance(r.obj, Rule) and r.obj.key == op.obj.key:
            return r  # the rule's changed twin at the same priority is not in place
        if isinstance(op.obj, NexthopGroup):
            twin = op.obj.id + SWAP_ID_OFFSET
            if isinstance(r.obj, NexthopGroup) and r.obj.id in (twin, op.obj.id):
                return r  # its swap twin (or its re-creation) is not in place
            if isinstance(r.obj, Route) and r.obj.nhid is not None and r.kind is not OpKind.DELETE:
                return r  # a route that was to move off it may still use it
    return None


def foreign_use(op: Op, foreign: Collection[int]) -> tuple[RefusalKind, str] | None:
    """Whether an operation would take over or route through a foreign nexthop (point 5).

    ecmpd's nexthop and group ids are its own (NH_ID_BASE + table), but another program
    can hold one (FRR's zebra re-creates a group id as its own once its members went).
    Replacing it would take zebra's object over, adding it fails with EEXIST anyway, and
    a route through it would send ecmpd's traffic by someone else's group: not sent.
    """
    if op.kind is OpKind.DELETE:
        return None
    obj = op.obj
    if isinstance(obj, Nexthop | NexthopGroup) and obj.id in foreign:
        return RefusalKind.CONFLICT, f"id {obj.id} is held by a foreign nexthop object"
    if isinstance(obj, Route) and obj.nhid is not None and obj.nhid in foreign:
        return RefusalKind.HELD, f"its nexthop group {obj.nhid} is a foreign object"
    return None


def missing_group(op: Op, present: Collection[int]) -> str | None:
    """Why a route cannot go yet: its nexthop group is not in the kernel (None: it is).

    The group's own operation was refused or waits its backoff; the kernel would refuse
    the route too, so it waits without asking (policy point 3).
    """
    obj = op.obj
    if op.kind is OpKind.DELETE or not isinstance(obj, Route) or obj.nhid is None:
        return None
    return None if obj.nhid in present else f"waits for its nexthop group {obj.nhid}"


def prune_group(op: Op, present: Collection[int]) -> Op | None:
    """A group add/replace without members whose nexthop is not in the kernel (point 2).

    None when no member is left: an empty group cannot exist, the operation waits.
    """
    if not isinstance(op.obj, NexthopGroup) or op.kind is OpKind.DELETE:
        return op
    members = tuple(m for m in op.obj.members if m[0] in present)
    if members == op.obj.members:
        return op
    return Op(op.kind, replace(op.obj, members=members)) if members else None


class RefusalBook:
    """Refused operations, their backoff, and a count of refusals for metrics."""

    def __init__(self, first: float = RETRY_FIRST_S, cap: float = RETRY_MAX_S) -> None:
        self._first, self._cap = first, cap
        self._entries: dict[OpKey, Refusal] = {}
        self.total = 0  # refusals ever recorded (a counter)

    def due(self, op: Op, now: float) -> bool:
        """Whether to send this operation now: not refused before, changed, or its time."""
        entry = self._entries.get(op_key(op))
        return entry is None or entry.op != op or now >= entry.retry_at

    def waiting(self, op: Op) -> Refusal | None:
        """The entry of an operation held back by its backoff."""
        entry = self._entries.get(op_key(op))
        return entry if entry is not None and entry.op == op else None

    def refuse(self, op: Op, kind: RefusalKind, error: str, now: float) -> Refusal:
        """Record a refusal (or a hold); the next try waits twice as long as the last."""
        old = self._entries.get(op_key(op))
        attempts = old.attempts + 1 if old is not None and old.op == op else 1
        since = old.since if old is not None else now
        wait = min(self._cap, self._first * 2 ** (attempts - 1))
        # A held operation has no backoff of its own: it goes in the first pass in which
        # what it waits for is in place (that one's retry wakes the daemon).
        retry_at = now if kind is RefusalKind.HELD else now + wait
        entry = Refusal(op, kind, error, attempts, since, retry_at)
        self._entries[op_key(op)] = entry
        if kind is not RefusalKind.HELD:
            self.total += 1
        return entry

    def reopen(self, refused: Iterable[Refusal]) -> None:
        """Make these due again at once: the immediate re-try after a re-read (point 4),
        which is not a backoff round of its own."""
        for r in refused:
            key = op_key(r.op)
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = replace(entry, retry_at=r.since, attempts=entry.attempts - 1)

    def done(self, op: Op) -> bool:
        """The kernel took it; True if it had been refused before."""
        return self._entries.pop(op_key(op), None) is not None

    def keep_only(self, wanted: Iterable[Op]) -> None:
        """Forget refusals of operations the latest plan no longer has."""
        keys = {op_key(op) for op in wanted}
        for key in [k for k in self._entries if k not in keys]:
            del self._entries[key]

    def current(self) -> tuple[Refusal, ...]:
        """Every operation not in the kernel, oldest first."""
        return tuple(sorted(self._entries.values(), key=lambda r: (r.since, str(r.op))))

    def next_retry(self) -> float | None:
        """When the earliest refused operation may be sent again (held ones follow theirs)."""
        waiting = (r.retry_at for r in self._entries.values() if r.kind is not RefusalKind.HELD)
        return min(waiting, default=None)


@dataclass(frozen=True)
class Owners:
    """Which uplink each of ecmpd's objects belongs to (for the status' refused list)."""

    tables: Mapping[int, str]
    nexthops: Mapping[int, str]
    interfaces: Mapping[str, str]

    @classmethod
    def of(cls, config: Config) -> Owners:
        """The owners of this config's objects."""
        return cls(
            tables={u.table: u.name for u in config.uplinks},
            nexthops={
                nexthop_id(u.table, family): u.name
                for u in config.uplinks
                for family in (Family.INET, Family.INET6)
            },
            interfaces={u.interface: u.name for u in config.uplinks},
        )

    def of_object(self, obj: KernelObject) -> str | None:
        """The uplink an object belongs to; None for the balancer's and shared ones."""
        if isinstance(obj, Nexthop):
            return self.nexthops.get(obj.id)
        if isinstance(obj, Route):
            return self.tables.get(obj.table)
        if isinstance(obj, Rule):
            return self.tables.get(obj.table) if obj.table is not None else None
        if isinstance(obj, Sysctl):
            parts = obj.name.split(".")  # net.ipv4.conf.<interface>.rp_filter
            return self.interfaces.get(".".join(parts[3:-1])) if len(parts) > 4 else None
        if isinstance(obj, Queue):
            return self.interfaces.get(obj.ifname)
        return None  # groups, the NAT table

"""The daemon's way of executing a plan: every operation that can be applied, is.

One pass of the policy in ecmpd.refusals (which says why each rule): operations go
through `KernelWriter.execute` one at a time, in the plan's order; what the kernel
refuses is recorded in the RefusalBook and the rest goes on, never rolled back.
kernel/apply.py's `reconcile` is the all-or-nothing twin the CLI uses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ecmpd.kernel.apply import KernelWriter
from ecmpd.model import Nexthop, NexthopGroup, Route
from ecmpd.plan import Op, OpKind
from ecmpd.refusals import (
    Refusal,
    RefusalBook,
    RefusalKind,
    describe,
    foreign_use,
    held_by,
    missing_group,
    prune_group,
    refusal_kind,
)


@dataclass(frozen=True)
class PartialResult:
    """What one pass of `execute_partial` did."""

    done: tuple[Op, ...]  # executed (a group as sent: without members not in the kernel)
    refused: tuple[Refusal, ...]  # refused or held in this pass
    deferred: tuple[Refusal, ...]  # refused before and not yet due: not sent
    recovered: tuple[Op, ...]  # refused before, taken now
    pruned: bool  # a group was sent without some of its planned members
    kernel_refused: bool  # the kernel itself said no (not only held or known conflicts)

    @property
    def complete(self) -> bool:
        """Whether the kernel now holds the whole plan as planned."""
        return not self.refused and not self.deferred and not self.pruned


def execute_partial(
    writer: KernelWriter,
    ops: Sequence[Op],
    book: RefusalBook,
    present: Collection[int],
    now: float,
    foreign: Collection[int] = (),
    took: Callable[[Op], None] | None = None,
) -> PartialResult:
    """Execute every operation that can be applied; the daemon's policy (ecmpd.refusals).

    `present`: the nexthop and group ids the kernel holds before the pass (groups are
    sent without members that are not there, routes wait for their group);
    `foreign`: nexthop ids in ecmpd's block that another program holds (never taken
    over, never routed through); `now` is the book's clock; `took` hears each operation
    as the kernel holds it now (a group as sent), right after it is done.
    """
    nexthops = set(present)
    done: list[Op] = []
    refused: list[Refusal] = []
    deferred: list[Refusal] = []
    recovered: list[Op] = []
    failed: list[Op] = []
    pruned = kernel_refused = False
    with writer.batch(ops):
        for op in ops:
            if not book.due(op, now):
                waiting = book.waiting(op)
                if waiting is not None:
                    deferred.append(waiting)
                failed.append(op)
                continue
            taken = foreign_use(op, foreign)
            if taken is not None:
                refused.append(book.refuse(op, *taken, now))
                failed.append(op)
                continue
            if _gone_with_its_group(op, nexthops):
                book.done(op)
                done.append(op)
                if took is not None:
                    took(op)
                continue
            blocker = held_by(op, failed)
            waits = f"waits for {blocker}" if blocker else missing_group(op, nexthops)
            sent = prune_group(op, nexthops) if waits is None else None
            if sent is None:
                why = waits or "no member nexthop in the kernel"
                refused.append(book.refuse(op, RefusalKind.HELD, why, now))
                failed.append(op)
                continue
            try:
                writer.execute(sent)
            except Exception as exc:  # one refusal never stops the rest
                err = exc if isinstance(exc, OSError) else OSError(str(exc))
                refused.append(book.refuse(op, refusal_kind(err, op), describe(err, op), now))
                failed.append(op)
                kernel_refused = True
                continue
            pruned |= sent is not op
            if took is not None:
                took(sent)
            if book.done(op):
                recovered.append(op)
            done.append(sent)
            if isinstance(op.obj, Nexthop | NexthopGroup):
                if op.kind is OpKind.DELETE:
                    nexthops.discard(op.obj.id)
                else:
                    nexthops.add(op.obj.id)
    return PartialResult(
        tuple(done), tuple(refused), tuple(deferred), tuple(recovered), pruned, kernel_refused
    )


def _gone_with_its_group(op: Op, present: Collection[int]) -> bool:
    """A route to delete whose nexthop group is gone: the kernel deleted it with the group."""
    obj = op.obj
    return (
        op.kind is OpKind.DELETE
        and isinstance(obj, Route)
        and obj.nhid is not None
        and obj.nhid not in present
    )

"""The daemon's side of the kernel: one netlink thread, what it last saw, and reconciles
under the daemon's policy (ecmpd.refusals: apply what can, report and retry the rest).

The daemon decides what it wants (`desired`, a function of health read at the moment
of each pass); this module re-reads, plans, executes, re-reads and re-plans once when
the kernel refused something, logs each refusal, and wakes the daemon at the next
retry. Every netlink call runs on one thread (pyroute2's sync IPRoute runs an event
loop of its own, which cannot run on a thread that already runs ours; one thread also
keeps kernel operations in order).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ecmpd.config import Config
from ecmpd.export.iptext import op_command
from ecmpd.facts import KernelFacts
from ecmpd.kernel.apply import KernelWriter
from ecmpd.kernel.mptcpdiag import Subflow, dump_subflows
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.partial import PartialResult, execute_partial
from ecmpd.kernel.record import Record
from ecmpd.model import DesiredState
from ecmpd.plan import Op, after, diff
from ecmpd.refusals import Owners, Refusal, RefusalBook, RefusalKind

log = logging.getLogger("ecmpd.daemon")
T = TypeVar("T")


@dataclass
class Counters:
    """What the reconciles did, for status and metrics."""

    reconciles: int = 0  # reconciles that changed the kernel
    ops: int = 0
    failures: int = 0  # reconciles that met a refused operation
    resyncs: int = 0


def _no_signals() -> None:
    """The kernel thread takes none of the signals the daemon handles (Python runs the
    handlers on the main thread anyway): one delivered here would cut a netlink wait
    short (EINTR) in the middle of a transaction, libnftables' select() among them."""
    signal.pthread_sigmask(
        signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    )


class Reconciler:
    """The kernel as the daemon keeps it: observe, reconcile under the policy, retry.

    `observed` follows the kernel operation by operation, also while a reconcile runs
    (the kernel thread moves it on, one assignment of a frozen value each time): a
    status taken between a failover's group replace and the nftables run after it
    shows the group as the kernel holds it. `refused` is the refusal book as the last
    reconcile left it, never half a pass.
    """

    def __init__(self, run_dir: Path, on_retry: Callable[[], None]) -> None:
        self.run_dir = run_dir
        self.observed = DesiredState()
        self.facts = KernelFacts()
        self.book = RefusalBook()
        self.refused: tuple[Refusal, ...] = ()
        self.counters = Counters()
        self.lock = asyncio.Lock()  # one reconcile at a time, each from the latest health
        self._on_retry = on_retry
        self._owners = Owners({}, {}, {})
        self._ipr: Any = None
        self._writer: KernelWriter | None = None
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ecmpd-kernel", initializer=_no_signals
        )
        self._retry: asyncio.TimerHandle | None = None

    async def open(self, config: Config) -> None:
        """Open netlink for this config (on the kernel thread)."""
        self._ipr = await self.call(open_iproute)
        self._writer = KernelWriter.for_config(self._ipr, Record(self.run_dir), config)
        self._owners = Owners.of(config)

    def use_config(self, config: Config) -> None:
        """A reload: read what the new config needs from now on."""
        assert self._writer is not None
        self._writer.use_config(config)
        self._owners = Owners.of(config)

    def rename_marks(self, renames: Mapping[str, str]) -> None:
        """A reload renamed uplinks (new name -> old): each keeps its mark slot, so its
        connections keep their uplink (the run dir's record, read by the next observe)."""
        assert self._writer is not None
        record = self._writer.record
        if renames:
            old_to_new = {old: new for new, old in renames.items()}
            record.set_marks({old_to_new.get(n, n): slot for n, slot in record.marks.items()})

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._ipr is not None:
            await self.call(self._ipr.close)
        self._thread.shutdown()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a netlink call on the kernel thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def observe(self, check: Config | None = None) -> None:
        """Re-read the kernel; with `check`, also what that config needs checked."""
        assert self._writer is not None
        self.observed, self.facts = await self.call(self._writer.observe, check)

    async def observe_links(self) -> None:
        """After a carrier event: links and nexthops only (no walk of a full table)."""
        assert self._writer is not None
        self.observed, self.facts = await self.call(
            self._writer.observe_links, self.observed, self.facts
        )

    async def subflows(self) -> list[Subflow]:
        """This namespace's MPTCP subflows (sock_diag, read-only), on the kernel thread."""
        return await self.call(dump_subflows, self._ipr)

    async def reconcile_locked(self, desired: Callable[[], DesiredState], reason: str) -> int:
        """Make the kernel hold `desired()` as far as it takes it; the operations executed.

        Call with `lock` held. One pass; when the kernel refused something, a re-read and
        one more pass at once; what is still refused waits its backoff (RefusalBook) and
        a timer calls `on_retry` when the first is due.
        """
        started = time.perf_counter()
        want = desired()
        result = await self._execute(want)
        done = len(result.done)
        if result.refused:
            self.counters.failures += 1
        if result.kernel_refused:
            # The kernel may have moved under us (a link went, a DHCP client acted).
            first = [f"{op_command(r.op)}: {r.error}" for r in result.refused]
            log.info("reconcile.retry", extra={"reason": reason, "refused": first})
            self.book.reopen(result.refused)
            await self.observe()
            want = desired()
            result = await self._execute(want)
            done += len(result.done)
        if result.complete:
            self.observed = want
        else:
            await self.observe()  # an honest picture for the next diff
        self._report(result, reason)
        if done:
            self.counters.reconciles += 1
            self.counters.ops += done
            ms = round((time.perf_counter() - started) * 1000, 3)
            log.info("kernel.updated", extra={"reason": reason, "ops": done, "ms": ms})
        return done

    async def _execute(self, desired: DesiredState) -> PartialResult:
        assert self._writer is not None
        ops = diff(desired, self.observed)
        # Written ahead, as `apply` does: an uplink keeps its mark slot (and so its
        # connections) across reloads that change its table, and across restarts.
        self._writer.record.set_marks(dict(desired.mark_slots))
        self.book.keep_only(ops)
        present = {n.id for n in self.observed.nexthops} | {g.id for g in self.observed.groups}
        foreign = self.facts.foreign_nexthop_ids
        now = time.monotonic()
        return await self.call(
            execute_partial, self._writer, ops, self.book, present, now, foreign, self._took
        )

    def _took(self, op: Op) -> None:
        """The kernel took `op` (called on the kernel thread): the view moves on with it."""
        self.observed = after(self.observed, op)

    def _report(self, result: PartialResult, reason: str) -> None:
        """Log each refusal of this pass, publish the book and wake up for the next retry."""
        now = time.monotonic()
        self.refused = self.book.current()
        for r in result.refused:
            level = logging.INFO if r.kind is RefusalKind.HELD else logging.WARNING
            log.log(
                level,
                f"kernel.{r.kind.value}",
                extra={
                    "op": op_command(r.op),
                    "uplink": self._owners.of_object(r.op.obj),
                    "error": r.error,
                    "attempts": r.attempts,
                    "retry_in_s": round(r.retry_at - now, 3),
                    "reason": reason,
                },
            )
        for op in result.recovered:
            log.info("kernel.accepted", extra={"op": op_command(op), "note": "refused before"})
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        due = self.book.next_retry()
        if due is not None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(max(0.0, due - now), self._wake)

    def _wake(self) -> None:
        self._retry = None
        self._on_retry()

    @property
    def owners(self) -> Owners:
        """Whose each of the current config's objects is."""
        return self._owners

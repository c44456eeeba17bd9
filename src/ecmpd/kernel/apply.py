"""The only module that changes the kernel: executes a plan, rolls back on failure.

Two policies for two callers, side by side:
* `reconcile`, all or nothing: any refused operation rolls the kernel back to what it
  held before. For the CLI's `apply` and `down`, one-shots whose exit status says
  which (2: rolled back).
* `execute_partial` (kernel/partial.py), apply what can be applied: a refusal is
  recorded and the rest goes on, never rolled back. For `ecmpd run`, which must keep
  every other uplink right while one object is refused; the policy is spelt out in
  ecmpd.refusals.
"""

from __future__ import annotations

import errno
import logging
import weakref
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ecmpd.config import Config
from ecmpd.facts import KernelFacts
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel import nftables
from ecmpd.kernel.mptcpstate import MptcpWriter, observe_mptcp
from ecmpd.kernel.nftdoc import parse_table
from ecmpd.kernel.nftuses import mark_uses
from ecmpd.kernel.observe import observe, observe_links, read_main_defaults
from ecmpd.kernel.qdisc import delete_queue, observe_queues, write_queue
from ecmpd.kernel.record import Record
from ecmpd.kernel.routemsg import route_message
from ecmpd.kernel.rules import RTM_DELRULE, RTM_NEWRULE, rule_message
from ecmpd.kernel.sysctl import read_sysctl, write_sysctl
from ecmpd.kernel.transport import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NetlinkSocket,
    SocketsBeside,
)
from ecmpd.model import (
    DesiredState,
    MptcpEndpoint,
    MptcpLimits,
    Nexthop,
    NexthopGroup,
    NftTable,
    Queue,
    Route,
    Rule,
    Sysctl,
)
from ecmpd.plan import Op, OpKind, diff

log = logging.getLogger("ecmpd.kernel")

Message = tuple[int, int, bytes]


class ApplyError(Exception):
    """An operation failed; `rolled_back` says whether the previous state was restored."""

    def __init__(self, op: Op, cause: BaseException, rolled_back: bool) -> None:
        self.op, self.cause, self.rolled_back = op, cause, rolled_back
        state = "rolled back" if rolled_back else "ROLLBACK INCOMPLETE"
        super().__init__(f"{op}: {cause} ({state})")


@dataclass(frozen=True)
class ReadScope:
    """What an observe reads beyond ecmpd's own objects (each costs a kernel walk)."""

    nft: bool = False  # ecmpd's nftables table (every config has one: connection marks)
    defaults: bool = True  # the main table's default routes (`gateway: dhcp`, `gateway6: ra`)
    mptcp: bool = False  # MPTCP endpoints and limits (`mptcp: true`)
    bgp: bool = False  # the main table's BGP default routes (`gateway: bgp`)

    @classmethod
    def of(cls, config: Config) -> ReadScope:
        """What this config needs read."""
        return cls(
            nft=True,
            defaults=config.follows_defaults(),
            mptcp=bool(config.mptcp_uplinks()),
            bgp=config.follows_bgp(),
        )

    def __or__(self, other: ReadScope) -> ReadScope:
        return ReadScope(
            nft=self.nft or other.nft,
            defaults=self.defaults or other.defaults,
            mptcp=self.mptcp or other.mptcp,
            bgp=self.bgp or other.bgp,
        )


@dataclass
class ApplyResult:
    """What an apply did: the operations executed (empty when already in step)."""

    ops: list[Op] = field(default_factory=list)


class KernelWriter:
    """Executes operations over netlink and keeps the sysctl record up to date.

    `ipr` says which network namespace: an IPRoute (the writer opens its own raw socket
    where that IPRoute's socket for the calling thread is, and closes it in close() or
    when collected) or a `transport.NetlinkSocket` (used as is, never closed here).
    Each operation is one request and one ACK, so a failure names its operation.
    Without a config (`down`, tests) it reads main's default routes and, once recorded,
    the NAT table: `for_config` reads only what a config needs.
    """

    def __init__(self, ipr: Any, record: Record, scope: ReadScope = ReadScope()) -> None:
        self.ipr = ipr
        self.record = record
        self.scope = scope
        self.ifindex: dict[str, int] = {}
        self._sockets = SocketsBeside()
        self._finalizer = weakref.finalize(self, self._sockets.close)
        self._batch = False
        self._unsaved = False
        # The nftables table the kernel holds as this writer last read or wrote it (None:
        # not known): a change from it is an update of what differs (kernel/nftables).
        self._nft_held: NftTable | None = None

    @classmethod
    def for_config(cls, ipr: Any, record: Record, config: Config) -> KernelWriter:
        """A writer that reads what `config` needs (see ReadScope)."""
        return cls(ipr, record, ReadScope.of(config))

    def use_config(self, config: Config) -> None:
        """From now on read what `config` needs (the daemon's reload)."""
        self.scope = ReadScope.of(config)

    @property
    def nl(self) -> NetlinkSocket:
        """The raw socket for the calling thread: in the namespace `ipr` uses there."""
        if isinstance(self.ipr, NetlinkSocket):
            return self.ipr
        # Asked on every use, never at construction: pyroute2 makes a thread's socket
        # (in that thread's namespace) on first use, and the daemon builds the writer
        # on its event-loop thread but uses it from its kernel thread.
        return self._sockets.get(self.ipr.fileno())

    def close(self) -> None:
        """Close the raw sockets this writer opened (the caller closes `ipr`)."""
        self._finalizer()

    def observe(self, check: Config | None = None) -> tuple[DesiredState, KernelFacts]:
        """The owned state and facts, refreshing the interface index map.

        With `check`, also what that config needs for check_against_kernel: foreign
        routes in its tables, and what its scope reads (a reload's new config).
        """
        tables: Collection[int] = check.tables() if check is not None else ()
        scope = self.scope | ReadScope.of(check) if check is not None else self.scope
        observed, facts = observe(
            self.nl, self.record.sysctls, tables, defaults=scope.defaults, bgp=scope.bgp
        )
        self.ifindex = {name: f.index for name, f in facts.interfaces.items()}
        # Always read: a reload that drops every `queue` must still find ecmpd's to delete.
        names = {index: name for name, index in self.ifindex.items()}
        queues, foreign_qdiscs = observe_queues(self.nl, names)
        observed = replace(observed, queues=queues)
        facts = replace(facts, foreign_qdiscs=foreign_qdiscs)
        if scope.nft or self.record.nat:
            observed = replace(observed, nft=observe_nft())
            self._nft_held = next((t for t in observed.nft if t != MODIFIED_TABLE), None)
        if scope.mptcp or self.record.mptcp:
            endpoints, limits, foreign = observe_mptcp(self.nl, self.record, facts)
            observed = replace(observed, endpoints=endpoints, mptcp_limits=limits)
            facts = replace(facts, foreign_mptcp_endpoints=foreign)
        uses = facts.foreign_mark_uses
        if check is not None:  # the checks also want nftables' uses of mark bits
            uses += tuple(mark_uses(nftables.read_ruleset()))
        if check is not None and check.announce is not None:  # and what may shadow it
            facts = replace(facts, main_defaults=read_main_defaults(self.nl, self.ifindex))
        facts = replace(
            facts, foreign_mark_uses=uses, mark_slots=tuple(sorted(self.record.marks.items()))
        )
        return observed, facts

    def observe_links(
        self, before: DesiredState, facts: KernelFacts
    ) -> tuple[DesiredState, KernelFacts]:
        """After a carrier event: links and nexthops re-read, the rest kept (see observe_links)."""
        observed, fresh = observe_links(self.nl, before, facts)
        self.ifindex = {name: f.index for name, f in fresh.interfaces.items()}
        return observed, fresh

    @contextmanager
    def batch(self, ops: Sequence[Op]) -> Iterator[None]:
        """Around executing `ops`: one record save before the first change, one at the end.

        Write-ahead still holds: the originals of every sysctl the ops set are saved
        before any of them is written. Restores (deletes) drop their entries and save at
        the end; a crash in between leaves entries whose value is already back in place.
        """
        originals: dict[str, str] = {}
        for op in ops:
            obj = op.obj
            if (
                isinstance(obj, Sysctl)
                and op.kind is not OpKind.DELETE
                and obj.name not in self.record.sysctls
            ):
                current = read_sysctl(obj.name)
                # A missing sysctl fails at its own operation, for rollback to name it.
                if current is not None:
                    originals.setdefault(obj.name, current)
        self.record.remember(originals)
        outer, self._batch = self._batch, True
        try:
            yield
        finally:
            self._batch = outer
            if not outer and self._unsaved:
                self._unsaved = False
                self.record.save()

    def execute(self, op: Op) -> None:
        """One operation; raises whatever the kernel refuses (OSError)."""
        try:
            if isinstance(op.obj, Sysctl):
                self._sysctl(op.kind, op.obj)
            elif isinstance(op.obj, NftTable):
                self._nft(op.kind, op.obj)
            elif isinstance(op.obj, Queue):
                if op.kind is OpKind.DELETE:
                    delete_queue(self.nl, self._index(op.obj.ifname))
                else:
                    write_queue(self.nl, self._index(op.obj.ifname), op.obj)
            elif isinstance(op.obj, MptcpEndpoint | MptcpLimits):
                MptcpWriter(self.nl, self.record, self._index).execute(op.kind, op.obj)
            else:
                self.nl.request(*self._message(op))
        except OSError as exc:
            # A delete means "make sure it is gone": the kernel may have beaten us to
            # it (it deletes the nexthops of a link that lost carrier, and everything
            # on a device that was removed).
            if op.kind is OpKind.DELETE and exc.errno in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                return
            raise

    def _message(self, op: Op) -> Message:
        obj, kind = op.obj, op.kind
        if isinstance(obj, Rule):
            if kind is OpKind.DELETE:
                return RTM_DELRULE, NLM_F_REQUEST | NLM_F_ACK, rule_message(obj)
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
            return RTM_NEWRULE, flags, rule_message(obj)
        if isinstance(obj, Nexthop | NexthopGroup) and kind is OpKind.DELETE:
            return nl.delete_message(obj.id)
        if isinstance(obj, Nexthop):
            index = self._index(obj.ifname)
            return nl.nexthop_message(obj, index, replace=kind is OpKind.REPLACE)
        if isinstance(obj, NexthopGroup):
            return nl.group_message(obj, replace=kind is OpKind.REPLACE)
        if isinstance(obj, Route):
            cmd: Literal["add", "replace", "del"] = (
                "add" if kind is OpKind.ADD else "replace" if kind is OpKind.REPLACE else "del"
            )
            ifindex = self._index(obj.ifname) if obj.ifname is not None else None
            return route_message(cmd, obj, ifindex)
        raise TypeError(f"no netlink operation for {type(obj).__name__}")

    def _index(self, ifname: str) -> int:
        """The interface's index as last observed; a refusal like the kernel's if it is gone."""
        index = self.ifindex.get(ifname)
        if index is None:
            raise OSError(errno.ENODEV, f"no interface {ifname!r}")
        return index

    def _nft(self, kind: OpKind, table: NftTable) -> None:
        """Replace (atomically) or delete ecmpd's nftables table."""
        held, self._nft_held = self._nft_held, None  # not known until nft has answered
        if kind is OpKind.DELETE:
            nftables.delete_table()
            self.record.nat = False
            self.record.save()
            return
        # Recorded first: a crash after `nft` ran must still let `down` find the table.
        if not self.record.nat:
            self.record.nat = True
            self.record.save()
        nftables.apply_table(table, held)
        self._nft_held = table

    def _sysctl(self, kind: OpKind, s: Sysctl) -> None:
        if kind is OpKind.DELETE:
            original = self.record.sysctls.get(s.name)
            # An interface's sysctl that went with its interface has nothing to restore
            # (a new interface of that name starts from the kernel's defaults).
            if original is not None and read_sysctl(s.name) is not None:
                write_sysctl(s.name, original)
            self.record.sysctls.pop(s.name, None)
            if self._batch:
                self._unsaved = True
            else:
                self.record.save()
            return
        if s.name not in self.record.sysctls:
            current = read_sysctl(s.name)
            if current is None:
                raise OSError(f"sysctl {s.name} does not exist in this kernel")
            # Written down before the change, so a crash cannot lose the original.
            self.record.remember({s.name: current})
        write_sysctl(s.name, s.value)


# A table someone added to reads as this marker, which never equals a desired table.
MODIFIED_TABLE = NftTable(masquerade=("<modified outside ecmpd>",))


def observe_nft() -> frozenset[NftTable]:
    """ecmpd's nftables table (a table changed by hand reads as changed)."""
    doc = nftables.read_table()
    if doc is None:
        return frozenset()
    table = parse_table(doc)
    return frozenset({MODIFIED_TABLE if table is None else table})


def reconcile(
    writer: KernelWriter, desired: DesiredState, before: DesiredState | None = None
) -> ApplyResult:
    """Make the kernel hold `desired`; on any failure restore what was there before.

    `before` is what `writer.observe()` returned just now, if the caller has it (saves
    observing again); without it the kernel is observed first. A second call with the
    same desired state executes nothing.
    """
    if before is None:
        before, _ = writer.observe()
    ops = diff(desired, before)
    done: list[Op] = []
    # Written ahead: a crash after the kernel took the marks must not lose their slots.
    writer.record.set_marks(dict(desired.mark_slots))
    with writer.batch(ops):
        for op in ops:
            try:
                writer.execute(op)
            except Exception as exc:
                log.error("apply.failed", extra={"op": str(op), "error": str(exc)})
                raise ApplyError(op, exc, rolled_back=rollback(writer, before)) from exc
            done.append(op)
    return ApplyResult(ops=done)


def rollback(writer: KernelWriter, target: DesiredState) -> bool:
    """Return the kernel to `target` (the state before a failed apply); True on success."""
    now, _ = writer.observe()
    ok = True
    for op in diff(target, now):
        try:
            writer.execute(op)
        except Exception as exc:  # keep going: restore as much as possible
            log.error("rollback.failed", extra={"op": str(op), "error": str(exc)})
            ok = False
    return ok and writer.observe()[0] == target


def execute_all(writer: KernelWriter, ops: Sequence[Op]) -> None:
    """Execute operations in order, stopping at the first refusal, with no rollback.

    For measurements of a known-good plan (bench/table_bench.py).
    """
    with writer.batch(ops):
        for op in ops:
            writer.execute(op)

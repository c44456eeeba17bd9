"""The only module that changes the kernel: executes a plan, rolls back on failure."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELRULE, RTM_NEWRULE

from ecmpd.facts import KernelFacts
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.observe import observe
from ecmpd.kernel.record import Record
from ecmpd.kernel.routemsg import nl_request
from ecmpd.kernel.rules import rule_message
from ecmpd.kernel.sysctl import read_sysctl, write_sysctl
from ecmpd.model import DesiredState, Nexthop, NexthopGroup, Route, Rule, Sysctl
from ecmpd.plan import Op, OpKind, diff

log = logging.getLogger("ecmpd.kernel")

# Test hook: fail the operation after N successful ones, to prove rollback against
# the real kernel. Never set in production.
FAULT_ENV = "ECMPD_FAULT_AFTER_OPS"


class ApplyError(Exception):
    """An operation failed; `rolled_back` says whether the previous state was restored."""

    def __init__(self, op: Op, cause: BaseException, rolled_back: bool) -> None:
        self.op, self.cause, self.rolled_back = op, cause, rolled_back
        state = "rolled back" if rolled_back else "ROLLBACK INCOMPLETE"
        super().__init__(f"{op}: {cause} ({state})")


@dataclass
class ApplyResult:
    """What an apply did: the operations executed (empty when already in step)."""

    ops: list[Op] = field(default_factory=list)


class KernelWriter:
    """Executes operations over netlink and keeps the sysctl record up to date."""

    def __init__(self, ipr: Any, record: Record) -> None:
        self.ipr = ipr
        self.record = record
        self.ifindex: dict[str, int] = {}
        fault = os.environ.get(FAULT_ENV)
        self._fault_after = int(fault) if fault else None

    def observe(self) -> tuple[DesiredState, KernelFacts]:
        """The owned state and facts, refreshing the interface index map."""
        observed, facts = observe(self.ipr, self.record.sysctls)
        self.ifindex = {name: f.index for name, f in facts.interfaces.items()}
        return observed, facts

    def execute(self, op: Op) -> None:
        """One operation; raises whatever the kernel refuses."""
        if self._fault_after is not None:
            if self._fault_after <= 0:
                raise OSError(f"injected fault ({FAULT_ENV})")
            self._fault_after -= 1
        try:
            self._execute(op)
        except OSError as exc:
            # A delete means "make sure it is gone": the kernel may have beaten us to
            # it (it deletes the nexthops of a link that lost carrier).
            if op.kind is OpKind.DELETE and exc.errno in (errno.ENOENT, errno.ESRCH):
                return
            raise

    def _execute(self, op: Op) -> None:
        obj = op.obj
        if isinstance(obj, Sysctl):
            self._sysctl(op.kind, obj)
        elif isinstance(obj, Rule):
            self._rule(op.kind, obj)
        elif isinstance(obj, Nexthop):
            self._nexthop(op.kind, obj)
        elif isinstance(obj, NexthopGroup):
            self._group(op.kind, obj)
        else:
            self._route(op.kind, obj)

    def _sysctl(self, kind: OpKind, s: Sysctl) -> None:
        if kind is OpKind.DELETE:
            original = self.record.sysctls.get(s.name)
            if original is not None:
                write_sysctl(s.name, original)
            self.record.sysctls.pop(s.name, None)
            self.record.save()
            return
        if s.name not in self.record.sysctls:
            current = read_sysctl(s.name)
            if current is None:
                raise OSError(f"sysctl {s.name} does not exist in this kernel")
            # Written down before the change, so a crash cannot lose the original.
            self.record.sysctls[s.name] = current
            self.record.save()
        write_sysctl(s.name, s.value)

    def _rule(self, kind: OpKind, rule: Rule) -> None:
        flags = NLM_F_REQUEST | NLM_F_ACK
        if kind is OpKind.DELETE:
            nl_request(self.ipr, rule_message(rule), RTM_DELRULE, flags)
        else:
            nl_request(self.ipr, rule_message(rule), RTM_NEWRULE, flags | NLM_F_CREATE | NLM_F_EXCL)

    def _nexthop(self, kind: OpKind, nh: Nexthop) -> None:
        if kind is OpKind.DELETE:
            nl.delete_nexthop(self.ipr, nh.id)
        else:
            nl.set_nexthop(self.ipr, nh, self.ifindex[nh.ifname], replace=kind is OpKind.REPLACE)

    def _group(self, kind: OpKind, group: NexthopGroup) -> None:
        if kind is OpKind.DELETE:
            nl.delete_nexthop(self.ipr, group.id)
        else:
            nl.set_group(self.ipr, group, replace=kind is OpKind.REPLACE)

    def _route(self, kind: OpKind, route: Route) -> None:
        cmd: Literal["add", "replace", "del"] = (
            "add" if kind is OpKind.ADD else "replace" if kind is OpKind.REPLACE else "del"
        )
        ifindex = self.ifindex[route.ifname] if route.ifname is not None else None
        nl.set_route(self.ipr, cmd, route, ifindex)


def reconcile(writer: KernelWriter, desired: DesiredState) -> ApplyResult:
    """Make the kernel hold `desired`; on any failure restore what was there before.

    A second call with the same desired state executes nothing.
    """
    before, _ = writer.observe()
    ops = diff(desired, before)
    done: list[Op] = []
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
    writer._fault_after = None
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
    """Execute operations in order with no rollback (for `down`, which only removes)."""
    for op in ops:
        writer.execute(op)

"""ecmpd's MPTCP objects in the kernel: read them back, and change them (for KernelWriter).

Ownership: the kernel marks no endpoint with an owner, and an id block alone is not
enough (an endpoint added without an id gets the next id after the highest in use, so
a foreign one lands right after ecmpd's). ecmpd records (address, id) of each endpoint
in the run dir *before* creating it, and reads as its own only an endpoint matching a
record entry; every other endpoint is foreign: reported, never changed. The `subflows`
limit's value before ecmpd's first change is recorded the same way and restored when
the limit is deleted (`down`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from ecmpd.facts import KernelFacts
from ecmpd.kernel import mptcp
from ecmpd.kernel.record import Record
from ecmpd.model import MPTCP_ID_BASE, IPAddress, MptcpEndpoint, MptcpLimits
from ecmpd.plan import OpKind


def observe_mptcp(
    handle: Any, record: Record, facts: KernelFacts
) -> tuple[frozenset[MptcpEndpoint], frozenset[MptcpLimits], dict[IPAddress, int]]:
    """ecmpd's endpoints, its limit (once it set one), and foreign endpoints by address."""
    names = {f.index: name for name, f in facts.interfaces.items()}
    owned: set[MptcpEndpoint] = set()
    foreign: dict[IPAddress, int] = {}
    for ep in mptcp.dump_endpoints(handle):
        if record.endpoints.get(str(ep.address)) != ep.id:
            foreign[ep.address] = ep.id
            continue
        # Flags ecmpd never sets (signal, fullmesh) or a port make it read as changed.
        odd = ep.flags & ~(mptcp.FLAG_SUBFLOW | mptcp.FLAG_BACKUP) or ep.port
        ifname = names.get(ep.ifindex, f"if{ep.ifindex}") if not odd else "<modified>"
        owned.add(MptcpEndpoint(ep.address, ifname, ep.backup, id=ep.id))
    limits = set()
    if record.mptcp_subflows is not None:
        limits.add(MptcpLimits(mptcp.get_limits(handle).subflows))
    return frozenset(owned), frozenset(limits), foreign


class MptcpWriter:
    """Executes one MPTCP operation, keeping the record ahead of the kernel."""

    def __init__(self, handle: Any, record: Record, ifindex: Callable[[str], int]) -> None:
        self.handle = handle
        self.record = record
        self.ifindex = ifindex

    def execute(self, kind: OpKind, obj: MptcpEndpoint | MptcpLimits) -> None:
        """Add, change or delete an endpoint; set or restore the limit."""
        if isinstance(obj, MptcpLimits):
            self._limits(kind, obj)
        elif kind is OpKind.ADD:
            self._add(obj)
        elif kind is OpKind.REPLACE:
            mptcp.set_backup(self.handle, obj.address, obj.backup)
        else:
            self._delete(obj)

    def _add(self, ep: MptcpEndpoint) -> None:
        index = self.ifindex(ep.ifname)
        used = {e.id for e in mptcp.dump_endpoints(self.handle)}
        ep_id = mptcp.free_id(used, MPTCP_ID_BASE)
        # Recorded first: a crash after the add must still let `down` find it.
        self.record.endpoints[str(ep.address)] = ep_id
        self.record.save()
        mptcp.add_endpoint(self.handle, ep_id, ep.address, index, backup=ep.backup)

    def _delete(self, ep: MptcpEndpoint) -> None:
        try:
            mptcp.delete_endpoint(self.handle, ep.id)
        except OSError as exc:
            # The kernel says EINVAL for an id it does not have: gone already is fine.
            gone = all(e.id != ep.id for e in mptcp.dump_endpoints(self.handle))
            if exc.errno != errno.EINVAL or not gone:
                raise
        self.record.endpoints.pop(str(ep.address), None)
        self.record.save()

    def _limits(self, kind: OpKind, limits: MptcpLimits) -> None:
        if kind is OpKind.DELETE:
            if self.record.mptcp_subflows is not None:
                mptcp.set_limits(self.handle, self.record.mptcp_subflows)
            self.record.mptcp_subflows = None
            self.record.save()
            return
        if self.record.mptcp_subflows is None:
            self.record.mptcp_subflows = mptcp.get_limits(self.handle).subflows
            self.record.save()
        mptcp.set_limits(self.handle, limits.subflows)

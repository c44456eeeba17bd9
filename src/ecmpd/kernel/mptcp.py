"""MPTCP path-manager endpoints and limits over generic netlink (`mptcp_pm`).

pyroute2 0.9.7 has an MPTCP class, but it cannot change an endpoint's flags (no
SET_FLAGS: no MP_PRIO when an uplink turns backup), decodes the interface index as
hex text and runs each request through its own asyncio loop; ecmpd packs these few
messages itself, as it does for nexthops, and sends them on a NETLINK_GENERIC socket
opened in the namespace of the caller's handle (`transport.netlink_for`).

Endpoints and limits are per network namespace. The kernel identifies an endpoint by
its id (1..255) or its address; which ones are ecmpd's is decided by the caller
(`observe`), not here.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ecmpd.kernel.transport import (
    NETLINK_GENERIC,
    NLM_F_REQUEST,
    U16,
    NetlinkError,
    NetlinkSocket,
    attr,
    attr_nested,
    attr_str,
    attr_u8,
    attr_u16,
    attr_u32,
    get_u32,
    netlink_for,
    parse_attrs,
)
from ecmpd.model import Family, IPAddress

GENL_ID_CTRL = 16
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
MPTCP_PM_NAME = "mptcp_pm"
MPTCP_PM_VER = 1
CMD_ADD_ADDR, CMD_DEL_ADDR, CMD_GET_ADDR = 1, 2, 3
CMD_SET_LIMITS, CMD_GET_LIMITS, CMD_SET_FLAGS = 5, 6, 7
ATTR_ADDR, ATTR_RCV_ADD_ADDRS, ATTR_SUBFLOWS = 1, 2, 3
ADDR_FAMILY, ADDR_ID, ADDR_ADDR4, ADDR_ADDR6, ADDR_PORT, ADDR_FLAGS, ADDR_IF_IDX = range(1, 8)
FLAG_SIGNAL, FLAG_SUBFLOW, FLAG_BACKUP, FLAG_FULLMESH = 0x1, 0x2, 0x4, 0x8
# The kernel's own bounds: endpoint ids are u8 (0 = "pick one"), limits at most 8.
MAX_ENDPOINT_ID = 255
MAX_LIMIT = 8

_GENL = struct.Struct("=BBH")  # struct genlmsghdr {cmd, version, reserved}
_S32 = struct.Struct("=i")


class MptcpUnavailable(OSError):
    """This kernel (or namespace) has no MPTCP path manager (CONFIG_MPTCP off)."""


@dataclass(frozen=True)
class KernelEndpoint:
    """One MPTCP endpoint as the kernel reports it."""

    id: int
    address: IPAddress
    ifindex: int  # 0: not bound to a device
    flags: int  # FLAG_*
    port: int = 0

    @property
    def family(self) -> Family:
        return Family.INET if isinstance(self.address, IPv4Address) else Family.INET6

    @property
    def backup(self) -> bool:
        return bool(self.flags & FLAG_BACKUP)


@dataclass(frozen=True)
class KernelLimits:
    """The path manager's per-namespace limits (per connection)."""

    subflows: int
    add_addr_accepted: int


_family_ids: dict[str, int] = {}
_family_lock = threading.Lock()


def _genl(handle: Any) -> tuple[NetlinkSocket, int]:
    """The generic-netlink socket beside `handle` and the mptcp_pm family id.

    Generic-netlink family ids are assigned once, kernel-wide (not per namespace), so
    the id is resolved on the first use and kept.
    """
    sock = netlink_for(handle, NETLINK_GENERIC)
    with _family_lock:
        fam = _family_ids.get(MPTCP_PM_NAME)
        if fam is None:
            body = _GENL.pack(CTRL_CMD_GETFAMILY, 1, 0) + attr_str(
                CTRL_ATTR_FAMILY_NAME, MPTCP_PM_NAME
            )
            try:
                answers = sock.request(GENL_ID_CTRL, NLM_F_REQUEST, body)
            except NetlinkError as e:
                if e.errno == errno.ENOENT:
                    raise MptcpUnavailable(e.errno, "the kernel has no MPTCP path manager") from e
                raise
            raw = parse_attrs(answers[0][1], _GENL.size)[CTRL_ATTR_FAMILY_ID]
            fam = _family_ids[MPTCP_PM_NAME] = int(U16.unpack_from(raw)[0])
    return sock, fam


def _header(cmd: int) -> bytes:
    return _GENL.pack(cmd, MPTCP_PM_VER, 0)


def _addr(
    address: IPAddress | None,
    *,
    ep_id: int = 0,
    ifindex: int = 0,
    flags: int | None = None,
) -> bytes:
    """MPTCP_PM_ATTR_ADDR: the endpoint by address (and/or id), with flags and device."""
    parts = []
    if address is not None:
        v4 = isinstance(address, IPv4Address)
        parts.append(attr_u16(ADDR_FAMILY, socket.AF_INET if v4 else socket.AF_INET6))
        parts.append(attr(ADDR_ADDR4 if v4 else ADDR_ADDR6, address.packed))
    if ep_id:
        parts.append(attr_u8(ADDR_ID, ep_id))
    if flags is not None:
        parts.append(attr_u32(ADDR_FLAGS, flags))
    if ifindex:
        parts.append(attr(ADDR_IF_IDX, _S32.pack(ifindex)))
    return attr_nested(ATTR_ADDR, b"".join(parts))


def _check_id(ep_id: int) -> None:
    if not 0 < ep_id <= MAX_ENDPOINT_ID:
        raise ValueError(f"MPTCP endpoint id {ep_id} is not in 1..{MAX_ENDPOINT_ID}")


def parse_endpoint(payload: bytes) -> KernelEndpoint | None:
    """A KernelEndpoint from a GET_ADDR answer (None when it carries no address)."""
    raw = parse_attrs(payload, _GENL.size).get(ATTR_ADDR)
    if raw is None:
        return None
    a = parse_attrs(raw)
    address: IPAddress
    if ADDR_ADDR4 in a:
        address = IPv4Address(a[ADDR_ADDR4][:4])
    elif ADDR_ADDR6 in a:
        address = IPv6Address(a[ADDR_ADDR6][:16])
    else:
        return None
    port = a.get(ADDR_PORT)
    ifindex = a.get(ADDR_IF_IDX)
    return KernelEndpoint(
        id=a[ADDR_ID][0] if ADDR_ID in a else 0,
        address=address,
        ifindex=_S32.unpack_from(ifindex)[0] if ifindex else 0,
        flags=get_u32(a, ADDR_FLAGS) or 0,
        port=int(U16.unpack_from(port)[0]) if port else 0,
    )


def dump_endpoints(handle: Any) -> list[KernelEndpoint]:
    """Every endpoint in the namespace, whoever created it, by id."""
    sock, fam = _genl(handle)
    answers = sock.dump(fam, _header(CMD_GET_ADDR))
    found = (parse_endpoint(payload) for kind, payload in answers if kind == fam)
    return sorted((e for e in found if e is not None), key=lambda e: e.id)


def add_endpoint(
    handle: Any, ep_id: int, address: IPAddress, ifindex: int, *, backup: bool = False
) -> None:
    """Add a `subflow` endpoint with this id, bound to the device `ifindex`.

    The kernel refuses (EEXIST) a second endpoint with the same address or id. Adding a
    subflow endpoint makes the path manager open a subflow from it on every existing
    connection that has room under the `subflows` limit.
    """
    _check_id(ep_id)
    flags = FLAG_SUBFLOW | (FLAG_BACKUP if backup else 0)
    body = _header(CMD_ADD_ADDR) + _addr(address, ep_id=ep_id, ifindex=ifindex, flags=flags)
    sock, fam = _genl(handle)
    sock.request(fam, NLM_F_REQUEST, body)


def delete_endpoint(handle: Any, ep_id: int) -> None:
    """Delete an endpoint by id (its subflows are closed); NetlinkError(ENOENT/EINVAL) if none."""
    _check_id(ep_id)
    sock, fam = _genl(handle)
    sock.request(fam, NLM_F_REQUEST, _header(CMD_DEL_ADDR) + _addr(None, ep_id=ep_id))


def set_backup(handle: Any, address: IPAddress, backup: bool) -> None:
    """Mark an endpoint backup or not; live connections hear it as MP_PRIO.

    By address: the kernel changes only the backup (and fullmesh) flag in place.
    """
    flags = FLAG_SUBFLOW | (FLAG_BACKUP if backup else 0)
    sock, fam = _genl(handle)
    sock.request(fam, NLM_F_REQUEST, _header(CMD_SET_FLAGS) + _addr(address, flags=flags))


def get_limits(handle: Any) -> KernelLimits:
    """The namespace's path-manager limits."""
    sock, fam = _genl(handle)
    answers = sock.request(fam, NLM_F_REQUEST, _header(CMD_GET_LIMITS))
    attrs = parse_attrs(answers[0][1], _GENL.size)
    return KernelLimits(
        subflows=get_u32(attrs, ATTR_SUBFLOWS) or 0,
        add_addr_accepted=get_u32(attrs, ATTR_RCV_ADD_ADDRS) or 0,
    )


def set_limits(handle: Any, subflows: int, add_addr_accepted: int | None = None) -> None:
    """Set the `subflows` limit (and `add_addr_accepted` when given; kept otherwise)."""
    for value in (subflows, add_addr_accepted):
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise ValueError(f"MPTCP limit {value} is not in 0..{MAX_LIMIT}")
    body = _header(CMD_SET_LIMITS) + attr_u32(ATTR_SUBFLOWS, subflows)
    if add_addr_accepted is not None:
        body += attr_u32(ATTR_RCV_ADD_ADDRS, add_addr_accepted)
    sock, fam = _genl(handle)
    sock.request(fam, NLM_F_REQUEST, body)


def free_id(used: set[int], first: int, last: int = MAX_ENDPOINT_ID) -> int:
    """The lowest id in first..last not in `used`; ValueError when the block is full."""
    for ep_id in range(first, last + 1):
        if ep_id not in used:
            return ep_id
    raise ValueError(f"no free MPTCP endpoint id in {first}..{last}")

"""Read-only: the MPTCP subflows running in a namespace, from sock_diag (inet_diag).

Every subflow is a TCP socket whose ULP is "mptcp"; the kernel reports its connection
token, local endpoint id and backup flag (INET_DIAG_ULP_INFO) and its tcp_info. Which
uplink a subflow uses is told by its local address. Not `ss` output: the same
messages `ss -tiM` decodes, read directly.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ecmpd.kernel.transport import get_u32, netlink_for, parse_attrs
from ecmpd.model import Family, IPAddress

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO, INET_DIAG_ULP_INFO = 2, 19
INET_ULP_INFO_NAME, INET_ULP_INFO_MPTCP = 1, 3
SUBFLOW_ATTR_TOKEN_LOC, SUBFLOW_ATTR_FLAGS, SUBFLOW_ATTR_ID_LOC = 2, 8, 10
SUBFLOW_FLAG_BKUP_LOC = 0x20
TCP_ESTABLISHED, TCP_LISTEN = 1, 10
# Every state but LISTEN (and TIME_WAIT, which has no ULP any more): bits by state.
STATES = 0xFFF & ~(1 << TCP_LISTEN) & ~(1 << 6)

# struct inet_diag_req_v2 {family, protocol, ext, pad, states, inet_diag_sockid}
_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg {family, state, timer, retrans, sockid{sport, dport, src, dst,
# if, cookie}, expires, rqueue, wqueue, uid, inode}
_MSG = struct.Struct("=BBBB2H16s16sI8xIIIII")
# struct tcp_info: tcpi_rtt (us) at 68, tcpi_bytes_acked at 120, tcpi_bytes_received at 128.
_RTT, _BYTES = struct.Struct("=I"), struct.Struct("=QQ")


@dataclass(frozen=True)
class Subflow:
    """One MPTCP subflow (a TCP socket under an MPTCP connection)."""

    token: int  # the connection's local token: subflows with one token are one connection
    local: IPAddress
    remote: IPAddress
    local_port: int
    remote_port: int
    local_id: int  # the endpoint id it was opened from (0: the initial subflow)
    backup: bool
    established: bool
    bytes_acked: int  # sent and acknowledged
    bytes_received: int
    rtt_us: int

    @property
    def family(self) -> Family:
        """The family of its local address (an MPTCP connection may mix families)."""
        return Family.INET if self.local.version == 4 else Family.INET6


def _addr(family: int, raw: bytes) -> IPAddress:
    return IPv4Address(raw[:4]) if family == socket.AF_INET else IPv6Address(raw)


def _subflow(payload: bytes) -> Subflow | None:
    family, state, _, _, sport, dport, src, dst, *_ = _MSG.unpack_from(payload)
    attrs = parse_attrs(payload, _MSG.size)
    ulp = attrs.get(INET_DIAG_ULP_INFO)
    if ulp is None:
        return None
    ulp_attrs = parse_attrs(ulp)
    name = ulp_attrs.get(INET_ULP_INFO_NAME, b"").split(b"\0", 1)[0]
    raw = ulp_attrs.get(INET_ULP_INFO_MPTCP)
    if name != b"mptcp" or raw is None:
        return None
    mp = parse_attrs(raw)
    info = attrs.get(INET_DIAG_INFO, b"")
    acked, received = _BYTES.unpack_from(info, 120) if len(info) >= 136 else (0, 0)
    id_loc = mp.get(SUBFLOW_ATTR_ID_LOC)
    return Subflow(
        token=get_u32(mp, SUBFLOW_ATTR_TOKEN_LOC) or 0,
        local=_addr(family, src),
        remote=_addr(family, dst),
        local_port=socket.ntohs(sport),
        remote_port=socket.ntohs(dport),
        local_id=id_loc[0] if id_loc else 0,
        backup=bool((get_u32(mp, SUBFLOW_ATTR_FLAGS) or 0) & SUBFLOW_FLAG_BKUP_LOC),
        established=state == TCP_ESTABLISHED,
        bytes_acked=acked,
        bytes_received=received,
        rtt_us=_RTT.unpack_from(info, 68)[0] if len(info) >= 72 else 0,
    )


def dump_subflows(handle: Any) -> list[Subflow]:
    """Every MPTCP subflow in the namespace of `handle` (IPv4 and IPv6)."""
    sock = netlink_for(handle, NETLINK_SOCK_DIAG)
    found: list[Subflow] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        body = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), STATES)
        for kind, payload in sock.dump(SOCK_DIAG_BY_FAMILY, body):
            if kind == SOCK_DIAG_BY_FAMILY:
                sub = _subflow(payload)
                if sub is not None:
                    found.append(sub)
    return found

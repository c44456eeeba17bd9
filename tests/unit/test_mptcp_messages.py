"""MPTCP genetlink and sock_diag messages: packing and parsing, without a kernel."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from ecmpd.kernel import mptcp
from ecmpd.kernel.mptcpdiag import (
    INET_DIAG_INFO,
    INET_DIAG_ULP_INFO,
    INET_ULP_INFO_MPTCP,
    INET_ULP_INFO_NAME,
    SUBFLOW_ATTR_FLAGS,
    SUBFLOW_ATTR_ID_LOC,
    SUBFLOW_ATTR_TOKEN_LOC,
    SUBFLOW_FLAG_BKUP_LOC,
    _subflow,
)
from ecmpd.kernel.transport import attr, attr_nested, attr_str, attr_u8, attr_u32
from ecmpd.model import Family


@pytest.mark.parametrize(
    "address", [IPv4Address("10.1.0.2"), IPv6Address("2001:db8:1::2")], ids=["v4", "v6"]
)
def test_an_endpoint_message_parses_back(address: IPv4Address | IPv6Address) -> None:
    flags = mptcp.FLAG_SUBFLOW | mptcp.FLAG_BACKUP
    payload = mptcp._header(mptcp.CMD_GET_ADDR) + mptcp._addr(
        address, ep_id=0xC3, ifindex=101, flags=flags
    )
    ep = mptcp.parse_endpoint(payload)
    assert ep == mptcp.KernelEndpoint(id=0xC3, address=address, ifindex=101, flags=flags)
    assert ep is not None and ep.backup
    assert ep.family == (Family.INET if address.version == 4 else Family.INET6)


def test_an_answer_without_an_address_is_skipped() -> None:
    assert mptcp.parse_endpoint(mptcp._header(mptcp.CMD_GET_ADDR)) is None


def test_ids_and_limits_are_checked_before_anything_is_sent() -> None:
    for bad in (0, 256):
        with pytest.raises(ValueError):
            mptcp._check_id(bad)
    with pytest.raises(ValueError):
        mptcp.set_limits(object(), mptcp.MAX_LIMIT + 1)


def test_free_id_takes_the_lowest_gap_and_says_when_the_block_is_full() -> None:
    assert mptcp.free_id({0xC0, 0xC1, 0xC3}, 0xC0) == 0xC2
    assert mptcp.free_id(set(), 0xC0) == 0xC0
    with pytest.raises(ValueError, match="no free"):
        mptcp.free_id(set(range(0xC0, 256)), 0xC0)


def _diag(ulp_name: bytes, backup: bool) -> bytes:
    src = socket.inet_pton(socket.AF_INET, "10.2.0.2") + bytes(12)
    dst = socket.inet_pton(socket.AF_INET, "198.51.100.1") + bytes(12)
    head = struct.pack(
        "=BBBB2H16s16sI8xIIIII", socket.AF_INET, 1, 0, 0, socket.htons(40000),
        socket.htons(5201), src, dst, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    info = bytearray(232)
    struct.pack_into("=I", info, 68, 12_000)
    struct.pack_into("=QQ", info, 120, 7, 9_000_000)
    mp = (
        attr_u32(SUBFLOW_ATTR_TOKEN_LOC, 0xABCD)
        + attr_u8(SUBFLOW_ATTR_ID_LOC, 0xC1)
        + attr_u32(SUBFLOW_ATTR_FLAGS, SUBFLOW_FLAG_BKUP_LOC if backup else 0)
    )
    ulp = attr_str(INET_ULP_INFO_NAME, ulp_name.decode()) + attr_nested(INET_ULP_INFO_MPTCP, mp)
    return head + attr(INET_DIAG_INFO, bytes(info)) + attr_nested(INET_DIAG_ULP_INFO, ulp)


def test_a_subflow_is_read_from_its_diag_message() -> None:
    sub = _subflow(_diag(b"mptcp", backup=True))
    assert sub is not None
    assert (sub.token, sub.local, sub.remote) == (
        0xABCD,
        IPv4Address("10.2.0.2"),
        IPv4Address("198.51.100.1"),
    )
    assert (sub.local_port, sub.remote_port, sub.local_id) == (40000, 5201, 0xC1)
    assert sub.backup and sub.established
    assert (sub.bytes_acked, sub.bytes_received, sub.rtt_us) == (7, 9_000_000, 12_000)


def test_a_plain_tcp_socket_is_no_subflow() -> None:
    assert _subflow(_diag(b"tls", backup=False)) is None

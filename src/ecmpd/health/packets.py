"""ICMP and ICMPv6 echo messages: build requests, parse replies (pure, no sockets)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ecmpd.model import Family

ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129

# Small and fixed: the payload carries nothing the matching needs (id, sequence and
# source do that), and 16 bytes keep a probe far below any path MTU.
PAYLOAD: Final = b"ecmpd health chk"

_ECHO: Final = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_IPV4_MIN_HEADER: Final = 20


@dataclass(frozen=True, slots=True)
class Echo:
    """The identifying fields of an echo message."""

    ident: int
    sequence: int


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo(
    family: Family, ident: int, sequence: int, payload: bytes = PAYLOAD, *, reply: bool = False
) -> bytes:
    """An echo request (or reply) message, without the IP header."""
    if not (0 <= ident <= 0xFFFF and 0 <= sequence <= 0xFFFF):
        raise ValueError(f"echo id {ident} and sequence {sequence} must be 16-bit")
    if family is Family.INET:
        kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
        unsummed = _ECHO.pack(kind, 0, 0, ident, sequence) + payload
        return _ECHO.pack(kind, 0, checksum(unsummed), ident, sequence) + payload
    # ICMPv6's checksum covers a pseudo-header with both addresses; the kernel fills
    # it in on raw ICMPv6 sockets (RFC 3542 3.1), so it stays zero here.
    kind = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    return _ECHO.pack(kind, 0, 0, ident, sequence) + payload


def parse_echo_reply(family: Family, data: bytes) -> Echo | None:
    """The echo reply in a raw socket's datagram; None for anything else or anything broken."""
    # IPv4 raw sockets deliver the IP header too; IPv6 raw sockets deliver the ICMPv6
    # message alone, its checksum already verified by the kernel.
    if family is Family.INET:
        message = _ipv4_payload(data)
        if message is None or checksum(message) != 0:
            return None
        want = ICMP_ECHO_REPLY
    else:
        message, want = data, ICMPV6_ECHO_REPLY
    if len(message) < _ECHO.size:
        return None
    kind, code, _, ident, sequence = _ECHO.unpack_from(message)
    if kind != want or code != 0:
        return None
    return Echo(ident, sequence)


def _ipv4_payload(data: bytes) -> bytes | None:
    """What follows the IPv4 header (trimmed to the header's total length), or None."""
    if len(data) < _IPV4_MIN_HEADER or data[0] >> 4 != 4:
        return None
    header_len = (data[0] & 0x0F) * 4
    total_len = int.from_bytes(data[2:4], "big")
    if header_len < _IPV4_MIN_HEADER or not header_len <= total_len <= len(data):
        return None
    return data[header_len:total_len]

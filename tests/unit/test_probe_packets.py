"""Echo packets: the Internet checksum, building requests, parsing (and refusing) replies."""

from __future__ import annotations

import asyncio
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecmpd.health.packets import (
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    PAYLOAD,
    Echo,
    build_echo,
    checksum,
    parse_echo_reply,
)
from ecmpd.health.probes import open_prober
from ecmpd.model import Family

V4, V6 = Family.INET, Family.INET6


def ipv4(payload: bytes, *, options: bytes = b"", total: int | None = None) -> bytes:
    """payload behind an IPv4 header, as a raw socket receives it."""
    header_len = 20 + len(options)
    length = header_len + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | header_len // 4,
        0,
        length,
        0,
        0,
        64,
        1,
        0,
        IPv4Address("198.51.100.1").packed,
        IPv4Address("10.1.0.2").packed,
    )
    return header + options + payload


def test_checksum_matches_the_rfc_1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_checksum_pads_an_odd_length_with_a_zero_byte() -> None:
    assert checksum(b"\x12\x34\x56") == checksum(b"\x12\x34\x56\x00")


def test_an_ipv4_echo_request_is_byte_exact() -> None:
    # Summed by hand: 0800 + 1234 + 0001 + 6162 + 6364 = defb, complemented 2104.
    assert build_echo(V4, 0x1234, 1, b"abcd") == bytes.fromhex("080021041234000161626364")


def test_an_ipv4_request_carries_a_valid_checksum_and_our_fields() -> None:
    message = build_echo(V4, 0xBEEF, 0xFFFF)
    assert checksum(message) == 0
    assert message[:2] == bytes([ICMP_ECHO_REQUEST, 0])
    assert message[4:8] == b"\xbe\xef\xff\xff"
    assert message[8:] == PAYLOAD


def test_an_ipv6_request_leaves_the_checksum_to_the_kernel() -> None:
    message = build_echo(V6, 7, 9)
    assert message[:8] == struct.pack("!BBHHH", ICMPV6_ECHO_REQUEST, 0, 0, 7, 9)


@pytest.mark.parametrize(("ident", "sequence"), [(-1, 0), (0x10000, 0), (0, -1), (0, 0x10000)])
def test_ids_and_sequences_must_fit_16_bits(ident: int, sequence: int) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        build_echo(V4, ident, sequence)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_replies_parse_back_to_their_id_and_sequence(ident: int, seq: int, data: bytes) -> None:
    assert parse_echo_reply(V4, ipv4(build_echo(V4, ident, seq, data, reply=True))) == Echo(
        ident, seq
    )
    assert parse_echo_reply(V6, build_echo(V6, ident, seq, data, reply=True)) == Echo(ident, seq)


def test_ip_options_and_bytes_beyond_the_total_length_are_skipped() -> None:
    reply = build_echo(V4, 1, 2, reply=True)
    assert parse_echo_reply(V4, ipv4(reply, options=b"\x01\x01\x01\x00")) == Echo(1, 2)
    assert parse_echo_reply(V4, ipv4(reply) + b"\0\0\0\0") == Echo(1, 2)


def _corrupt(message: bytes) -> bytes:
    return message[:-1] + bytes([message[-1] ^ 0x01])


REPLY_V4 = build_echo(V4, 1, 2, reply=True)


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(ipv4(build_echo(V4, 1, 2)), id="a request"),
        pytest.param(ipv4(_corrupt(REPLY_V4)), id="bad checksum"),
        pytest.param(ipv4(REPLY_V4[:6]), id="truncated icmp"),
        pytest.param(ipv4(REPLY_V4)[:19], id="truncated ip header"),
        pytest.param(b"\x60" + ipv4(REPLY_V4)[1:], id="not ipv4"),
        pytest.param(b"\x44" + ipv4(REPLY_V4)[1:], id="header length below 20"),
        pytest.param(ipv4(REPLY_V4, total=200), id="total length beyond the datagram"),
        pytest.param(ipv4(REPLY_V4[:1] + b"\x01" + REPLY_V4[2:]), id="code not zero"),
    ],
)
def test_anything_but_an_intact_ipv4_echo_reply_is_refused(datagram: bytes) -> None:
    assert parse_echo_reply(V4, datagram) is None


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(build_echo(V6, 1, 2), id="a request"),
        pytest.param(build_echo(V6, 1, 2, reply=True)[:7], id="truncated"),
        pytest.param(bytes([ICMPV6_ECHO_REPLY, 3]) + bytes(6), id="code not zero"),
        pytest.param(ipv4(REPLY_V4), id="an ipv4 datagram"),
    ],
)
def test_anything_but_an_icmpv6_echo_reply_is_refused(message: bytes) -> None:
    assert parse_echo_reply(V6, message) is None


@pytest.mark.parametrize("method", ["ping", "tcp", "tcp:0", "tcp:65536", "udp:53", "ICMP"])
def test_unknown_methods_are_refused_before_any_socket_is_made(method: str) -> None:
    with pytest.raises(ValueError, match="icmp"):
        asyncio.run(open_prober(method, "no-such-dev", None, V4))

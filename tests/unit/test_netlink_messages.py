"""transport.messages: one datagram split into its netlink messages (sock_diag, ctnetlink)."""

from __future__ import annotations

import errno
import struct

import pytest

from ecmpd.kernel import conntrack as ct
from ecmpd.kernel import ctmessages as ctm
from ecmpd.kernel.transport import HEADER, attr, attr_nested, messages, parse_attrs


def message(kind: int, seq: int, payload: bytes) -> bytes:
    """One message, padded to 4 bytes as the kernel sends it."""
    length = HEADER.size + len(payload)
    return HEADER.pack(length, kind, 0, seq, 0) + payload + b"\0" * (-length % 4)


def test_every_message_of_a_datagram_in_order_without_padding() -> None:
    data = message(20, 1, b"abcde") + message(3, 1, struct.pack("=i", 0)) + message(2, 7, b"")
    assert list(messages(data)) == [(20, 1, b"abcde"), (3, 1, b"\0\0\0\0"), (2, 7, b"")]


def test_a_trailing_partial_header_is_ignored() -> None:
    assert list(messages(message(2, 1, b"xy") + b"\0" * 8)) == [(2, 1, b"xy")]


def test_a_length_shorter_than_the_header_raises_the_callers_error() -> None:
    bad = HEADER.pack(4, 2, 0, 1, 0)
    with pytest.raises(OSError) as plain:
        list(messages(bad))
    assert plain.value.errno == errno.EPROTO
    with pytest.raises(ct.ConntrackError):
        list(messages(bad, ct.ConntrackError))


def test_conntrack_attributes_round_trip_through_the_shared_builders() -> None:
    v4_src = attr(ctm.CTA_IP_V4_SRC, bytes([10, 0, 0, 1]))
    assert len(v4_src) == 8 and len(attr(ctm.CTA_PROTO_NUM, b"\x06")) == 8  # padded to 4
    top = parse_attrs(attr_nested(ctm.CTA_TUPLE_IP, v4_src))
    assert parse_attrs(top[ctm.CTA_TUPLE_IP]) == {ctm.CTA_IP_V4_SRC: bytes([10, 0, 0, 1])}

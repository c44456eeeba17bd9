"""conntrack deletes: a flow without its original tuple is refused before any message."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from ecmpd.kernel import conntrack as ct


def test_a_delete_without_a_tuple_is_refused() -> None:
    empty = ct.Flow(
        proto=6,
        orig_src=IPv4Address("10.0.0.1"),
        orig_dst=IPv4Address("10.0.0.2"),
        sport=1,
        dport=2,
        reply_dst=IPv4Address("10.0.0.1"),
        ct_id=1,
        zone=None,
        orig_tuple=b"",
    )
    with pytest.raises(ValueError):
        ct._delete_message(empty, 1)

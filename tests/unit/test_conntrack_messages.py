"""ctnetlink requests: each names an entry by its tuple (none without one is ever built),
a close never creates an entry, and a dump's entries carry their TCP state."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from ecmpd.kernel import ctmessages as ctm
from ecmpd.kernel.transport import attr, attr_nested, parse_attrs

FLOW = ctm.Flow(
    proto=6,
    orig_src=IPv4Address("10.0.0.1"),
    orig_dst=IPv4Address("10.0.0.2"),
    sport=1,
    dport=2,
    reply_dst=IPv4Address("10.0.0.1"),
    ct_id=7,
    zone=3,
    orig_tuple=b"TUPL",
)


def test_a_delete_without_a_tuple_is_refused() -> None:
    with pytest.raises(ValueError):
        ctm.delete_message(replace(FLOW, orig_tuple=b""), 1)


def test_a_close_updates_the_entry_by_its_tuple_and_never_creates_one() -> None:
    msg = ctm.close_message(FLOW, 5, 10)
    length, msg_type, flags, seq, _pid = ctm.NLMSGHDR.unpack_from(msg)
    assert (length, seq) == (len(msg), 5)
    assert msg_type == (ctm.NFNL_SUBSYS_CTNETLINK << 8) | ctm.IPCTNL_MSG_CT_NEW
    assert flags == ctm.NLM_F_REQUEST | ctm.NLM_F_ACK  # no NLM_F_CREATE: an update only
    top = parse_attrs(msg[ctm.NLMSGHDR.size + ctm.NFGENMSG.size :])
    assert top[ctm.CTA_TUPLE_ORIG] == b"TUPL"
    assert top[ctm.CTA_ZONE] == b"\x00\x03"
    assert top[ctm.CTA_TIMEOUT] == (10).to_bytes(4, "big")
    tcp = parse_attrs(parse_attrs(top[ctm.CTA_PROTOINFO])[ctm.CTA_PROTOINFO_TCP])
    assert tcp[ctm.CTA_PROTOINFO_TCP_STATE] == bytes([ctm.TCP_CONNTRACK_CLOSE])
    assert tcp[ctm.CTA_PROTOINFO_TCP_FLAGS_ORIGINAL] == bytes([ctm.IP_CT_TCP_FLAG_CLOSE_INIT] * 2)
    with pytest.raises(ValueError):
        ctm.close_message(replace(FLOW, orig_tuple=b""), 1, 10)


def test_a_dumped_entry_carries_its_tcp_state() -> None:
    ip = attr_nested(
        ctm.CTA_TUPLE_IP,
        attr(ctm.CTA_IP_V4_SRC, bytes([10, 0, 0, 1]))
        + attr(ctm.CTA_IP_V4_DST, bytes([10, 0, 0, 2])),
    )
    proto = attr_nested(ctm.CTA_TUPLE_PROTO, attr(ctm.CTA_PROTO_NUM, bytes([6])))
    body = ctm.NFGENMSG.pack(2, 0, 0) + b"".join(
        [
            attr_nested(ctm.CTA_TUPLE_ORIG, ip + proto),
            attr_nested(ctm.CTA_TUPLE_REPLY, ip + proto),
            attr(ctm.CTA_ID, (9).to_bytes(4, "big")),
        ]
    )
    state = attr(ctm.CTA_PROTOINFO_TCP_STATE, bytes([3]))
    tcp = attr_nested(ctm.CTA_PROTOINFO, attr_nested(ctm.CTA_PROTOINFO_TCP, state))
    established = ctm.parse_flow(body + tcp)
    assert established is not None and (established.ct_id, established.tcp_state) == (9, 3)
    bare = ctm.parse_flow(body)
    assert bare is not None and bare.tcp_state is None

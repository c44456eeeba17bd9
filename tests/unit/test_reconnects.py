"""Following the reset clients' reconnects: which SYNs left unanswered are kicked, when."""

from __future__ import annotations

from ipaddress import IPv4Address

from ecmpd.kernel.ctmessages import IPS_DST_NAT, IPS_SEEN_REPLY, Flow
from ecmpd.reconnects import KICK_AFTER_S, POLL_S, SynWatch
from tests.unit.fixtures import LAN, ct_flow

OTHER = IPv4Address("10.200.1.2")
MASK, DEAD, HEALTHY = 0xFF000000, 0x01000000, 0x02000000


def syn(
    ct_id: int = 1,
    status: int = 0,
    mark: int = HEALTHY,
    proto: int = 6,
    orig_src: IPv4Address = LAN,
) -> Flow:
    """A followed client's connection still opening, by a healthy uplink."""
    return ct_flow(proto, status, ct_id=ct_id, mark=mark, orig_src=orig_src)


def watch(at: float = 0.0) -> SynWatch:
    return SynWatch(frozenset({LAN}), at, skip=frozenset({DEAD}), mask=MASK)


def looks(w: SynWatch, flows: list[Flow], until: float, start: float = POLL_S) -> list[float]:
    """Looks every POLL_S from start to until, seeing the same flows; when kicks were due."""
    out = []
    t = start
    while t <= until + 1e-9:
        out += [t] * len(w.due(t, flows))
        t = round(t + POLL_S, 6)
    return out


def test_an_unanswered_syn_is_kicked_once_when_it_may_have_waited_kick_after() -> None:
    w = watch()
    kicked = looks(w, [syn()], 2.0)
    # First seen at the first look: taken as old as the resets (the look before).
    assert kicked == [KICK_AFTER_S]


def test_an_entry_first_seen_later_counts_from_the_look_before_it() -> None:
    w = watch()
    assert w.due(0.05, []) == []
    assert w.due(0.10, [syn()]) == []  # it came after the look at 0.05
    assert w.due(0.04 + KICK_AFTER_S, [syn()]) == []
    assert w.due(0.06 + KICK_AFTER_S, [syn()]) == [syn()]
    assert w.due(0.10 + KICK_AFTER_S, [syn()]) == []  # once only


def test_an_answered_or_gone_entry_is_forgotten_and_a_new_one_counts_afresh() -> None:
    w = watch()
    assert w.due(0.05, [syn(1)]) == []
    assert w.due(0.10, [syn(1, status=IPS_SEEN_REPLY)]) == []  # answered
    assert w.due(0.15, [syn(1)]) == []  # as if new: seen since the look at 0.10
    assert w.due(0.09 + KICK_AFTER_S, [syn(1)]) == []
    assert w.due(0.11 + KICK_AFTER_S, [syn(1)]) == [syn(1)]
    # The tuple reused by a newer entry (another id): that one is followed too.
    assert w.due(0.30, []) == []
    assert w.due(0.35, [syn(2)]) == []
    assert w.due(0.29 + KICK_AFTER_S, [syn(2)]) == []
    assert w.due(0.31 + KICK_AFTER_S, [syn(2)]) == [syn(2)]


def test_only_the_reset_clients_outgoing_openings_on_other_uplinks_are_kicked() -> None:
    w = watch()
    others = [
        syn(2, orig_src=OTHER),  # not a client whose connection was reset
        syn(3, mark=DEAD),  # on the dead uplink: the ending itself moved those
        syn(4, status=IPS_DST_NAT),  # a port-forwarded connection from outside
        syn(5, proto=17),  # UDP: nothing to retransmit
        syn(6, status=IPS_SEEN_REPLY),  # answered
    ]
    assert looks(w, others, 2.0) == []
    assert looks(watch(), [syn(7, mark=0)], 2.0) == [KICK_AFTER_S]  # not marked yet: kicked


def test_without_a_mask_no_mark_is_skipped() -> None:
    w = SynWatch(frozenset({LAN}), 0.0, skip=frozenset({DEAD}))
    assert looks(w, [syn(mark=DEAD)], 1.0) == [KICK_AFTER_S]

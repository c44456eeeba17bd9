"""The reconnects an ending causes: a SYN lost on the way out is retried at once.

The clients whose connections ecmpd ends (`on_failure: reset`) reconnect at once, all
together, by the remaining uplinks, whose upload queues are often full just then (the
dead uplink's traffic moved there too). A SYN dropped there is retried by the client's
own timer a second later (Linux's initial RTO; other stacks 1-3 s), so one lost SYN
made a reconnect take 1 s instead of a round trip.

For FOLLOW_S after an ending, ecmpd looks every POLL_S at those clients' connections
still opening (conntrack: the SYN went out, no answer seen) and kicks each one that has
waited KICK_AFTER_S, once: the unacceptable pure ACK that also moves a dead uplink's
opening connections (kernel/resets.py). A Linux client in SYN-SENT answers it with a
RST and, if it has not retransmitted its SYN yet, retransmits it at once
(tcp_rcv_synsent_state_process); a stack that does not just sends the RST, which the
table drops, and keeps its own timer: nothing is lost. One kick per connection: after
a retransmission Linux no longer hurries. A SYN answered late (a long round trip) is
sent twice, which costs one packet.

Only the LAN hosts whose connections the ending reset are followed: they are the ones
ecmpd made reconnect. The router's own sockets are not kicked (their RST would leave by
an uplink; the table drops only forwarded ones).

Pure: SynWatch decides from what each look saw; ending.follow_reconnects looks and
kicks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from ecmpd.kernel.ctmessages import Flow
from ecmpd.kernel.resets import lan_side, opening

IPAddress = IPv4Address | IPv6Address

FOLLOW_S = 2.0  # an application reconnecting up to ~1 s late still has its SYN followed
POLL_S = 0.05  # a look is a dump of the unanswered entries only (kernel-filtered)
# A SYN's answer comes within a round trip: tens of ms on a terrestrial uplink, its
# upload queue full (the lab's hold 50 ms). This long without one it was most likely
# dropped. Kicked 0.1-0.15 s after it left, the retransmission is ~0.85 s ahead of the
# client's own; on a slower path (LTE under load, satellite) a SYN is sometimes sent
# twice, which costs one packet.
KICK_AFTER_S = 0.15

Key = tuple[int, bytes]  # an entry's id and original tuple (a reused tuple is another)


@dataclass
class SynWatch:
    """The followed clients' opening connections: when each was first seen, which were kicked."""

    clients: frozenset[IPAddress]
    last: float  # the last look; at first, when the resets went out (no reconnect before)
    skip: frozenset[int] = frozenset()  # mark values being ended (moved by the ending)
    mask: int = 0
    seen: dict[Key, float] = field(default_factory=dict)  # the look before each was seen
    kicked: set[Key] = field(default_factory=set)

    def due(self, now: float, flows: Iterable[Flow]) -> list[Flow]:
        """Of the entries a look saw at `now`, the followed clients' connections that may
        have been opening for KICK_AFTER_S and were not kicked yet.

        An entry first seen now was not there (or not opening) at the last look: it is
        taken to be as old as that, so it is kicked when it has waited
        KICK_AFTER_S - POLL_S to KICK_AFTER_S."""
        current: dict[Key, float] = {}
        out = []
        for flow in flows:
            ends = lan_side(flow)
            if (
                ends is None
                or not opening(flow)
                or ends.lan not in self.clients
                or (self.mask and flow.mark & self.mask in self.skip)
            ):
                continue
            key = (flow.ct_id, flow.orig_tuple)
            first = current[key] = self.seen.get(key, self.last)
            if key not in self.kicked and now - first >= KICK_AFTER_S:
                self.kicked.add(key)
                out.append(flow)
        self.seen, self.last = current, now  # an answered or gone entry is forgotten
        return out

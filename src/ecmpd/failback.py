"""Pure: which standing-by uplinks' connections are reset (`failback: reset`), and how.

When a lower tier returns, an uplink that carried (balancer or pin) and now carries
nothing in a family, yet is in service there, has failed back. With `failback: reset`
(the default for metered uplinks) it stays in the connection table's reset set for as
long as it stands by: every TCP packet of one of its old connections from the LAN
side is answered with a reset (connections.py, kernel/resets.py), so clients
reconnect, and the balancer (already switched: the group change comes first) sends
them to the lower tier. `keep` leaves them to end on their own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ecmpd.carrying import Carrying
from ecmpd.config import Config
from ecmpd.config.enums import Failback
from ecmpd.model import Family
from ecmpd.uplinkplan import carries


def failback_ending(
    config: Config, now: Carrying, service: Mapping[Family, Collection[str]]
) -> dict[Family, frozenset[str]]:
    """Per family, the in-service uplinks with `failback: reset` that carry nothing there."""
    out: dict[Family, frozenset[str]] = {}
    for family, in_service in service.items():
        carrying = now.balanced.get(family, frozenset()) | now.pinned
        out[family] = frozenset(
            u.name
            for u in config.uplinks
            if u.failback_mode() is Failback.RESET
            and carries(u, family)
            and u.name in in_service
            and u.name not in carrying
        )
    return out

"""The lab router's balancer groups as the kernel holds them, by uplink name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.config.schema import DEFAULT_BALANCER_TABLE
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.topology import Lab
from ecmpd.lab.wait import wait_until
from ecmpd.model import Family, nexthop_id

GROUP_POLL_S = 0.002


class GroupWatch:
    """Reads the router's balancer group of each family over one netlink socket, opened
    in advance (in the router's namespace) so a read costs one request.

    The lab's config keeps the default balancer table and numbers the uplinks' tables
    from the first one resolve would allocate, in ISP order: the ids follow from those.
    """

    def __init__(self, lab: Lab, families: Iterable[Family] = (Family.INET,)) -> None:
        self.families = tuple(families)
        self.groups = {f: nexthop_id(DEFAULT_BALANCER_TABLE, f) for f in self.families}
        self.names = {
            nexthop_id(FIRST_UPLINK_TABLE + i, f): isp.name
            for f in self.families
            for i, isp in enumerate(lab.isps)
        }
        self.sock = netns.call_in(lab.router, NetlinkSocket.open)

    def members(self, family: Family = Family.INET) -> frozenset[str]:
        """The uplinks in the family's group now (none when there is no group)."""
        group = nl.get_nexthop(self.sock, self.groups[family])
        if group is None or group.members is None:
            return frozenset()
        return frozenset(self.names.get(m, str(m)) for m, _ in group.members)

    def wait(
        self,
        check: Callable[[frozenset[str]], bool],
        timeout: float,
        what: str,
        family: Family = Family.INET,
        step: float = GROUP_POLL_S,
    ) -> float:
        """Polls until check(members) holds; returns the monotonic time it did."""
        return wait_until(lambda: check(self.members(family)), timeout, what, step)

    def close(self) -> None:
        """Closes the socket."""
        self.sock.close()

    def __enter__(self) -> GroupWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_members(lab: Lab, family: Family = Family.INET) -> frozenset[str]:
    """The uplinks in the router's balancer group of a family, read once."""
    with GroupWatch(lab, (family,)) as watch:
        return watch.members(family)

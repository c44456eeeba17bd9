"""A lab router's balancer groups as the kernel holds them, by uplink name: read on
demand (GroupWatch) or polled in a thread with their history (GroupHistory). The router
is the lab's, or the scale-out lab's core (its uplinks are the edges)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ecmpd.config.resolve import FIRST_UPLINK_TABLE
from ecmpd.config.schema import DEFAULT_BALANCER_TABLE
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.wait import wait_until
from ecmpd.model import Family, nexthop_id

GROUP_POLL_S = 0.002


class Balancing(Protocol):
    """A lab whose router balances: its namespace, and its uplinks in config order."""

    @property
    def router(self) -> str: ...

    def uplink_names(self) -> list[str]: ...


class GroupWatch:
    """Reads the router's balancer group of each family over one netlink socket, opened
    in advance (in the router's namespace) so a read costs one request.

    The labs' configs keep the default balancer table and number the uplinks' tables
    from the first one resolve would allocate, in config order: the ids follow from those.
    """

    def __init__(self, lab: Balancing, families: Iterable[Family] = (Family.INET,)) -> None:
        self.families = tuple(families)
        self.groups = {f: nexthop_id(DEFAULT_BALANCER_TABLE, f) for f in self.families}
        self.names = {
            nexthop_id(FIRST_UPLINK_TABLE + i, f): name
            for f in self.families
            for i, name in enumerate(lab.uplink_names())
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

    def bracket(
        self,
        check: Callable[[frozenset[str]], bool],
        timeout: float,
        what: str,
        family: Family = Family.INET,
    ) -> tuple[float, float]:
        """Polls until check(members) holds; returns (a moment it still did not, the moment
        it was seen to): the change lies between, however late a loaded poll sees it."""
        before = time.monotonic()

        def seen() -> bool:
            nonlocal before
            at = time.monotonic()
            if check(self.members(family)):
                return True
            before = at  # read after this moment, and the change had not happened yet
            return False

        return before, wait_until(seen, timeout, what, GROUP_POLL_S)

    def close(self) -> None:
        """Closes the socket."""
        self.sock.close()

    def __enter__(self) -> GroupWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def group_members(lab: Balancing, family: Family = Family.INET) -> frozenset[str]:
    """The uplinks in the router's balancer group of a family, read once."""
    with GroupWatch(lab, (family,)) as watch:
        return watch.members(family)


class GroupHistory:
    """The router's balancer groups (IPv4 and IPv6) polled often in a thread: what they
    hold now and when they changed."""

    def __init__(
        self, lab: Balancing, families: tuple[Family, ...] = (Family.INET,), poll_s: float = 0.005
    ) -> None:
        self.watch = GroupWatch(lab, families)
        self.poll_s = poll_s
        self.now: dict[Family, frozenset[str]] = dict.fromkeys(families, frozenset())
        self.history: dict[Family, list[tuple[float, frozenset[str]]]] = {f: [] for f in families}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def current(self) -> frozenset[str]:
        """The IPv4 group's uplinks at the last poll."""
        return self.now[Family.INET]

    @property
    def changes(self) -> list[tuple[float, frozenset[str]]]:
        """When the IPv4 group changed, and to what."""
        return self.history[Family.INET]

    def members(self, family: Family = Family.INET) -> frozenset[str]:
        """The uplinks in the family's group now (a fresh read; any thread)."""
        return self.watch.members(family)

    def __enter__(self) -> GroupHistory:
        self._poll()
        self._thread = threading.Thread(target=self._run, name="group-watch", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        for family in self.watch.families:
            members = self.members(family)
            if members != self.now[family] or not self.history[family]:
                self.history[family].append((time.monotonic(), members))
                self.now[family] = members

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                self._poll()
        except BaseException as exc:  # reported by check(), in the reader's thread
            self.error = exc

    def check(self) -> None:
        """Raises RuntimeError if polling failed."""
        if self.error is not None:
            raise RuntimeError(f"reading the nexthop group failed: {self.error!r}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.watch.close()

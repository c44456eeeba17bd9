"""What follows an uplink leaving service: its established connections end (`on_failure`).

Pure choices (which uplinks and families end, with which mark and addresses) beside the
one async step the daemon starts at its service-change seam: begin on the kernel thread
(probes, aborted local sockets), a grace for the clients' answers, finish (the
conntrack entries go), then a while following the reset clients' reconnects
(ecmpd.reconnects: a SYN left unanswered is kicked). A drain is graceful and ends
nothing; `on_failure: wait` keeps the connections (and their entries) for the uplink's
return.

EndingWatch says which uplinks' connections a reconcile began to end: those that
entered the table's reset set with it (out by health, and not drained: a failure, an
undrain while down, a reload that made a down uplink `reset`), and those a reload
removed (its mark rule and table go with it, so its connections could not go on); and
the pins' resets new in the kernel's table (those connections alone end).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from ipaddress import ip_network
from typing import Any

from ecmpd.config import Config
from ecmpd.connections import (
    ending_uplinks,
    mark_slots,
    mark_space,
    mark_values,
    removed,
    with_resets,
)
from ecmpd.desired import resolve_uplink
from ecmpd.facts import KernelFacts
from ecmpd.kernel.resets import (
    GRACE,
    Begun,
    Ending,
    begin_ending,
    finish_ending,
    kick,
    lan_side,
    unanswered,
)
from ecmpd.model import DesiredState, Family, PinReset
from ecmpd.reconnects import FOLLOW_S, POLL_S, SynWatch
from ecmpd.uplinkplan import FAMILIES, carries

log = logging.getLogger("ecmpd.daemon")
KernelCall = Callable[..., Awaitable[Any]]


def ending_now(
    config: Config, in_service: Mapping[Family, Mapping[str, bool]], drained: Collection[str]
) -> dict[Family, set[str]]:
    """Per family, the uplinks whose connections end while they are out of service:
    out by health (not drained) and `on_failure: reset` (desired_state's `ending`)."""
    return {
        family: ending_uplinks(config, {n for n, ok in service.items() if not ok} - set(drained))
        for family, service in in_service.items()
    }


class EndingWatch:
    """The uplinks whose connections the last reconcile ends, and a reload's removed ones."""

    def __init__(self) -> None:
        self.applied: dict[Family, frozenset[str]] = {}  # in the reset sets
        self.retiring: list[tuple[str, Ending]] = []  # removed by the reload under way
        self.pins: dict[Family, frozenset[PinReset]] = {}  # the table's pin resets

    def reload(self, old: Config, new: Config, facts: KernelFacts) -> None:
        """Before a reload's reconcile: the uplinks it removes whose connections end
        (`on_failure: reset`), with their marks from the old config (facts' slots)."""
        gone = ending_uplinks(old, removed(old, new))
        families = {n: [f for f in FAMILIES if carries(old.uplink(n), f)] for n in gone}
        self.retiring = endings_for(old, facts, families)

    def desired(self, state: DesiredState) -> DesiredState:
        """The state with the removed uplinks' marks in its reset sets (this reconcile)."""
        values: dict[Family, list[int]] = {}
        for _, ending in self.retiring:
            for family in ending.families:
                values.setdefault(family, []).append(ending.mark)
        return with_resets(state, values)

    def after(
        self,
        config: Config,
        in_service: Mapping[Family, Mapping[str, bool]],
        drained: Collection[str],
        facts: KernelFacts,
        resetting: Mapping[Family, Collection[int]],
        pins: Mapping[Family, Collection[PinReset]],
    ) -> list[tuple[str, Ending]]:
        """After a reconcile: (uplink, Ending) of each uplink whose connections end now.

        `resetting`: the mark values the kernel's table resets now, per family. An uplink
        family out by health but not in them yet (its verdict came after the reconcile
        computed its state: each family is probed on its own) ends with the reconcile
        that puts it there. Probed before, its clients' answers would pass unreset.
        `pins`: the pins' resets the kernel's table holds now, per family (none without
        the table); those new since the last call end, limited to the pin's connections.
        """
        values = mark_values(config, mark_slots(config, facts.mark_slots))
        now = {
            family: {n for n in names if values[n] in resetting.get(family, ())}
            for family, names in ending_now(config, in_service, drained).items()
        }
        fresh: dict[str, list[Family]] = {}
        for family, names in now.items():
            for name in sorted(names - self.applied.get(family, frozenset())):
                fresh.setdefault(name, []).append(family)
        self.applied = {family: frozenset(names) for family, names in now.items()}
        out, self.retiring = endings_for(config, facts, fresh) + self.retiring, []
        return out + self._pin_endings(config, values, pins)

    def _pin_endings(
        self,
        config: Config,
        values: Mapping[str, int],
        pins: Mapping[Family, Collection[PinReset]],
    ) -> list[tuple[str, Ending]]:
        """The pins' connections the table began to reset with this reconcile, per uplink."""
        now = {family: frozenset(held) for family, held in pins.items()}
        fresh: dict[int, dict[Family, list[PinReset]]] = {}
        for family, held in now.items():
            for pin in held - self.pins.get(family, frozenset()):
                fresh.setdefault(pin.mark, {}).setdefault(family, []).append(pin)
        self.pins = now
        names = {value: name for name, value in values.items()}
        space = mark_space(config)
        out = []
        for mark, by_family in sorted(fresh.items()):
            # Sorted within each family (IPv4 and IPv6 networks do not compare).
            only = tuple(p for family in sorted(by_family) for p in sorted(by_family[family]))
            ending = Ending(mark, space.mask, space.probe, tuple(sorted(by_family)), only=only)
            out.append((names.get(mark, f"{mark:#x}"), ending))
        return out


def endings_for(
    config: Config, facts: KernelFacts, families: Mapping[str, Collection[Family]]
) -> list[tuple[str, Ending]]:
    """(uplink, Ending) for each uplink whose connections end in these families: its
    mark, and its own addresses there (the router's sockets from them are aborted)."""
    space = mark_space(config)
    values = mark_values(config, mark_slots(config, facts.mark_slots))
    out = []
    for name in sorted(families):
        uplink = config.uplink(name)
        wanted = list(families[name])
        sources, on_link = [], []
        for family in wanted:
            plan = resolve_uplink(uplink, facts, False, family)
            if plan.source is not None:
                sources.append(plan.source.ip)
            # The link's own prefixes and its gateway (a point-to-point peer is in none):
            # sockets to a neighbour there stay (a BGP session to the next router).
            iface = facts.interfaces.get(uplink.interface)
            on_link += iface.networks(family) if iface is not None else []
            if plan.gateway is not None:
                on_link.append(ip_network(plan.gateway))
        ending = Ending(
            mark=values[name],
            mask=space.mask,
            probe_mark=space.probe,
            families=tuple(wanted),
            sources=tuple(sources),
            on_link=tuple(dict.fromkeys(on_link)),
        )
        out.append((name, ending))
    return out


async def end_all(call: KernelCall, wanted: list[tuple[str, Ending]], follow: bool = False) -> None:
    """Ends the connections of each Ending (begin all, one grace, finish all); logs each.
    With `follow`, then follows their clients' reconnects for a while (ecmpd.reconnects)."""
    started, since = time.perf_counter(), time.monotonic()
    begun = []
    for name, ending in wanted:
        try:
            first = await call(begin_ending, ending)
        except OSError as exc:
            log.warning("connections.reset_failed", extra={"uplink": name, "error": str(exc)})
            continue
        begun.append((name, ending, first, time.perf_counter() - started))
    if any(b.probed for _, _, b, _ in begun):
        await asyncio.sleep(GRACE)
    for name, ending, first, probed_at in begun:
        try:
            ended = await call(finish_ending, first)
        except OSError as exc:
            log.warning("connections.reset_failed", extra={"uplink": name, "error": str(exc)})
            continue
        log.info(
            "connections.reset",
            extra={
                "uplink": name,
                "probed": ended.probed,
                "opening": ended.kicked,
                "pins": len(ending.only),  # 0: all of the uplink's connections
                "entries": ended.deleted,  # deleted at once (UDP, ICMP, still opening)
                "closed": ended.closed,  # the probed TCP connections' entries, closed
                "sockets": ended.sockets,
                "unsent": ended.unsent,  # probes the raw sockets could not send
                "probes_ms": round(probed_at * 1000, 1),  # the probes were out by then
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
    if follow and begun:
        await follow_reconnects(call, [(e, b) for _, e, b, _ in begun], since)


async def follow_reconnects(
    call: KernelCall,
    begun: list[tuple[Ending, Begun]],
    since: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """For FOLLOW_S, kicks the reset clients' connections whose SYN waits too long for an
    answer (ecmpd.reconnects); logs and returns how many were kicked. `since`: (clock)
    when the resets began to go out."""
    clients = {
        ends.lan
        for ending, first in begun
        for ends in map(lan_side, first.flows)
        if ends is not None and ends.lan not in ending.sources
    }
    if not clients:
        return 0
    families = sorted({f for ending, _ in begun for f in ending.families})
    watch = SynWatch(
        frozenset(clients),
        since,
        skip=frozenset(ending.mark for ending, _ in begun),
        mask=begun[0][0].mask,
    )
    probe_mark = begun[0][0].probe_mark
    kicked = sent = looks = 0
    until = since + FOLLOW_S
    while clock() < until:
        try:
            flows = await call(unanswered, families)
            due = watch.due(clock(), flows)  # the time the look read them
            looks += 1
            if due:
                kicked += len(due)
                sent += await call(kick, due, probe_mark)
        except OSError as exc:
            log.warning("connections.follow_failed", extra={"error": str(exc)})
            return kicked
        await sleep(POLL_S)
    log.info(
        "connections.reconnects",
        extra={"clients": len(clients), "looks": looks, "kicked": kicked, "unsent": kicked - sent},
    )
    return kicked

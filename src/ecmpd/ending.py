"""What follows an uplink leaving service: its established connections end (`on_failure`).

Pure choices (which uplinks and families end, with which mark and addresses) beside the
one async step the daemon awaits at its service-change seam: begin on the kernel thread
(probes, aborted local sockets), a grace for the clients' answers, finish (the
conntrack entries go). A drain is graceful and ends nothing; `on_failure: wait` keeps
the connections (and their entries) for the uplink's return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from ipaddress import ip_network
from typing import Any

from ecmpd.config import Config
from ecmpd.connections import ending_uplinks, mark_slots, mark_space, mark_values
from ecmpd.desired import resolve_uplink
from ecmpd.facts import KernelFacts
from ecmpd.health.service import ServiceChange
from ecmpd.kernel.resets import GRACE, Ending, begin_ending, finish_ending
from ecmpd.model import Family

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


def endings(
    config: Config,
    changes: Collection[ServiceChange],
    drained: Collection[str],
    facts: KernelFacts,
) -> list[tuple[str, Ending]]:
    """(uplink, Ending) per uplink whose connections end with this reconcile: it left
    service in some families, was not drained, and says `on_failure: reset`."""
    left: dict[str, list[Family]] = {}
    for change in changes:
        if not change.in_service and change.uplink not in drained:
            left.setdefault(change.uplink, []).append(change.family)
    ending = ending_uplinks(config, left)
    return endings_for(config, facts, {n: f for n, f in left.items() if n in ending})


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


async def end_all(call: KernelCall, wanted: list[tuple[str, Ending]]) -> None:
    """Ends the connections of each Ending (begin all, one grace, finish all); logs each."""
    started = time.perf_counter()
    begun = []
    for name, ending in wanted:
        try:
            begun.append((name, await call(begin_ending, ending)))
        except OSError as exc:
            log.warning("connections.reset_failed", extra={"uplink": name, "error": str(exc)})
    if any(b.probed for _, b in begun):
        await asyncio.sleep(GRACE)
    for name, first in begun:
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
                "entries": ended.deleted,
                "sockets": ended.sockets,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

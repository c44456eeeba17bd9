"""Pure: which uplinks left or rejoined service, per family, between two reconciles.

The one seam for the side effects of an uplink (family) leaving or rejoining service:
the daemon computes `service_changes(before, after)` from the service it last applied
and the service it just applied, and hands the list to one method
(`Daemon._on_service_changes`). Router mode forgets a departed uplink's NAT bindings
there today; resetting a failed uplink's connections and failing back after a tier
returns belong there too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ecmpd.model import Family

# (uplink name, family) -> in service (healthy, not held down, not drained)
Service = Mapping[tuple[str, Family], bool]


@dataclass(frozen=True)
class ServiceChange:
    """An uplink left (`in_service` False) or rejoined (True) service in one family."""

    uplink: str
    family: Family
    in_service: bool


def service_changes(before: Service, after: Service) -> list[ServiceChange]:
    """What changed from `before` to `after`, in `after`'s order.

    An uplink new in `after` (a first reconcile, a reload) that is out of service has
    left it (nothing of it may still carry traffic); one that is in service has not
    changed. One gone from `after` (a reload removed it) changes nothing here: its
    objects are deleted with it.
    """
    return [
        ServiceChange(name, family, now)
        for (name, family), now in after.items()
        if before.get((name, family), True) != now
    ]

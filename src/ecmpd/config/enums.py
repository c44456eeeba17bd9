"""The config's named choices."""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    """host: this machine's own traffic only; router: it also forwards (and NATs) a LAN's."""

    HOST = "host"
    ROUTER = "router"


class WhenAllDown(enum.StrEnum):
    """What the balanced route becomes when every uplink is down."""

    KEEP = "keep"  # leave the last members in place: maybe the checks are what failed
    MAIN = "main"  # withdraw it, so balanced traffic falls through to the main table
    UNREACHABLE = "unreachable"  # fail fast rather than leak out by another path


class RuleActionName(enum.StrEnum):
    """What a user rule does with matching traffic."""

    BYPASS = "bypass"  # main table, ignoring its default route
    PIN = "pin"  # one uplink's table
    MAIN = "main"  # main table as it is
    BALANCE = "balance"  # the balancer table


class Failback(enum.StrEnum):
    """What happens to a backup uplink's established connections when a lower tier returns."""

    KEEP = "keep"  # they stay until they end; only new connections go to the lower tier
    RESET = "reset"  # reset towards the client after the switch, so it reconnects there


class OnFailure(enum.StrEnum):
    """What happens to an uplink's established connections when it leaves service."""

    RESET = "reset"  # end them at once, so applications reconnect by a healthy uplink
    WAIT = "wait"  # keep them on the uplink: they resume if it comes back in time

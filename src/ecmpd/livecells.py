"""The live view's cells of one uplink, read from its status entry.

Each family's state (`family_views`), the RTT and loss shown (`health_figures`), its
place in the failover order (tier, role, bytes moved) and its Multipath TCP figures
(connections, subflows, backup). Pure; live.py draws them, `ecmpd watch` and the lab
demo fill them from a daemon's status, `ecmpd status` prints the same MPTCP text.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from ecmpd.status import MptcpStatus, UplinkStatus

# The status document's family keys, in the order shown, and their short labels.
FAMILY_LABELS = {"ipv4": "v4", "ipv6": "v6"}
# States that explain a family being out of its group; out in any other is marked.
OUT_OF_GROUP_STATES = frozenset({"down", "drained"})


@dataclass(frozen=True)
class FamilyView:
    """One address family of an uplink: the daemon tracks health per family."""

    family: str  # ipv4, ipv6 (the status document's keys)
    state: str  # up, down, unknown, drained
    in_balancer: bool

    @property
    def out(self) -> bool:
        """Out of its group although its state does not say why (e.g. not applied yet)."""
        return not self.in_balancer and self.state not in OUT_OF_GROUP_STATES


def health_figures(uplink: UplinkStatus) -> tuple[float | None, float | None]:
    """(rtt ms, loss) of a status entry: the best target's average RTT, the worst loss.

    The RTT is that of the families not down: a down family's figures are its window's
    past answers, while the other family's are current.
    """
    timed = [t for f in uplink.families.values() if f.state != "down" for t in f.targets]
    rtts = [t.rtt_avg_ms for t in timed if t.rtt_avg_ms is not None]
    losses = [t.loss for t in uplink.targets]
    return (min(rtts) if rtts else None), (max(losses) if losses else None)


def family_views(uplink: UplinkStatus) -> tuple[FamilyView, ...]:
    """Each family of a status entry, IPv4 first."""
    order = [k for k in FAMILY_LABELS if k in uplink.families] + sorted(
        k for k in uplink.families if k not in FAMILY_LABELS
    )
    return tuple(
        FamilyView(
            family=key,
            state=uplink.families[key].state.value,
            in_balancer=uplink.families[key].in_balancer,
        )
        for key in order
    )


@dataclass(frozen=True)
class OrderCell:
    """An uplink's place in the failover order: its tier, role and bytes moved each way."""

    tier: int = 1
    role: str | None = None
    bytes_out: int | None = None
    bytes_in: int | None = None


def tier_text(u: OrderCell) -> Text:
    """`2 standby`: a backup waiting; carrying in bold."""
    style = {"carrying": "bold", "standby": "cyan", "down": "red", "drained": "blue"}
    return Text(f"{u.tier} {u.role or ''}".strip(), style=style.get(u.role or "", "white"))


def volume_text(u: OrderCell) -> str:
    """`1.2G / 340M`: bytes sent and received, in decimal units."""

    def short(n: int | None) -> str:
        if n is None:
            return "-"
        for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
            if n >= size:
                return f"{n / size:.1f}{unit}"
        return str(n)

    return f"{short(u.bytes_out)} / {short(u.bytes_in)}"


def order_cell(u: UplinkStatus | None) -> OrderCell:
    """An uplink's OrderCell from its status (the defaults without one)."""
    if u is None:
        return OrderCell()
    role = u.role.value if u.role is not None else None
    return OrderCell(u.tier, role, u.bytes_out, u.bytes_in)


def mptcp_text(m: MptcpStatus | None) -> str:
    """Connections and subflows over the uplink, and whether its endpoints are backup."""
    if m is None:
        return "off"
    if not m.endpoints:
        return f"no endpoint, {m.subflows} subflows"
    backup = " (backup)" if m.backup else ""
    return f"{m.connections} conn, {m.subflows} subflows{backup}"


def mptcp_cell(m: MptcpStatus | None) -> Text:
    """mptcp_text in the live view's colours: backup cyan, no endpoint dim."""
    style = "dim" if m is None or not m.endpoints else "cyan" if m.backup else "white"
    return Text(mptcp_text(m), style=style)

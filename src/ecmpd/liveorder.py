"""The live view's failover-order cells: an uplink's tier, role and bytes moved."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from ecmpd.status import UplinkStatus


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
